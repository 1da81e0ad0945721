"""The cache-middleware contract: ``process(ctx, call_next)`` over a validated CacheContext.

A cache middleware sees the context of one transformer call and decides, in the shape of Starlette's
``dispatch(request, call_next)``:

* compute: ``out = call_next(ctx)`` runs the rest of the cache stack and finally the blocks in ``ctx.blocks``;
* reuse: return ``(ctx.hidden_states + residual, ...)`` without calling ``call_next``;
* narrow: call ``call_next(ctx.evolve(hidden_states=..., blocks=ctx.blocks[a:b]))`` to let the inner middlewares
  and the blocks work on part of the stack (DBCache does this for its middle blocks).

It returns the blocks' output ``(hidden_states, encoder_hidden_states)``; the runtime applies the postprocess.

State is kept in one slot per CFG branch: ``(generation, state, stats)``. The step clock
(:mod:`ditcache.core.clock`) announces when a branch's generation starts and ends; a start opens a fresh slot, an end
moves its stats to :attr:`CacheMiddleware.history` and drops its state. A cache never detects a generation itself,
so nothing leaks between cond and uncond calls or between runs. It reads the branch's role from ``ctx.role``.

Where a cache sits in the stack follows from its :attr:`~CacheMiddleware.level` alone (:func:`insertion_index`).
"""

from __future__ import annotations

import abc
import logging
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from typing import Any, ClassVar, Generic, TypeVar

import attrs
from torch import nn

from ditcache.core.branch import Role
from ditcache.core.context import BlockOutput, CacheContext
from ditcache.core.log import get_logger

__all__ = [
    "LEVELS",
    "CacheMiddleware",
    "CallNextBlocks",
    "FinalOutput",
    "GenerationStats",
    "StepDecision",
    "compose",
    "insertion_index",
]

CallNextBlocks = Callable[[CacheContext], BlockOutput]
"""Runs the rest of the cache stack (and finally the blocks) for a context."""

S = TypeVar("S")

_log = get_logger("ditcache.core.cache")


@attrs.frozen
class FinalOutput:
    """Returned by the outermost cache middleware instead of block outputs: the model's return value itself.

    The runtime then skips the postprocess. A step-level cache that forecasts the model's *output* (rather than the
    blocks' residual) returns the forecast this way on skipped steps, and on computed steps applies
    ``ctx.postprocess`` itself to record the real output. Only the outermost middleware may return it.
    """

    value: Any


@attrs.frozen
class StepDecision:
    """What a cache decided for one call."""

    step: int
    computed: bool
    info: dict[str, Any] = attrs.field(factory=dict)


