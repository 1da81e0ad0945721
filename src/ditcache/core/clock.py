"""The step clock: the one owner of CFG roles and generation boundaries.

For every transformer call the runtime asks :meth:`StepClock.advance` where the call's branch stands. The clock
answers with a :class:`Tick` (step index within the branch's generation, generation counter, role) and tells its
listeners, the applied caches, when a branch's generation starts and ends:

* **start**: the call is the first of a new generation for its branch (see :class:`StepClock` for the rules);
  listeners get ``generation_started(branch, generation, role)`` before the call runs;
* **end**: the branch's last step of a *bounded* generation ran (:meth:`StepClock.call_done`), the branch starts a
  newer generation, :meth:`StepClock.refresh` or :meth:`StepClock.abort` was called, or the branch was evicted as
  idle; listeners get ``generation_ended(branch, generation)`` exactly once per generation, and caches drop the
  generation's tensors then.

**Step counts.** A generation is *bounded* when its step count was given for it: by the pipeline entry point (each
``pipe(...)`` call), by ``cache_context(num_inference_steps=...)`` on its calls, or by ``refresh(n)`` right before it
(the bound of a refresh applies to the next generation of each branch). A bounded generation ends at its last step.
Otherwise the generation uses the default count (:attr:`StepClock.num_steps`: a cache config's, or the last
refresh's) only as an estimate for the caches (a forced last step, MagCache's schedule): it does not end at that
count, so a run longer than the previous one stays one generation, and it ends when the branch starts a new one.
Generations started by the pipeline entry point (``driven``) ignore the timestep rules: the pipeline says where each
run starts, so a non-monotone schedule is one generation.

**The timestep is read lazily.** :meth:`StepClock.advance` takes it as a float, None, or a zero-argument callable
returning one (reading a device tensor is a host sync), and reads it only for the timestep rules: never in a driven
generation, nor in a call with a step hint.

The role is decided once, at the start, by :func:`ditcache.core.branch.role_of`: named branches by their name,
automatic branches by their position in the current denoising run. A run is the group of automatic branches that
start a generation on the same latent tensor (the ``hidden_states`` the caller passed) while every earlier member of
the group is still at its step 0; a branch that restarts, or one that arrives on another live latent (a second
request in lockstep) or after another member moved on, begins a new run as its first member (``"cond"``).
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import Any, Protocol

import attrs
import torch

from ditcache.core.branch import Role, is_auto_branch, role_of, tensor_version

__all__ = ["GenerationListener", "StepClock", "Tick", "Timestep", "check_max_branches"]

Timestep = float | Callable[[], float | None] | None
"""A call's timestep as :meth:`StepClock.advance` takes it: the value, None (unknown), or a zero-argument callable
that reads it (called only when the timestep rules need the value)."""


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
    """Calls per branch in this generation, when known (given for it, or the default estimate)."""
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
    repeated: bool = False  # the last call repeated the timestep before it (a second evaluation)
    signature: tuple[Any, ...] = ()
    epoch: int = -1  # the epoch the current generation started in
    num_steps: int | None = None
    bounded: bool = False  # num_steps was given for this generation: it ends there
    driven: bool = False  # the caller's own generation source started it: the timestep rules are off
    first_sample: weakref.ref[torch.Tensor] | None = None  # the latent of the generation's first call
    first_version: int | None = None


def check_max_branches(value: object) -> int:
    """``value`` if it is a valid branch bound (an int >= 1); ValueError naming ``max_branches`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"max_branches: expected an int >= 1 (branches tracked per model), got {value!r}")
    return value


class StepClock:
    """Tracks, per CFG branch, the step index within the current generation, the generation and the role.

    A call starts a new generation for its branch when: the branch is new; :meth:`refresh` or :meth:`abort` was
    called since its last call; its bounded generation reached its step count; the hidden states changed shape,
    dtype or device (a new resolution, ``.to()``); a caller's step hint (diffusers'
    ``cache_context(step_index=...)``) is 0 or goes back. Without a hint, and except in generations the pipeline
    entry point started (``driven``), the call's latent and timestep decide too: a call that passes again, unchanged,
    the very latent its generation started from starts a new one (a retry from the same starting point); so does a
    timestep moving against the direction of the previous steps, or a repeated one unless it is the first repeat
    after a move (Heun's second evaluation of a step, which continues the generation as its next call). At most
    :attr:`max_branches` branches are tracked; the least recently used one beyond that is evicted (its generation
    ends).

    ``listeners`` is a live sequence (the runtime passes its list of caches): changes to it are seen by the next
    announcement.
    """

    def __init__(self, listeners: Sequence[GenerationListener] = (), *, max_branches: int = 16) -> None:
        self.listeners = listeners
        self._max_branches = check_max_branches(max_branches)
        self._clocks: OrderedDict[Hashable, _BranchClock] = OrderedDict()
        self._generation = 0
        self._epoch = 0
        self._epoch_steps: int | None = None  # the count refresh() gave the generations of this epoch
        self._epoch_driven = False  # refresh() came from a source that knows where the caller's runs start
        self._run: list[Hashable] = []  # automatic branches of the current run, in order of arrival
        self._run_sample: weakref.ref[torch.Tensor] | None = None  # the latent the current run started on
        self.num_steps: int | None = None
        """The default step count (a cache config's): an estimate for generations given no count of their own."""

    # ------------------------------------------------------------------ settings and queries
    @property
    def max_branches(self) -> int:
        """How many branches are tracked at most; the least recently used beyond it is evicted (ends)."""
        return self._max_branches

    @max_branches.setter
    def max_branches(self, value: int) -> None:
        self._max_branches = check_max_branches(value)
        while len(self._clocks) > self._max_branches:
            self._evict()

    @property
    def pending_steps(self) -> int | None:
        """The count the last :meth:`refresh` gave to the next generation of each branch (None when it gave none)."""
        return self._epoch_steps

    def branches(self) -> list[Hashable]:
        """The branches seen, least recently used first."""
        return list(self._clocks)

    def open_generations(self) -> list[Hashable]:
        """The branches whose generation is open (started and not ended)."""
        return [branch for branch, clk in self._clocks.items() if clk.open]

    # ------------------------------------------------------------------ boundaries
    def refresh(self, num_steps: int | None, *, driven: bool = False) -> None:
        """End every open generation now; every branch starts a new one at its next call.

        ``num_steps`` bounds that next generation of each branch and becomes the default count (an estimate) for
        later ones; None keeps the default. ``driven``: the caller knows where its runs start and will refresh
        again before the next one (the pipeline entry point), so the timestep rules are off in those generations.
        """
        self._epoch += 1
        self._epoch_steps = num_steps
        self._epoch_driven = driven
        if num_steps is not None:
            self.num_steps = num_steps
        self._run = []
        self._run_sample = None
        for branch, clk in self._clocks.items():
            self._end(branch, clk)

    def abort(self) -> None:
        """End every open generation because a call failed: the next call of each branch starts a new one."""
        self._run = []
        self._run_sample = None
        for branch, clk in self._clocks.items():
            self._end(branch, clk)

    def forget(self, branches: Sequence[Hashable]) -> None:
        """End the open generations of ``branches`` and stop tracking them (they will not be called again)."""
        for branch in branches:
            clk = self._clocks.pop(branch, None)
            if clk is not None:
                self._end(branch, clk)
            if branch in self._run:
                self._run.remove(branch)

    def advance(
        self,
        branch: Hashable,
        timestep: Timestep,
        signature: tuple[Any, ...],
        step_hint: int | None = None,
        *,
        num_steps: int | None = None,
        sample: torch.Tensor | None = None,
    ) -> Tick:
        """Account for one call of ``branch`` and return where it stands (announcing a start, or an eviction).

        ``timestep`` (a value or a callable reading it, see :data:`Timestep`) is read only when the timestep rules
        apply: no ``step_hint`` and a generation that is not driven. ``num_steps`` is a count given with the call
        (``cache_context(num_inference_steps=...)``): it bounds the call's generation. ``sample`` is the latent the
        caller passed; automatic branches starting together on it form one CFG run (module docstring).
        """
        clk = self._clocks.get(branch)
        new: bool | None
        if clk is None:
            clk = _BranchClock()
            self._clocks[branch] = clk
            if len(self._clocks) > self._max_branches:
                self._evict()
            new = True
        else:
            self._clocks.move_to_end(branch)
            new = self._is_new(clk, signature, step_hint, sample)
        t: float | None = None
        read = False
        if new is None:  # only the timestep can tell (so this generation, or the new one, goes on using it)
            t, read = _read(timestep), True
            new = self._timestep_restarts(clk, t)
        if new:
            self._end(branch, clk)
            self._generation += 1
            clk.generation = self._generation
            clk.step = 0 if step_hint is None else step_hint
            clk.direction = 0
            clk.repeated = False
            first_in_epoch = clk.epoch != self._epoch
            clk.epoch = self._epoch
            clk.signature = signature
            clk.first_sample = None if sample is None else weakref.ref(sample)
            clk.first_version = None if sample is None else tensor_version(sample)
            clk.driven = first_in_epoch and self._epoch_driven
            if num_steps is not None:
                clk.num_steps, clk.bounded = num_steps, True
            elif first_in_epoch and self._epoch_steps is not None:
                clk.num_steps, clk.bounded = self._epoch_steps, True
            else:
                clk.num_steps, clk.bounded = self.num_steps, False
            if not read and step_hint is None and not clk.driven:
                t = _read(timestep)  # the next call's timestep rules compare with it
            clk.role = role_of(branch, self._position(branch, sample))
            clk.open = True
            for listener in self.listeners:
                listener.generation_started(branch, clk.generation, clk.role)
        else:
            clk.step = clk.step + 1 if step_hint is None else step_hint
            if num_steps is not None:
                clk.num_steps, clk.bounded = num_steps, True
            elif not clk.bounded:
                clk.num_steps = self.num_steps  # the default may have been set since the start
        clk.last_t = t  # None when the rules do not apply to this call
        return Tick(branch, clk.step, clk.generation, clk.role, clk.num_steps, new)

    def call_done(self, branch: Hashable) -> None:
        """The call of ``branch`` finished; ends its generation when it is bounded and that was its last step."""
        clk = self._clocks.get(branch)
        if clk is not None and clk.bounded and clk.num_steps is not None and clk.step >= clk.num_steps - 1:
            self._end(branch, clk)

    # ------------------------------------------------------------------ internals
    def _is_new(
        self, clk: _BranchClock, signature: tuple[Any, ...], step_hint: int | None, sample: torch.Tensor | None
    ) -> bool | None:
        """Whether the call starts a new generation of ``clk``'s branch; None when only the timestep can tell."""
        if not clk.open or clk.epoch != self._epoch or clk.signature != signature:
            return True
        if step_hint is not None:  # the caller says where the loop is: trust it
            return step_hint == 0 or step_hint <= clk.step
        if clk.driven:
            return False
        if self._restarts_from_first_sample(clk, sample):
            return True
        return None

    @staticmethod
    def _timestep_restarts(clk: _BranchClock, timestep: float | None) -> bool:
        """The timestep rules (class docstring): whether ``timestep`` starts a new generation after ``clk.last_t``."""
        if timestep is None or clk.last_t is None:
            return False
        delta = timestep - clk.last_t
        if delta == 0:
            if clk.direction != 0 and not clk.repeated:  # a second evaluation of the step (Heun)
                clk.repeated = True
                return False
            return True
        clk.repeated = False
        if clk.direction != 0 and (delta > 0) != (clk.direction > 0):
            return True
        if clk.direction == 0:
            clk.direction = 1 if delta > 0 else -1
        return False

    @staticmethod
    def _restarts_from_first_sample(clk: _BranchClock, sample: torch.Tensor | None) -> bool:
        """Whether the call passes, unchanged, the very latent its generation started from: a sampler always moves
        the latent between two calls of a branch, so this is a new run from the same starting point (a retry, an
        img2img pass with given ``latents``). Unchanged means the same live tensor with the same version counter;
        inference tensors have no counter and are never taken as unchanged."""
        if sample is None or clk.first_sample is None or clk.first_version is None:
            return False
        return clk.first_sample() is sample and tensor_version(sample) == clk.first_version

    def _position(self, branch: Hashable, sample: torch.Tensor | None) -> int:
        """The position of an automatic branch starting a generation in the current run (see the module doc)."""
        if not is_auto_branch(branch):
            return 0
        run = self._run
        if run and branch not in run and all(self._step_of(m) == 0 for m in run) and self._same_sample(sample):
            run.append(branch)
            return len(run) - 1
        self._run = [branch]
        self._run_sample = None if sample is None else weakref.ref(sample)
        return 0

    def _same_sample(self, sample: torch.Tensor | None) -> bool:
        """Whether a call on ``sample`` belongs to the current run: the run's latent is that tensor, or is gone (the
        caller passes a fresh copy per call), or no latent is known."""
        if sample is None or self._run_sample is None:
            return True
        current = self._run_sample()
        return current is None or current is sample

    def _step_of(self, branch: Hashable) -> int:
        clk = self._clocks.get(branch)
        return -1 if clk is None else clk.step

    def _evict(self) -> None:
        evicted, old = self._clocks.popitem(last=False)
        self._end(evicted, old)
        if evicted in self._run:
            self._run.remove(evicted)

    def _end(self, branch: Hashable, clk: _BranchClock) -> None:
        if not clk.open:
            return
        clk.open = False
        for listener in self.listeners:
            listener.generation_ended(branch, clk.generation)


def _read(timestep: Timestep) -> float | None:
    return timestep() if callable(timestep) else timestep
