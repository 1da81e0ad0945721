"""Scalar indicators the caches threshold on, and the quality measure the tools report."""

from __future__ import annotations

import math
from typing import Literal, overload

import torch

__all__ = ["psnr", "rel_l1"]


def rel_l1(current: torch.Tensor, previous: torch.Tensor) -> float:
    """``mean|current - previous| / mean|previous|`` over all elements, in float32, as a Python float.

    The denominator is the *previous* tensor's, as in TeaCache (Eq. 4) and FBCache/DBCache. Returns ``inf`` when
    the previous tensor is all zeros (so the caller computes). One host sync.
    """
    prev = previous.float()
    num, den = torch.stack(((current.float() - prev).abs().mean(), prev.abs().mean())).tolist()
    return num / den if den > 0 else float("inf")


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