@attrs.define
class GenerationStats:
    """The decisions of one cache for one branch over one generation."""

    cache: str
    branch: Hashable
    generation: int
    decisions: list[StepDecision] = attrs.field(factory=list)

    @property
    def computed_steps(self) -> list[int]:
        """Steps on which the cached part was computed."""
        return [d.step for d in self.decisions if d.computed]

    @property
    def skipped_steps(self) -> list[int]:
        """Steps on which the cached part was reused instead of computed."""
        return [d.step for d in self.decisions if not d.computed]

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly summary."""
        return {
            "cache": self.cache,
            "branch": str(self.branch),
            "generation": self.generation,
            "steps": len(self.decisions),
            "computed": len(self.computed_steps),
            "skipped": len(self.skipped_steps),
            "skipped_steps": self.skipped_steps,
        }


LEVELS: tuple[str | None, ...] = ("step", None, "block")
"""The levels a cache can have, outermost first (see :func:`insertion_index`)."""


def insertion_index(stack: Sequence[CacheMiddleware[Any]], cache: CacheMiddleware[Any]) -> int:
    """Where ``cache`` goes in ``stack`` (outermost first): the one rule that orders a module's caches.

    Caches are grouped by :attr:`~CacheMiddleware.level`, in the order of :data:`LEVELS`:

    1. ``"step"`` caches (TeaCache, MagCache) outermost: they decide whether a step runs at all, so they must see
       every call and may return the model's output (:class:`FinalOutput`);
    2. caches without a level (observers such as the calibration recorder) next: they see every step that runs,
       with the whole block stack;
    3. ``"block"`` caches (DBCache) innermost: they narrow the block stack inside the steps that run.

    Within a group, caches keep the order they were applied in (the new one goes last).
    """
    rank = LEVELS.index(cache.level)
    for i, existing in enumerate(stack):
        if LEVELS.index(existing.level) > rank:
            return i
    return len(stack)


def compose(stack: Sequence[CacheMiddleware[Any]]) -> Callable[[CacheContext], BlockOutput | FinalOutput]:
    """The call chain of ``stack`` (outermost first): each cache's :meth:`~CacheMiddleware.process` gets the rest of
    the stack as ``call_next``, and the innermost step runs the context's blocks. Only the outermost cache may return
    a :class:`FinalOutput`; an inner one that does raises TypeError."""
    chain: Callable[[CacheContext], BlockOutput | FinalOutput] = _run_blocks
    for middleware in reversed(stack):
        chain = _link(middleware, chain)
    return chain


def _run_blocks(ctx: CacheContext) -> BlockOutput:
    return ctx.blocks(ctx.hidden_states, ctx.encoder_hidden_states)


def _link(
    middleware: CacheMiddleware[Any], call_next: Callable[[CacheContext], BlockOutput | FinalOutput]
) -> Callable[[CacheContext], BlockOutput | FinalOutput]:
    def checked_next(ctx: CacheContext) -> BlockOutput:
        out = call_next(ctx)
        if isinstance(out, FinalOutput):
            raise TypeError(
                f"cache: an inner middleware returned FinalOutput to {middleware.name!r}; only the outermost cache "
                "may return the model's output (stack output-forecasting caches outside the others)"
            )
        return out

    def step(ctx: CacheContext) -> BlockOutput | FinalOutput:
        return middleware.process(ctx, checked_next)

    return step


@attrs.define
class _Slot(Generic[S]):
    """One branch's current generation: its number, the cache's state (made on first use), its stats. (The role is
    on every context: ``ctx.role``.)"""

    generation: int
    stats: GenerationStats
    state: S | None = None


class CacheMiddleware(abc.ABC, Generic[S]):
    """Base class of cache middlewares (TeaCache, MagCache, DBCache, ...).

    Subclasses set :attr:`name` and :attr:`level`, implement :meth:`new_state` and :meth:`process`, and call
    :meth:`record` once per call with their decision. Two caches are the same object or different ones (identity);
    :meth:`same_settings` says whether applying the second would change anything.
    """

    name: ClassVar[str] = "cache"
    level: ClassVar[str | None] = None
    """Where the cache sits (:func:`insertion_index`). Caches of the same level are also mutually exclusive on one
    module: ``"step"`` caches (TeaCache, MagCache) decide whole-step reuse, ``"block"`` caches (DBCache) act inside
    the steps that run. None: an observer, no restriction."""
    history_size: ClassVar[int] = 64

    def __init__(self, config: Any) -> None:
        self.config = config
        self._slots: dict[Hashable, _Slot[S]] = {}
        self.history: deque[GenerationStats] = deque(maxlen=self.history_size)

    # ------------------------------------------------------------------ hooks for subclasses
    @abc.abstractmethod
    def new_state(self) -> S:
        """A fresh per-branch state for a new generation."""

    @abc.abstractmethod
    def process(self, ctx: CacheContext, call_next: CallNextBlocks) -> BlockOutput | FinalOutput:
        """Decide for this call: compute through ``call_next`` or reuse; return the blocks' output (or, from the
        outermost cache only, the model's output as a :class:`FinalOutput`)."""

    def bind(self, module: nn.Module, num_blocks: int) -> None:
        """Called when applied to a module, with its block count; raise ValueError for an impossible setup."""

    # ------------------------------------------------------------------ generation boundaries (from the clock)
    def generation_started(self, branch: Hashable, generation: int, role: Role) -> None:
        """Open a fresh slot for ``branch`` (called by the step clock; see :mod:`ditcache.core.clock`)."""
        self._finish(branch)
        self._slots[branch] = _Slot(generation, GenerationStats(self.name, branch, generation))

    def generation_ended(self, branch: Hashable, generation: int) -> None:
        """Close ``branch``'s slot: its stats go to :attr:`history`, its state is dropped (called by the clock)."""
        slot = self._slots.get(branch)
        if slot is not None and slot.generation == generation:
            self._finish(branch)

    # ------------------------------------------------------------------ state
    def _slot(self, ctx: CacheContext) -> _Slot[S]:
        slot = self._slots.get(ctx.branch)
        if slot is None:
            # No announcement for this branch since the last reset() (a reset by hand mid-generation): open the
            # slot now for the context's generation. Boundaries themselves only ever come from the clock.
            self.generation_started(ctx.branch, ctx.generation, ctx.role)
            return self._slots[ctx.branch]
        if slot.generation != ctx.generation:
            raise RuntimeError(
                f"cache {self.name!r}: branch {ctx.branch!r} is in generation {ctx.generation}, but this cache "
                f"was told generation {slot.generation}; a cache object serves one module, apply a new one to "
                "each module"
            )
        return slot

    def state(self, ctx: CacheContext) -> S:
        """The state of ``ctx.branch`` in its current generation (made by :meth:`new_state` on first use)."""
        slot = self._slot(ctx)
        if slot.state is None:
            slot.state = self.new_state()
        return slot.state

    def reset(self) -> None:
        """Close every branch's slot (the stats of finished generations are kept in :attr:`history`)."""
        for branch in list(self._slots):
            self._finish(branch)

    # ------------------------------------------------------------------ decisions and stats
    def record(self, ctx: CacheContext, computed: bool, **info: Any) -> None:
        """Record this call's decision; logs a debug event (and the clock's end of a generation a summary)."""
        self._slot(ctx).stats.decisions.append(StepDecision(ctx.step, computed, info))
        if _log.is_enabled_for(logging.DEBUG):
            _log.debug(
                "cache.decision",
                cache=self.name,
                branch=str(ctx.branch),
                step=ctx.step,
                skipped=not computed,
                **info,
            )

    def _finish(self, branch: Hashable) -> None:
        slot = self._slots.pop(branch, None)
        if slot is None or not slot.stats.decisions:
            return
        cur = slot.stats
        self.history.append(cur)
        _log.info(
            "cache.generation",
            cache=self.name,
            branch=str(branch),
            steps=len(cur.decisions),
            computed=len(cur.computed_steps),
            skipped=len(cur.skipped_steps),
            skipped_steps=cur.skipped_steps,
        )

    def stats(self) -> list[GenerationStats]:
        """Finished generations (oldest first) followed by the ones still running."""
        return [*self.history, *(s.stats for s in self._slots.values() if s.stats.decisions)]

    # ------------------------------------------------------------------ identity
    def same_settings(self, other: object) -> bool:
        """Whether ``other`` is a cache of the same class with an equal config (applying it again changes
        nothing). Caches compare and hash by identity; this is the explicit settings comparison."""
        return other is self or (type(other) is type(self) and bool(self.config == other.config))  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"
