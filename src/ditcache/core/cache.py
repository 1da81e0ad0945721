"""The cache-middleware contract: ``process(ctx, call_next)`` over a validated CacheContext.

A cache middleware sees the context of one transformer call and decides, in the shape of Starlette's
``dispatch(request, call_next)``:

* compute: ``out = call_next(ctx)`` runs the rest of the cache stack and finally the blocks in ``ctx.blocks``;
* reuse: return ``(ctx.hidden_states + residual, ...)`` without calling ``call_next``;
* narrow: call ``call_next(ctx.evolve(hidden_states=..., blocks=ctx.blocks[a:b]))`` to let the inner middlewares
  and the blocks work on part of the stack (DBCache does this for its middle blocks).

It returns the blocks' output ``(hidden_states, encoder_hidden_states)``; the runtime applies the postprocess.

State is kept per CFG branch and per generation: :meth:`CacheMiddleware.state` returns a fresh state object the
first time a branch is seen in a generation, so nothing leaks between cond and uncond calls or between runs.
"""

from __future__ import annotations

import abc
import logging
from collections import deque
from collections.abc import Callable, Hashable
from typing import Any, ClassVar, Generic, TypeVar

import attrs
from torch import nn

from ditcache.core.context import BlockOutput, CacheContext
from ditcache.core.log import get_logger

__all__ = ["CacheMiddleware", "CallNextBlocks", "FinalOutput", "GenerationStats", "StepDecision"]

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


class CacheMiddleware(abc.ABC, Generic[S]):
    """Base class of cache middlewares (TeaCache, MagCache, DBCache, ...).

    Subclasses set :attr:`name`, implement :meth:`new_state` and :meth:`process`, and call :meth:`record` once per
    call with their decision. :attr:`order` places step-level caches (0) outside block-level ones (10).
    """

    name: ClassVar[str] = "cache"
    order: ClassVar[int] = 0
    level: ClassVar[str | None] = None
    """Caches of the same level are mutually exclusive on one module: ``"step"`` caches (TeaCache, MagCache) decide
    whole-step reuse, ``"block"`` caches (DBCache) act inside the steps that run. None: no restriction."""
    history_size: ClassVar[int] = 64

    def __init__(self, config: Any) -> None:
        self.config = config
        self._states: dict[Hashable, tuple[int, S]] = {}
        self._current: dict[Hashable, GenerationStats] = {}
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

    # ------------------------------------------------------------------ state
    def state(self, ctx: CacheContext) -> S:
        """The state of ``ctx.branch`` for the current generation (fresh on a new generation)."""
        entry = self._states.get(ctx.branch)
        if entry is None or entry[0] != ctx.generation:
            if entry is not None:
                self._finish(ctx.branch)
            state = self.new_state()
            self._states[ctx.branch] = (ctx.generation, state)
            return state
        return entry[1]

    def branch_state(self, branch: Hashable) -> S | None:
        """The current state of another ``branch`` (None if it has none), e.g. to order branches."""
        entry = self._states.get(branch)
        return None if entry is None else entry[1]

    def reset(self) -> None:
        """Drop every branch's state (the stats of finished generations are kept in :attr:`history`)."""
        for branch in list(self._current):
            self._finish(branch)
        self._states.clear()

    def drop_branch(self, branch: Hashable) -> None:
        """Forget one branch (the runtime calls this when it evicts an idle automatic branch)."""
        self._finish(branch)
        self._states.pop(branch, None)

    # ------------------------------------------------------------------ decisions and stats
    def record(self, ctx: CacheContext, computed: bool, **info: Any) -> None:
        """Record this call's decision; logs a debug event and, at the generation's last step, a summary."""
        cur = self._current.get(ctx.branch)
        if cur is None or cur.generation != ctx.generation:
            if cur is not None:
                self._finish(ctx.branch)
            cur = GenerationStats(self.name, ctx.branch, ctx.generation)
            self._current[ctx.branch] = cur
        cur.decisions.append(StepDecision(ctx.step, computed, info))
        if _log.is_enabled_for(logging.DEBUG):
            _log.debug(
                "cache.decision",
                cache=self.name,
                branch=str(ctx.branch),
                step=ctx.step,
                skipped=not computed,
                **info,
            )
        if ctx.is_last_step:
            self._finish(ctx.branch)

    def _finish(self, branch: Hashable) -> None:
        cur = self._current.pop(branch, None)
        if cur is None or not cur.decisions:
            return
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
        return [*self.history, *self._current.values()]

    # ------------------------------------------------------------------ identity
    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self is other or bool(self.config == other.config)  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return id(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"
