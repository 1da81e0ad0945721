"""``ditcache.calibration.target``: targets refuse bad fields, and import paths name the argument in their errors
and are found in a given directory."""

from __future__ import annotations

import sys
from pathlib import Path

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


def test_load_target_imports_from_the_given_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "here_target.py").write_text(
        "from ditcache.calibration import digits_dit_target\n\n"
        "def make(labels=(3,)):\n"
        "    return digits_dit_target(labels=labels)\n"
    )
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(tmp_path))])
    sys.modules.pop("here_target", None)
    with pytest.raises(CalibrationError, match=r"^model: cannot import module 'here_target'"):
        load_target("here_target:make")
    target = load_target("here_target:make", {"labels": [4]}, directory=tmp_path)
    assert target.name == "digits-dit" and target.metadata["labels"] == [4]
    assert sys.path[0] == str(tmp_path.resolve())
