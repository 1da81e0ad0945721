"""``ditcache.calibration.recorder``: the calibrator records points per branch and role, fits them and writes a
profile."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ditcache
from _support.calibration import TINY_FLUX, tiny_loop
from ditcache.calibration import TeaCacheCalibrator


def test_calibrator_records_auto_branches_by_order_and_fits_blocks() -> None:
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    model = FluxTransformer2DModel(**TINY_FLUX).eval()
    calibrator = ditcache.apply_cache(model, TeaCacheCalibrator(fit_on="blocks"))
    ditcache.refresh(model, 6)
    tiny_loop(model, 6, seed=0)  # cond then uncond calls, branches not named
    assert calibrator.roles() == ["cond", "uncond"]
    assert [s.role for s in calibrator.series] == ["cond", "uncond"]
    x, y = calibrator.points()
    assert x.size == y.size == 10
    assert set(calibrator.fit()) == {"pooled", "cond", "uncond"}
    profile = calibrator.profile(model="tiny")
    assert profile.data["fit_on"] == "blocks" and profile.data["generations"] == 2
    assert profile.metadata["module_class"] == "FluxTransformer2DModel"
    _, y_output = calibrator.points(fit_on="output")
    assert not np.array_equal(y, y_output)
    calibrator.clear()
    with pytest.raises(ValueError, match="no calibration points"):
        calibrator.fit()
    with pytest.raises(ValueError, match=r"fit_on: expected one of \['output', 'blocks'\]"):
        TeaCacheCalibrator(fit_on="velocity")
