"""ditcache.core.metrics.rel_l1: the relative L1 distance every threshold-based cache decides on."""

from __future__ import annotations

import math

import torch

from ditcache.core.metrics import rel_l1


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
