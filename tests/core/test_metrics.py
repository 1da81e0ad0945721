"""ditcache.core.metrics.rel_l1: the relative L1 distance every threshold-based cache decides on."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ditcache.core.metrics import rel_l1, residual_metrics


def test_rel_l1_uses_the_previous_tensor_as_denominator() -> None:
    prev = torch.tensor([[1.0, -2.0], [3.0, -4.0]])
    cur = prev + torch.tensor([[0.5, 0.5], [-0.5, 0.5]])
    assert math.isclose(rel_l1(cur, prev), 0.5 / 2.5, rel_tol=1e-7)
    assert math.isclose(rel_l1(prev, cur), 0.5 / ((1.5 + 1.5 + 2.5 + 3.5) / 4), rel_tol=1e-7)  # not symmetric


def test_rel_l1_is_zero_for_equal_tensors_and_inf_against_zeros() -> None:
    x = torch.randn(3, 5)
    assert rel_l1(x, x.clone()) == 0.0
    assert rel_l1(x, torch.zeros_like(x)) == math.inf


def test_rel_l1_computes_in_float32_for_half_inputs() -> None:
    prev = torch.full((4,), 1000.0, dtype=torch.bfloat16)
    cur = prev + 8  # exactly representable in bfloat16
    assert math.isclose(rel_l1(cur, prev), 8 / 1000, rel_tol=1e-6)


class _LargestFloat32(TorchDispatchMode):
    """Records the element count of the largest float32 tensor any aten op creates."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.dtype == torch.float32:
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_inputs_make_no_full_size_float32_temporary(dtype: torch.dtype) -> None:
    # Issue 10: a scalar decision metric must not upcast a whole activation (2**22 elements here).
    torch.manual_seed(0)
    prev = torch.randn(4, 1024, 1024).to(dtype)
    cur = (prev.float() + 0.1 * torch.randn(4, 1024, 1024)).to(dtype)
    with _LargestFloat32() as probe:
        got = rel_l1(cur, prev)
    assert 0 < probe.largest <= 1 << 20
    expected = ((cur.double() - prev.double()).abs().mean() / prev.double().abs().mean()).item()
    assert math.isclose(got, expected, rel_tol=1e-4)
    with _LargestFloat32() as probe:  # the float32 path is unchanged (it needs no upcast)
        rel_l1(cur.float(), prev.float())
    assert probe.largest == prev.numel()


def test_residual_metrics_moved_here_and_still_exported_by_magcache() -> None:
    from ditcache.caches import magcache

    assert magcache.residual_metrics is residual_metrics
    r = torch.ones(2, 3, 4)
    assert residual_metrics(2 * r, r) == pytest.approx((2.0, 0.0, 0.0))
