"""CFG-branch identity: which cond/uncond/extra call a transformer forward belongs to.

Cache state is kept per branch. The branch of a call is, in order of precedence:

1. the name set by :func:`cfg_branch` around the call (``with ditcache.cfg_branch("uncond"): model(...)``);
2. the name a diffusers pipeline sets with ``transformer.cache_context("cond" | "uncond")``; the runtime picks it up
   while a cache is applied (diffusers pipelines already wrap their denoiser calls this way);
3. otherwise an automatic identity: the conditioning tensor the caller passed (the prompt embeddings). The cond and
   uncond calls of a pipeline pass different tensors, so their states never mix, whatever the call order. This
   identity costs nothing (no device sync) but relies on the caller reusing the same embedding tensor for every
   step, which pipelines do; a caller that rebuilds it every step gets a fresh branch per step, which is safe (the
   cache computes every step) but gives no speed-up: use :func:`cfg_branch` then.

Never by call parity: parity breaks with three branches, CFG truncation, or CFG-parallel ranks.

A branch also has a *role*, ``"cond"`` or ``"uncond"``: which calibrated curve or polynomial it uses.
:func:`role_of` is the one rule for it; the step clock (:mod:`ditcache.core.clock`) applies it once when a branch
starts a generation and stamps the result on every context as ``ctx.role``, so caches never derive it themselves.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Hashable, Iterator
from typing import Literal

import torch

__all__ = [
    "ROLES",
    "Role",
    "auto_branch",
    "cfg_branch",
    "current_branch",
    "is_auto_branch",
    "named_role",
    "role_of",
]

Role = Literal["cond", "uncond"]
"""The CFG role of a branch: which of a model's calibrated curves (or polynomials) it uses."""

ROLES: tuple[Role, Role] = ("cond", "uncond")
"""Every role, the conditional one first."""

_BRANCH: contextvars.ContextVar[Hashable | None] = contextvars.ContextVar("ditcache_cfg_branch", default=None)


@contextlib.contextmanager
def cfg_branch(name: Hashable) -> Iterator[None]:
    """Mark every cached transformer call inside the block as belonging to branch ``name``."""
    if name is None:
        raise ValueError("name: expected a hashable branch name such as 'cond' or 'uncond', got None")
    hash(name)  # fail early, with Python's own message, on an unhashable name
    if is_auto_branch(name):
        raise ValueError(
            f"name: {name!r} is reserved for automatic branches (the name 'default' and names starting with "
            "'auto:'); a branch given that name would take the role of an unnamed one. Choose another name, such "
            "as 'cond', 'uncond' or 'negative'"
        )
    token = _BRANCH.set(name)
    try:
        yield
    finally:
        _BRANCH.reset(token)


def current_branch() -> Hashable | None:
    """The branch set by the innermost :func:`cfg_branch`, or None."""
    return _BRANCH.get()


def auto_branch(condition: torch.Tensor | None) -> Hashable:
    """The automatic branch identity of a call from its raw conditioning tensor."""
    if condition is None:
        return "default"
    shape = "x".join(str(d) for d in condition.shape)
    return f"auto:{condition.device}:{condition.data_ptr():x}:{shape}"


def is_auto_branch(branch: Hashable) -> bool:
    """Whether ``branch`` is an identity nobody named (from :func:`auto_branch`), as opposed to a given name."""
    return branch == "default" or (isinstance(branch, str) and branch.startswith("auto:"))


def named_role(branch: Hashable) -> Role | None:
    """The role a branch's *name* gives, or None for an automatic branch (its name says nothing).

    Names starting with ``uncond`` or ``negative`` (case-insensitive) are ``"uncond"``; every other name (any
    string, number or tuple someone chose) is ``"cond"``.
    """
    if is_auto_branch(branch):
        return None
    if isinstance(branch, str) and branch.lower().startswith(("uncond", "negative")):
        return "uncond"
    return "cond"


def role_of(branch: Hashable, position: int = 0) -> Role:
    """The CFG role of ``branch``: the only rule for it in ditcache.

    A named branch takes the role of its name (:func:`named_role`). An automatic branch takes it from
    ``position``, its place among the automatic branches that started the current denoising run (0 for the first
    one): the first is ``"cond"``, every later one ``"uncond"``, as pipelines call the conditional branch first.
    The step clock tracks the positions; call this directly only for a named branch.
    """
    if isinstance(position, bool) or not isinstance(position, int) or position < 0:
        raise ValueError(f"position: expected an int >= 0, got {position!r}")
    named = named_role(branch)
    if named is not None:
        return named
    return "cond" if position == 0 else "uncond"
