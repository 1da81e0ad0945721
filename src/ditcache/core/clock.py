"""The step clock: the one owner of CFG roles and generation boundaries.

For every transformer call the runtime asks :meth:`StepClock.advance` where the call's branch stands. The clock
answers with a :class:`Tick` (step index within the branch's generation, generation counter, role) and tells its
listeners, the applied caches, when a branch's generation starts and ends:

* **start**: the call is the first of a new generation for its branch (see :class:`StepClock` for the rules);
  listeners get ``generation_started(branch, generation, role)`` before the call runs;
* **end**: the branch's last known step ran (:meth:`StepClock.call_done`), the branch starts a newer generation,
  :meth:`StepClock.refresh` was called, or the branch was evicted as idle; listeners get
  ``generation_ended(branch, generation)`` exactly once per generation.

The role is decided once, at the start, by :func:`ditcache.core.branch.role_of`: named branches by their name,
automatic branches by their position in the current denoising run. A run is the group of automatic branches that
start a generation while every earlier member of the group is still at its step 0; a branch that restarts, or one
that arrives after another moved on, begins a new run as its first member (``"cond"``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Sequence
from typing import Any, Protocol

import attrs

from ditcache.core.branch import Role, is_auto_branch, role_of

__all__ = ["GenerationListener", "StepClock", "Tick"]


class GenerationListener(Protocol):
    """What the clock announces generation boundaries to (every cache implements it)."""

    def generation_started(self, branch: Hashable, generation: int, role: Role) -> None:
        """``branch`` starts generation ``generation`` with ``role``; its next call is step 0 (or the hinted step)."""

    def generation_ended(self, branch: Hashable, generation: int) -> None:
        """Generation ``generation`` of ``branch`` is over; nothing more of it will be seen."""


@attrs.frozen
class Tick:
    """Where one call stands, as :meth:`StepClock.advance` decided it."""

    branch: Hashable
    step: int
    """Index of the call within its branch's generation."""
    generation: int
    """Counter of generations (all branches share it, so a new generation always has a new number)."""
    role: Role
    """The branch's CFG role for this generation."""
    num_steps: int | None
    """Calls per branch in a generation, when known."""
    started: bool
    """Whether this call started the generation."""


@attrs.define
class _BranchClock:
    step: int = -1
    generation: int = 0
    role: Role = "cond"
    open: bool = False  # a generation started and was not announced as ended yet
    last_t: float | None = None
    direction: int = 0  # +1 / -1 once two timesteps were seen, 0 before
    signature: tuple[Any, ...] = ()
    epoch: int = 0


class StepClock:
    """Tracks, per CFG branch, the step index within the current generation, the generation and the role.

    A call starts a new generation for its branch when: the branch is new; :meth:`refresh` was called since its
    last call; the known step count was reached; the timestep moved against the direction of the previous steps
    or repeated (a new denoising run, also after an exception mid-run); or the hidden states changed shape, dtype
    or device (a new resolution, ``.to()``). A caller's step hint (diffusers' ``cache_context(step_index=...)``)
    overrides the timestep rules. At most :attr:`max_branches` branches are tracked; the least recently used one
    beyond that is evicted (its generation ends).

    ``listeners`` is a live sequence (the runtime passes its list of caches): changes to it are seen by the next
    announcement.
    """

    max_branches = 16

    def __init__(self, listeners: Sequence[GenerationListener] = ()) -> None:
        self.listeners = listeners
        self._clocks: OrderedDict[Hashable, _BranchClock] = OrderedDict()
        self._generation = 0
        self._epoch = 0
        self._run: list[Hashable] = []  # automatic branches of the current run, in order of arrival
        self.num_steps: int | None = None

    # ------------------------------------------------------------------ queries
    def branches(self) -> list[Hashable]:
        """The branches seen, least recently used first."""
        return list(self._clocks)

    def role(self, branch: Hashable) -> Role | None:
        """The role ``branch`` has in its current generation, or None for a branch never seen."""
        clk = self._clocks.get(branch)
        return None if clk is None else clk.role

    # ------------------------------------------------------------------ boundaries
    def refresh(self, num_steps: int | None) -> None:
        """End every open generation now; every branch starts a new one at its next call, with ``num_steps``
        calls per branch (``None`` keeps the step count already known)."""
        self._epoch += 1
        if num_steps is not None:
            self.num_steps = num_steps
        self._run = []
        for branch, clk in self._clocks.items():
            self._end(branch, clk)

    def advance(
        self,
        branch: Hashable,
        timestep: float | None,
        signature: tuple[Any, ...],
        step_hint: int | None = None,
    ) -> Tick:
        """Account for one call of ``branch`` and return where it stands (announcing a start, or an eviction)."""
        clk = self._clocks.get(branch)
        if clk is None:
            clk = _BranchClock(epoch=self._epoch)
            self._clocks[branch] = clk
            if len(self._clocks) > self.max_branches:
                evicted, old = self._clocks.popitem(last=False)
                self._end(evicted, old)
                if evicted in self._run:
                    self._run.remove(evicted)
            new = True
        else:
            self._clocks.move_to_end(branch)
            new = self._is_new(clk, timestep, signature, step_hint)
        if new:
            self._end(branch, clk)
            self._generation += 1
            clk.generation = self._generation
            clk.step = 0 if step_hint is None else step_hint
            clk.direction = 0
            clk.epoch = self._epoch
            clk.signature = signature
            clk.role = role_of(branch, self._position(branch))
            clk.open = True
            for listener in self.listeners:
                listener.generation_started(branch, clk.generation, clk.role)
        else:
            clk.step = clk.step + 1 if step_hint is None else step_hint
        clk.last_t = timestep
        return Tick(branch, clk.step, clk.generation, clk.role, self.num_steps, new)

    def call_done(self, branch: Hashable) -> None:
        """The call of ``branch`` finished; ends its generation when that was the last known step."""
        clk = self._clocks.get(branch)
        if clk is not None and self.num_steps is not None and clk.step >= self.num_steps - 1:
            self._end(branch, clk)

    # ------------------------------------------------------------------ internals
    def _is_new(
        self, clk: _BranchClock, timestep: float | None, signature: tuple[Any, ...], step_hint: int | None
    ) -> bool:
        new = clk.epoch != self._epoch or clk.signature != signature
        if step_hint is not None:  # the caller says where the loop is: trust it
            return new or step_hint == 0 or step_hint <= clk.step
        new = new or (self.num_steps is not None and clk.step + 1 >= self.num_steps)
        if not new and timestep is not None and clk.last_t is not None:
            delta = timestep - clk.last_t
            if delta == 0 or (clk.direction != 0 and (delta > 0) != (clk.direction > 0)):
                new = True
            elif clk.direction == 0:
                clk.direction = 1 if delta > 0 else -1
        return new

    def _position(self, branch: Hashable) -> int:
        """The position of an automatic branch starting a generation in the current run (see the module doc)."""
        if not is_auto_branch(branch):
            return 0
        run = self._run
        if run and branch not in run and all(self._step_of(m) == 0 for m in run):
            run.append(branch)
            return len(run) - 1
        self._run = [branch]
        return 0

    def _step_of(self, branch: Hashable) -> int:
        clk = self._clocks.get(branch)
        return -1 if clk is None else clk.step

    def _end(self, branch: Hashable, clk: _BranchClock) -> None:
        if not clk.open:
            return
        clk.open = False
        for listener in self.listeners:
            listener.generation_ended(branch, clk.generation)
