"""``ditcache.calibration.target``: targets refuse bad fields, and import paths name the argument in their errors
and are found in a given directory."""

from __future__ import annotations

import pytest
import torch

from ditcache.calibration import CalibrationError, CalibrationTarget, load_target


def test_load_target_errors_name_the_argument() -> None:
    with pytest.raises(CalibrationError, match=r"^model: ") as info:
        load_target("nope")
    assert info.value.argument == "model"
    with pytest.raises(ValueError, match=r"CalibrationTarget\.name: expected a profile name"):
        CalibrationTarget(transformer=torch.nn.Linear(1, 1), run=print, name="a/b")
    with pytest.raises(TypeError, match=r"CalibrationTarget\.run: expected a callable"):
        CalibrationTarget(transformer=torch.nn.Linear(1, 1), run=3)  # type: ignore[arg-type]
