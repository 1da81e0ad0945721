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
    num, den = torch.stack(((current.float() - prev).abs().mean(), prev.abs().mean())).tolist()
    return num / den if den > 0 else float("inf")
