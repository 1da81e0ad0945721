"""The distributed seam: make every rank decide from the same scalar.

Under sequence parallelism each rank holds a slice of the tokens, so a scalar a cache thresholds on (TeaCache's
relative L1 distance, DBCache's residual difference) computed on the local slice differs between ranks, and ranks
that decide differently deadlock in the next collective or produce torn images. The fix is to reduce the *partial
sums* the scalar is made of before dividing.

:class:`Reducer` is that one operation, ``sum(partial_sums) -> total_sums``. The runtime puts one on every context
(``ctx.reducer``): :class:`LocalReducer` (the identity, the default: one process holds the whole sequence) or a
:class:`ProcessGroupReducer` over the sequence-parallel group (one ``torch.distributed.all_reduce`` of a small
stacked tensor per decision). The metrics take the reducer (:func:`ditcache.core.metrics.rel_l1`,
:func:`ditcache.core.metrics.residual_metrics`); with the local one they are the published forms, bit for bit.

A tensor every rank holds whole (a replicated indicator such as Wan's ``temb``) is summed ``world_size`` times
over: numerator and denominator scale alike, so the ratio is the single-process one (exactly for two ranks, to the
last bit otherwise), and, what matters for the collectives, it is the same number on every rank.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

__all__ = ["LOCAL", "LocalReducer", "ProcessGroupReducer", "Reducer"]


@runtime_checkable
class Reducer(Protocol):
    """Sums partial sums over the ranks that share one sequence."""

    def sum(self, partial: torch.Tensor) -> torch.Tensor:
        """The element-wise sum of ``partial`` over the ranks (a new tensor; ``partial`` is left unchanged)."""
        ...

    @property
    def is_local(self) -> bool:
        """True when this process holds the whole sequence (:meth:`sum` is the identity)."""
        ...


class LocalReducer:
    """The identity reducer: one process holds the whole sequence."""

    def sum(self, partial: torch.Tensor) -> torch.Tensor:
        """``partial`` itself: there is nothing to add."""
        return partial

    @property
    def is_local(self) -> bool:
        """Always True."""
        return True

    def __repr__(self) -> str:
        return "LocalReducer()"


LOCAL = LocalReducer()
"""The default reducer of every context."""


class ProcessGroupReducer:
    """Sums over a ``torch.distributed`` process group (the sequence-parallel group; None: the default group).

    One ``all_reduce(SUM)`` of the stacked partial sums per call, so a decision costs one small collective. Every
    rank of the group must call :meth:`sum` at the same point (the caches do: every rank runs every step). The
    tensor must be on a device the group's backend handles (CPU for gloo, CUDA for NCCL).
    """

    def __init__(self, group: Any = None) -> None:
        if not torch.distributed.is_available():
            raise RuntimeError("ProcessGroupReducer: this torch build has no torch.distributed")
        self.group = group

    @property
    def world_size(self) -> int:
        """The number of ranks in the group (requires an initialised process group)."""
        return int(torch.distributed.get_world_size(self.group))

    def sum(self, partial: torch.Tensor) -> torch.Tensor:
        """The element-wise sum of ``partial`` over the group's ranks."""
        if not torch.distributed.is_initialized():
            raise RuntimeError(
                "ProcessGroupReducer.sum: torch.distributed is not initialised; call "
                "torch.distributed.init_process_group first, or use LocalReducer for one process"
            )
        total = partial.detach().clone()
        torch.distributed.all_reduce(total, op=torch.distributed.ReduceOp.SUM, group=self.group)
        return total

    @property
    def is_local(self) -> bool:
        """False: sums travel over the group."""
        return False

    def __repr__(self) -> str:
        return f"ProcessGroupReducer(group={self.group!r})"
