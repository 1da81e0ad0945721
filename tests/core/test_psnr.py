"""``ditcache.core.metrics.psnr``: the one PSNR of the tools and of calibration, over all elements or per item."""

from __future__ import annotations

import math

import pytest
import torch

from ditcache.core.metrics import psnr


def test_psnr_follows_its_definition() -> None:
    ref = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    shifted = ref + 0.1  # MSE 0.01 over the data range 1 -> 20 dB
    assert psnr(shifted, ref) == pytest.approx(20.0, abs=1e-5)
    assert psnr(shifted, ref, data_range=2.0) == pytest.approx(20.0 + 20 * math.log10(2.0), abs=1e-5)
    assert psnr(ref, ref) == math.inf
    assert psnr(ref, ref, cap=120.0) == 120.0
    assert psnr(shifted.half(), ref.half()) == pytest.approx(20.0, abs=0.1)  # float64 inside, any input dtype


def test_psnr_per_item_uses_each_reference_range_when_none_is_given() -> None:
    ref = torch.stack([torch.linspace(0.0, 1.0, 100), torch.linspace(0.0, 4.0, 100)])
    noisy = ref.clone()
    noisy[:, 0] += 1.0  # MSE 1/100 on both items
    per_item = psnr(noisy, ref, None, per_item=True)
    assert per_item == pytest.approx([20.0, 20.0 + 20 * math.log10(4.0)])
    assert psnr(noisy, ref, 1.0, per_item=True) == pytest.approx([20.0, 20.0])
    assert psnr(ref, ref, per_item=True, cap=120.0) == [120.0, 120.0]
    assert psnr(noisy, ref, None, per_item=True, cap=25.0) == pytest.approx([20.0, 25.0])


@pytest.mark.parametrize(
    ("output", "kwargs", "match"),
    [
        (torch.zeros(2, 3), {}, r"output: shape \(2, 3\) differs from the reference's \(3, 3\)"),
        (torch.zeros(3, 3), {"data_range": 0.0}, r"data_range: expected a finite number > 0 or None, got 0.0"),
        (torch.zeros(3, 3), {"data_range": math.inf}, r"data_range"),
    ],
)
def test_psnr_refuses_bad_input(output: torch.Tensor, kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        psnr(output, torch.zeros(3, 3), **kwargs)
    with pytest.raises(ValueError, match=r"output: per_item needs a batch dimension"):
        psnr(torch.tensor(1.0), torch.tensor(1.0), per_item=True)
