"""The hook registry on its own: stack middlewares on any ``nn.Module``'s forward, then take one out.

A middleware is ``fn(call, call_next) -> result`` (Starlette's ``dispatch(request, call_next)`` shape). The
first one registered is the outermost: it sees the call first and the result last. ``ditcache.core.ForwardHook`` is
the familiar pre/post hook pair, as a middleware on the same stack. Caches are middlewares too: ditcache's
cache runtime is registered on the transformer under the name ``"ditcache.cache"``.

Run: ``python examples/middleware_stack.py``
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

import ditcache
from ditcache.core.hooks import CallNext

trace: list[str] = []


# --8<-- [start:middlewares]
def timing(call: ditcache.core.ForwardCall, call_next: CallNext) -> Any:
    """Outer middleware: time the rest of the stack and the forward."""
    trace.append("timing: before")
    start = time.perf_counter()
    out = call_next(call)
    trace.append(f"timing: after ({(time.perf_counter() - start) * 1e6:.0f} us)")
    return out


class ScaleInput:
    """Middle middleware: replace the input before passing the call on."""

    def __init__(self, factor: float) -> None:
        self.factor = factor

    def __call__(self, call: ditcache.core.ForwardCall, call_next: CallNext) -> Any:
        trace.append(f"scale x{self.factor}: before")
        (x,) = call.args
        out = call_next(call.replace(args=(x * self.factor,)))
        trace.append(f"scale x{self.factor}: after")
        return out

    def same_settings(self, other: object) -> bool:  # the same settings make re-registration a no-op
        return isinstance(other, ScaleInput) and other.factor == self.factor


class ClampOutput(ditcache.core.ForwardHook):
    """Inner hook: a pre-forward / post-forward pair."""

    def pre_forward(
        self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        trace.append("clamp: pre_forward")
        return args, kwargs

    def post_forward(self, module: nn.Module, output: Any) -> Any:
        trace.append("clamp: post_forward")
        return output.clamp(-1.0, 1.0)


# --8<-- [end:middlewares]


def main() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(4, 4)
    x = torch.randn(3, 4)
    with torch.no_grad():
        plain = layer(x)

        # --8<-- [start:stack]
        registry = ditcache.core.HookRegistry.get_or_create(layer)
        registry.register("timing", timing)  # outermost
        scale = registry.register("scale", ScaleInput(2.0))
        registry.register("clamp", ClampOutput())  # innermost, next to the module's own forward
        print("stack, outermost first:", registry.names())

        trace.clear()
        out = layer(x)  # every call of the module now runs through the stack
        print("\n".join(trace))
        assert trace[:4] == [
            "timing: before",
            "scale x2.0: before",
            "clamp: pre_forward",
            "clamp: post_forward",
        ]
        assert trace[4] == "scale x2.0: after" and trace[5].startswith("timing: after")
        assert torch.equal(out, layer.__class__.forward(layer, x * 2.0).clamp(-1.0, 1.0))

        # The same settings (same_settings) under a taken name: a no-op; its handle removes nothing.
        again = registry.register("scale", ScaleInput(2.0))
        again.remove()
        assert registry.names() == ["timing", "scale", "clamp"]

        # Remove the middle one: the others keep working, in order.
        scale.remove()
        trace.clear()
        out = layer(x)
        assert registry.names() == ["timing", "clamp"]
        assert [line.split(" (")[0] for line in trace] == [
            "timing: before",
            "clamp: pre_forward",
            "clamp: post_forward",
            "timing: after",
        ]
        assert torch.equal(out, plain.clamp(-1.0, 1.0))
        print("after removing 'scale':", registry.names())

        # Remove the rest: the module is exactly as before (no instance forward, no registry attribute).
        registry.clear()
        assert "forward" not in layer.__dict__ and ditcache.core.HookRegistry.get(layer) is None
        assert torch.equal(layer(x), plain)
        # --8<-- [end:stack]
    print("OK: middlewares ran in order, the middle one was removed, and the module was restored exactly")


if __name__ == "__main__":
    main()
