"""Scalar indicators the caches decide on, MagCache's calibration metrics, and the quality measure the tools report.

Every indicator returns Python floats (one host sync each). Half-precision inputs (bfloat16, float16) are reduced
in float32 chunk by chunk, so no full-size float32 copy of an activation is made for a scalar.

The indicators take the context's reducer (``ctx.reducer``, :mod:`ditcache.core.distributed`): with the local one
they are computed as published (means); under sequence parallelism each rank sums its slice, one collective adds
the partial sums, and every rank derives the same full-sequence value.
"""

from __future__ import annotations

import math
from typing import Literal, overload

import torch
import torch.nn.functional as F

from ditcache.core.distributed import LOCAL, Reducer

__all__ = ["psnr", "rel_l1", "residual_metrics"]

_CHUNK = 1 << 20
"""Elements upcast to float32 at a time when reducing a half-precision tensor (4 MiB of float32)."""


def rel_l1(current: torch.Tensor, previous: torch.Tensor, reducer: Reducer = LOCAL) -> float:
    """``mean|current - previous| / mean|previous|`` over all elements, in float32, as a Python float.

    The denominator is the *previous* tensor's, as in TeaCache (Eq. 4) and FBCache/DBCache. Returns ``inf`` when
    the previous tensor is all zeros (so the caller computes). One host sync. Half-precision inputs are upcast in
    chunks of ``2**20`` elements (the difference is taken in float32, as for float32 inputs). With a non-local
    ``reducer`` the two sums are added over the ranks first, so every rank gets the full-sequence value.
    """
    if current.shape == previous.shape and current.dtype in _HALF and previous.dtype in _HALF:
        num_t, den_t = _half_sums(current.reshape(-1), previous.reshape(-1))
        partial = torch.stack((num_t, den_t))
    elif reducer.is_local:  # the published form (means), bit for bit as the peers compute it
        prev = previous.float()
        partial = torch.stack(((current.float() - prev).abs().mean(), prev.abs().mean()))
    else:
        prev = previous.float()
        partial = torch.stack(((current.float() - prev).abs().sum(), prev.abs().sum()))
    num, den = (partial if reducer.is_local else reducer.sum(partial)).tolist()
    return num / den if den > 0 else float("inf")


_HALF = (torch.bfloat16, torch.float16)


def _half_sums(cur: torch.Tensor, prev: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    num = torch.zeros((), dtype=torch.float32, device=cur.device)
    den = torch.zeros((), dtype=torch.float32, device=cur.device)
    for start in range(0, cur.numel(), _CHUNK):
        p = prev[start : start + _CHUNK].float()
        num += (cur[start : start + _CHUNK].float() - p).abs().sum()
        den += p.abs().sum()
    return num, den


def residual_metrics(
    current: torch.Tensor, previous: torch.Tensor, reducer: Reducer = LOCAL
) -> tuple[float, float, float]:
    """MagCache's calibration metrics of two consecutive residuals, in float32 over the last dim (tokens):
    ``(mean(|r_t| / |r_{t-1}|), std(|r_t| / |r_{t-1}|), mean(1 - cos(r_t, r_{t-1})))``. One host sync.

    As MagCache's calibration code, without diffusers' ``+1e-8`` in the denominator (a zero norm is clamped to
    the smallest normal float32 instead); ``std`` is torch's unbiased one (0.0 for a single token). Used by the
    calibration mode only (it upcasts the residuals whole). With a non-local ``reducer`` each rank sums its tokens'
    ratio, squared ratio and cosine distance (in float64) and its token count, one collective adds them, and every
    rank derives the same mean, unbiased std and mean cosine distance.
    """
    cur = current.float()
    prev = previous.float()
    ratio = torch.linalg.vector_norm(cur, dim=-1) / torch.linalg.vector_norm(prev, dim=-1).clamp_min(
        torch.finfo(torch.float32).tiny
    )
    cos = 1.0 - F.cosine_similarity(cur, prev, dim=-1, eps=1e-8)
    if reducer.is_local:
        std = ratio.std() if ratio.numel() > 1 else torch.zeros((), device=ratio.device)
        mean, sd, cd = torch.stack([ratio.mean(), std, cos.mean()]).tolist()
        return float(mean), float(sd), float(cd)
    r = ratio.double()
    count = torch.tensor(float(r.numel()), dtype=torch.float64, device=r.device)
    partial = torch.stack((r.sum(), (r * r).sum(), cos.double().sum(), count))
    total, total_sq, total_cos, n = reducer.sum(partial).tolist()
    if n <= 0:
        return 1.0, 0.0, 0.0
    mean = total / n
    var = max(total_sq - n * mean * mean, 0.0) / (n - 1) if n > 1 else 0.0
    return mean, math.sqrt(var), total_cos / n


@overload
def psnr(
    output: torch.Tensor,
    reference: torch.Tensor,
    data_range: float | None = ...,
    *,
    per_item: Literal[False] = ...,
    cap: float = ...,
) -> float: ...


@overload
def psnr(
    output: torch.Tensor,
    reference: torch.Tensor,
    data_range: float | None = ...,
    *,
    per_item: Literal[True],
    cap: float = ...,
) -> list[float]: ...


def psnr(
    output: torch.Tensor,
    reference: torch.Tensor,
    data_range: float | None = 1.0,
    *,
    per_item: bool = False,
    cap: float = math.inf,
) -> float | list[float]:
    """Peak signal-to-noise ratio in dB of ``output`` against ``reference``: ``10 log10(peak^2 / MSE)``.

    Computed in float64 on the CPU. ``data_range`` is the peak-to-peak range of the data (1.0 for images in
    [0, 1]); None takes each reference item's ``max - min``. With ``per_item`` the first dimension is the batch
    and one value per item is returned (a list); otherwise one value over every element. Identical tensors give
    ``cap`` (``inf`` by default), and no value exceeds it.
    """
    if output.shape != reference.shape:
        raise ValueError(f"output: shape {tuple(output.shape)} differs from the reference's {tuple(reference.shape)}")
    if data_range is not None and (isinstance(data_range, bool) or not math.isfinite(data_range) or not data_range > 0):
        raise ValueError(f"data_range: expected a finite number > 0 or None, got {data_range!r}")
    if per_item and output.ndim == 0:
        raise ValueError("output: per_item needs a batch dimension, got a scalar")
    a, b = output.detach().double().cpu(), reference.detach().double().cpu()
    rows = a.shape[0] if per_item else 1
    a, b = a.reshape(rows, -1), b.reshape(rows, -1)
    mse = ((a - b) ** 2).mean(dim=1)
    peak = torch.full_like(mse, data_range) if data_range is not None else b.max(dim=1).values - b.min(dim=1).values
    values = [
        cap if m <= 0 else min(cap, 10.0 * math.log10(max(p, 1e-12) ** 2 / m))
        for m, p in zip(mse.tolist(), peak.tolist())
    ]
    return values if per_item else values[0]
