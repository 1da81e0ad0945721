"""Scalar indicators the caches threshold on."""

from __future__ import annotations

import torch

__all__ = ["rel_l1"]


def rel_l1(current: torch.Tensor, previous: torch.Tensor) -> float:
    """``mean|current - previous| / mean|previous|`` over all elements, in float32, as a Python float.

    The denominator is the *previous* tensor's, as in TeaCache (Eq. 4) and FBCache/DBCache. Returns ``inf`` when
    the previous tensor is all zeros (so the caller computes). One host sync.
    """
    prev = previous.float()
    num = (current.float() - prev).abs().mean()
    den = prev.abs().mean()
    value = float(torch.where(den > 0, num / den, torch.full_like(num, float("inf"))))
    return value
