"""CFG-branch identity: which cond/uncond/extra call a transformer forward belongs to.

Cache state is kept per branch. The branch of a call is, in order of precedence:

1. the name set by :func:`cfg_branch` around the call (``with ditcache.cfg_branch("uncond"): model(...)``);
2. the name a diffusers pipeline sets with ``transformer.cache_context("cond" | "uncond")``; the runtime picks it up
   while a cache is applied (diffusers pipelines already wrap their denoiser calls this way);
3. otherwise an automatic identity from the conditioning tensor the caller passed (the prompt embeddings),
   :class:`AutoIdentities`: two calls share an automatic branch only when they pass the *same live tensor* (or
   views of one) whose content was not written in place in between. The tensor's address, layout and version
   counter are compared while a weak reference proves the first tensor is still alive, so an address the allocator
   reuses for another tensor, or a buffer rewritten in place (``static.copy_(uncond)``), is a new branch. This costs
   no device sync. Pipelines pass the same embeddings for every step, so each of their branches keeps its state; a
   caller that rebuilds the embeddings every step gets a fresh branch per call, which is safe (the cache computes
   every step) but gives no speed-up: name the branches with :func:`cfg_branch` then. A new pipeline call that
   encodes its prompt again therefore also starts new branches.

Never by call parity: parity breaks with three branches, CFG truncation, or CFG-parallel ranks.

A branch also has a *role*, ``"cond"`` or ``"uncond"``: which calibrated curve or polynomial it uses.
:func:`role_of` is the one rule for it; the step clock (:mod:`ditcache.core.clock`) applies it once when a branch
starts a generation and stamps the result on every context as ``ctx.role``, so caches never derive it themselves.
"""

from __future__ import annotations

import contextlib
import contextvars
import weakref
from collections.abc import Hashable, Iterator
from typing import Literal

import attrs
import torch

__all__ = [
    "ROLES",
    "AutoIdentities",
    "Role",
    "cfg_branch",
    "current_branch",
    "is_auto_branch",
    "named_role",
    "role_of",
    "tensor_version",
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


def tensor_version(t: torch.Tensor) -> int | None:
    """The tensor's in-place version counter (shared by its views); None for inference tensors, which have none."""
    return None if t.is_inference() else int(t._version)


@attrs.define
class _Seen:
    ref: weakref.ref[torch.Tensor]
    version: int | None
    name: str


class AutoIdentities:
    """Automatic branch names for the conditioning tensors of one runtime (see the module docstring, rule 3).

    A call gets the name of the last call that passed a tensor with the same device, address, shape, strides and
    dtype, provided that tensor (the base of a view, so per-call views of one base count as one) is still alive and
    its version counter has not moved; otherwise a new name. Only weak references are kept, and at most
    ``capacity`` entries (dead ones are dropped first).
    """

    def __init__(self, capacity: int = 64) -> None:
        self.capacity = capacity
        self._seen: dict[tuple[object, ...], _Seen] = {}
        self._by_name: dict[str, _Seen] = {}  # the same records by the name they gave
        self._serial = 0

    def branch(self, condition: torch.Tensor | None) -> Hashable:
        """The automatic branch of a call whose conditioning tensor is ``condition`` (``"default"`` for None)."""
        if condition is None:
            return "default"
        owner = condition._base if condition._base is not None else condition
        key = (condition.device, condition.data_ptr(), tuple(condition.shape), condition.stride(), condition.dtype)
        version = tensor_version(condition)
        seen = self._seen.get(key)
        if seen is not None and seen.ref() is owner and seen.version == version:
            return seen.name
        self._serial += 1
        shape = "x".join(str(d) for d in condition.shape)
        name = f"auto:{self._serial}:{condition.device}:{shape}"
        old = self._seen.pop(key, None)
        if old is not None:
            self._by_name.pop(old.name, None)
        record = _Seen(weakref.ref(owner), version, name)
        self._seen[key] = record
        self._by_name[name] = record
        if len(self._seen) > self.capacity:
            self._prune()
        return name

    def alive(self, name: Hashable) -> bool:
        """Whether the conditioning tensor of automatic branch ``name`` still exists (a branch whose tensor is gone
        can never be called again). A name it gave and has since dropped (dead tensors are dropped first) counts as
        gone; names it did not give (``"default"``, a user's, an identity agreed across ranks) count as alive."""
        if not isinstance(name, str):
            return True
        seen = self._by_name.get(name)
        if seen is not None:
            return seen.ref() is not None
        return not self._gave(name)

    def _gave(self, name: str) -> bool:
        """Whether ``name`` has the form of the names :meth:`branch` gives (``auto:<serial>:...``, serial issued)."""
        parts = name.split(":", 2)
        return len(parts) == 3 and parts[0] == "auto" and parts[1].isdigit() and int(parts[1]) <= self._serial

    def _prune(self) -> None:
        for key in [k for k, v in self._seen.items() if v.ref() is None]:
            self._by_name.pop(self._seen.pop(key).name, None)
        while len(self._seen) > self.capacity:  # oldest first (dicts keep insertion order)
            self._by_name.pop(self._seen.pop(next(iter(self._seen))).name, None)


def is_auto_branch(branch: Hashable) -> bool:
    """Whether ``branch`` is an identity nobody named (from :class:`AutoIdentities`), as opposed to a given name."""
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
