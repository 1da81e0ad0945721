"""``torch.compile`` helpers: :func:`eager` and :func:`unwrap_compiled`.

:func:`eager` is ``torch.compiler.disable`` without importing torch's compiler stack at import time.

Decorating with ``torch.compiler.disable`` imports ``torch._dynamo`` (about 1.5x the cost of ``import torch`` itself).
:func:`eager` defers that: while ``torch._dynamo`` has never been imported nothing can be compiling, so the function
runs as is; once it is loaded (a ``torch.compile`` happened), calls go through the disabled wrapper, made once.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

__all__ = ["eager", "unwrap_compiled"]

F = TypeVar("F", bound=Callable[..., Any])


def eager(fn: F) -> F:
    """Like ``@torch.compiler.disable``: the function always runs eagerly, also inside a compiled caller."""
    disabled: list[Callable[..., Any]] = []

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if "torch._dynamo" not in sys.modules:
            return fn(*args, **kwargs)
        if not disabled:
            import torch

            disabled.append(torch.compiler.disable(fn))  # type: ignore[no-untyped-call]
        return disabled[0](*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def unwrap_compiled(module: nn.Module) -> nn.Module:
    """The original module of a ``torch.compile``'d one (``OptimizedModule._orig_mod``); others unchanged.

    Caches are applied to the original: the compiled wrapper calls through it, so its patched forward runs (the
    runtime itself always runs eagerly)."""
    original = getattr(module, "_orig_mod", None)
    while isinstance(original, nn.Module):
        module = original
        original = getattr(module, "_orig_mod", None)
    return module
