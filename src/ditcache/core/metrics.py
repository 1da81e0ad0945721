"""Scalar indicators the caches decide on, and MagCache's calibration metrics.

Every function returns Python floats (one host sync each). Half-precision inputs (bfloat16, float16) are reduced
in float32 chunk by chunk, so no full-size float32 copy of an activation is made for a scalar.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["rel_l1", "residual_metrics"]

_CHUNK = 1 << 20
"""Elements upcast to float32 at a time when reducing a half-precision tensor (4 MiB of float32)."""


def rel_l1(current: torch.Tensor, previous: torch.Tensor) -> float:
    """``mean|current - previous| / mean|previous|`` over all elements, in float32, as a Python float.

    The denominator is the *previous* tensor's, as in TeaCache (Eq. 4) and FBCache/DBCache. Returns ``inf`` when
    the previous tensor is all zeros (so the caller computes). One host sync. Half-precision inputs are upcast in
    chunks of ``2**20`` elements (the difference is taken in float32, as for float32 inputs).
    """
    if current.shape == previous.shape and current.dtype in _HALF and previous.dtype in _HALF:
        num_t, den_t = _half_sums(current.reshape(-1), previous.reshape(-1))
        num, den = torch.stack((num_t, den_t)).tolist()
        return num / den if den > 0 else float("inf")
    prev = previous.float()
    num, den = torch.stack(((current.float() - prev).abs().mean(), prev.abs().mean())).tolist()
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


def residual_metrics(current: torch.Tensor, previous: torch.Tensor) -> tuple[float, float, float]:
    """MagCache's calibration metrics of two consecutive residuals, in float32 over the last dim (tokens):
    ``(mean(|r_t| / |r_{t-1}|), std(|r_t| / |r_{t-1}|), mean(1 - cos(r_t, r_{t-1})))``. One host sync.

    As MagCache's calibration code, without diffusers' ``+1e-8`` in the denominator (a zero norm is clamped to
    the smallest normal float32 instead); ``std`` is torch's unbiased one (0.0 for a single token). Used by the
    calibration mode only (it upcasts the residuals whole).
    """
    cur = current.float()
    prev = previous.float()
    ratio = torch.linalg.vector_norm(cur, dim=-1) / torch.linalg.vector_norm(prev, dim=-1).clamp_min(
        torch.finfo(torch.float32).tiny
    )
    std = ratio.std() if ratio.numel() > 1 else torch.zeros((), device=ratio.device)
    cos = (1.0 - F.cosine_similarity(cur, prev, dim=-1, eps=1e-8)).mean()
    mean, sd, cd = torch.stack([ratio.mean(), std, cos]).tolist()
    return float(mean), float(sd), float(cd)
