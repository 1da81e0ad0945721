"""The distributed seam: make every rank decide from the same scalar.

Under sequence parallelism each rank holds a slice of the tokens, so a scalar a cache thresholds on (TeaCache's
relative L1 distance, DBCache's residual difference) computed on the local slice differs between ranks, and ranks
that decide differently deadlock in the next collective or produce torn images. The fix is to reduce the *partial
sums* the scalar is made of before dividing.

:class:`Reducer` is that one operation, ``sum(partial_sums) -> total_sums``. The runtime puts one on every context
(``ctx.reducer``): :class:`LocalReducer` (the identity, the default: one process holds the whole sequence) or a
:class:`ProcessGroupReducer` over the sequence-parallel group (one ``torch.distributed.all_reduce`` of a small
stacked tensor per decision). Metrics take the reducer: :func:`rel_l1` and :func:`residual_metrics` here are the
reduced forms of :func:`ditcache.core.metrics.rel_l1` and :func:`ditcache.core.metrics.residual_metrics`, bit for
bit the same with the local reducer.

A tensor every rank holds whole (a replicated indicator such as Wan's ``temb``) is summed ``world_size`` times
over: numerator and denominator scale alike, so the ratio is the single-process one (exactly for two ranks, to the
last bit otherwise), and, what matters for the collectives, it is the same number on every rank.
"""

from __future__ import annotations

import math
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from ditcache.core import metrics

__all__ = ["LOCAL", "LocalReducer", "ProcessGroupReducer", "Reducer", "rel_l1", "residual_metrics"]


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


def rel_l1(current: torch.Tensor, previous: torch.Tensor, reducer: Reducer = LOCAL) -> float:
    """``mean|current - previous| / mean|previous|`` over the *whole* sequence, whatever slice each rank holds.

    With a local reducer this is :func:`ditcache.core.metrics.rel_l1` itself (bit for bit). Otherwise both sums
    are computed locally in float32, stacked, summed over the ranks in one collective, and divided; every rank
    gets the same value. ``inf`` when the previous tensor is all zeros on every rank. One host sync.
    """
    if reducer.is_local:
        return metrics.rel_l1(current, previous)
    prev = previous.float()
    partial = torch.stack(((current.float() - prev).abs().sum(), prev.abs().sum()))
    num, den = reducer.sum(partial).tolist()
    return num / den if den > 0 else float("inf")


def residual_metrics(
    current: torch.Tensor, previous: torch.Tensor, reducer: Reducer = LOCAL
) -> tuple[float, float, float]:
    """MagCache's calibration metrics (:func:`ditcache.core.metrics.residual_metrics`) over the *whole* sequence.

    With a local reducer this is the metrics function itself (bit for bit). Otherwise each rank sums, over its
    tokens, the norm ratio ``|r_t| / |r_{t-1}|``, its square and the cosine distance (in float64), plus its token
    count; one collective adds the four sums and every rank derives the same mean ratio, unbiased std and mean
    cosine distance. One host sync.
    """
    if reducer.is_local:
        return metrics.residual_metrics(current, previous)
    cur = current.float()
    prev = previous.float()
    ratio = torch.linalg.vector_norm(cur, dim=-1) / torch.linalg.vector_norm(prev, dim=-1).clamp_min(
        torch.finfo(torch.float32).tiny
    )
    cos = 1.0 - F.cosine_similarity(cur, prev, dim=-1, eps=1e-8)
    r = ratio.double()
    count = torch.tensor(float(r.numel()), dtype=torch.float64, device=r.device)
    partial = torch.stack((r.sum(), (r * r).sum(), cos.double().sum(), count))
    total, total_sq, total_cos, n = reducer.sum(partial).tolist()
    if n <= 0:
        return 1.0, 0.0, 0.0
    mean = total / n
    var = max(total_sq - n * mean * mean, 0.0) / (n - 1) if n > 1 else 0.0
    return mean, math.sqrt(var), total_cos / n
