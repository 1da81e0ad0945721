"""``ditcache calibrate`` (``ditcache.tools.calibrate_cmd``): user factories, the bundled model, the search, the
comparison with the borrowed preset, errors naming the argument, modules in the current directory, and the shipped
profiles a default name would hide."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from _support.calibration import restored_ditcache_logger, user_module_source
from ditcache import TeaCacheConfig, profiles
from ditcache.tools.cli import main


@pytest.fixture(autouse=True)
def _isolate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """A private profile directory (``tmp_path / "store"``), wide rich tables, and the ``ditcache`` logger
    restored after ``main`` configured it."""
    monkeypatch.setenv(profiles.PROFILE_DIR_ENV, str(tmp_path / "store"))
    monkeypatch.setenv("COLUMNS", "200")
    with restored_ditcache_logger():
        yield


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    pkg = tmp_path / "userpkg"
    pkg.mkdir()
    (pkg / "calib_models.py").write_text(user_module_source())
    monkeypatch.syspath_prepend(str(pkg))
    sys.modules.pop("calib_models", None)
    return "calib_models"


def test_cli_calibrates_a_user_factory(user_module: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "profiles"
    argv = ["calibrate", "--model", f"{user_module}:make", "--config", '{"seed": 1}', "--cfg", "2.5"]
    assert main([*argv, "--steps", "5", "--samples", "2", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "tiny-user" in text and "TeaCache fit" in text and "MagCache ratios" in text
    for role in ("pooled", "cond", "uncond"):
        row = next(line for line in text.splitlines() if re.match(rf"^│ {role} +│", line))
        assert re.search(r"│ 8 +│|│ 16 +│", row)  # points: 2 samples x 4 pairs per branch, 16 pooled
    tea = out / "tiny-user.teacache.json"
    assert tea.is_file() and (out / "tiny-user.magcache.json").is_file()
    stored = json.loads(tea.read_text())
    assert stored["model"] == "tiny-user" and stored["data"]["branches"]["cond"]["n"] == 8
    assert TeaCacheConfig(profile=tea).resolve(None).coefficients == tuple(stored["data"]["coefficients"])
    # a duck-typed object works too, and --name renames the profile
    assert main(["calibrate", "--model", f"{user_module}:duck", "--steps", "4", "--samples", "1"]) == 0
    assert main(["calibrate", "--model", f"{user_module}:duck", "--steps", "4", "--name", "renamed"]) == 0
    capsys.readouterr()
    assert {p.name for p in (tmp_path / "store").iterdir()} >= {
        "FluxTransformer2DModel.teacache.json",
        "renamed.teacache.json",
        "renamed.magcache.json",
    }
    assert TeaCacheConfig(profile="renamed").resolve(None).source.endswith("renamed.teacache.json")


def test_cli_bundled_model_with_evaluation(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    argv = ["calibrate", "--config", json.dumps({"labels": [3]}), "--steps", "5", "--samples", "1"]
    assert main([*argv, "--evaluate", "0.1,1e9", "--eval-samples", "1", "--out", str(tmp_path / "o")]) == 0
    text = capsys.readouterr().out
    assert "digits-dit" in text and "held out" in text
    rows = [line for line in text.splitlines() if "borrowed flux.1-dev" in line or "│ calibrated" in line]
    assert len(rows) == 4
    assert (tmp_path / "o" / "digits-dit.teacache.json").is_file()


def test_cli_search_method(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    argv = ["calibrate", "--config", json.dumps({"labels": [3]}), "--steps", "10", "--samples", "2", "--cfg", "3"]
    search = ["--method", "search", "--search-budget", "2", "--search-samples", "1", "--search-fractions", "0.3,0.5"]
    assert main([*argv, *search, "--evaluate", "0.5", "--eval-samples", "1", "--out", str(tmp_path / "o")]) == 0
    text = capsys.readouterr().out
    assert "TeaCache coefficient search" in text and "Threshold table" in text
    assert re.search(r"candidate 1/2 constant 1: PSNR [\d.]+, [\d.]+ dB at computed fractions 0\.3, 0\.5", text)
    assert "candidate 2/2 regression" in text
    stored = json.loads((tmp_path / "o" / "digits-dit.teacache.json").read_text())
    data = stored["data"]
    assert data["method"] == "search" and data["search"]["budget"] == 2 and data["search"]["seeds"] == [0]
    assert [c["label"] for c in data["search"]["candidates"]] == ["constant 1", "regression"]
    assert f"chosen: {data['search']['chosen']}" in text
    suggested = re.search(r"rel_l1_thresh=([\d.e+-]+)\)", text)
    assert suggested and float(suggested.group(1)) in {row["threshold"] for row in data["thresholds"]}
    # --evaluate: the borrowed preset at the given threshold, the profile at its own table's thresholds
    rows = [line for line in text.splitlines() if "│ calibrated" in line]
    assert (
        len(rows) == len(data["thresholds"]) and sum("borrowed flux.1-dev" in line for line in text.splitlines()) == 1
    )


@pytest.mark.parametrize(
    ("args", "argument", "message"),
    [
        (["--model", "no_colon"], "--model", "expected an import path 'package.module:factory'"),
        (["--model", "no_such_module_xyz:f"], "--model", "cannot import module 'no_such_module_xyz'"),
        (["--model", "{mod}:missing"], "--model", "has no attribute 'missing'"),
        (["--model", "{mod}:NOT_CALLABLE"], "--model", "is not callable"),
        (
            ["--model", "{mod}:not_a_target"],
            "--model",
            "returned a int; expected a ditcache.calibration.CalibrationTarget",
        ),
        (["--model", "{mod}:no_extractor"], "--model", "no extractor is registered for Linear"),
        (["--model", "{mod}:strict", "--config", '{"colour": 1}'], "--config", "does not accept"),
        (["--model", "{mod}:strict", "--cfg", "2"], "--cfg", "does not accept guidance_scale"),
        (["--config", "{not json"], "--config", "is not valid JSON"),
        (["--config", "[1, 2]"], "--config", "expected a JSON object of keyword arguments for the factory, got list"),
        (["--config", "@{tmp}/missing.json"], "--config", "cannot read"),
        (["--config", '{"guidance_scale": 2}', "--cfg", "3"], "--cfg", "conflicts with guidance_scale=2"),
        (["--out", "{tmp}/file.txt/sub"], "--out", "cannot write to"),
        (["--name", "bad name"], "--name", "not a valid profile name"),
        (["--name", "x/y"], "--name", "expected a profile name, not a path"),
        (["--method", "search", "--search-samples", "2"], "--search-samples", "2 exceeds --samples (1)"),
        (
            ["--method", "search", "--search-samples", "1", "--model", "{mod}:silent"],
            "--method",
            "target.run: must return the output tensor",
        ),
    ],
)
def test_cli_errors_exit_2_naming_the_argument(
    args: list[str],
    argument: str,
    message: str,
    user_module: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "file.txt").write_text("x")
    argv = [a.replace("{mod}", user_module).replace("{tmp}", str(tmp_path)) for a in args]
    assert main(["calibrate", *argv, "--steps", "3", "--samples", "1"]) == 2
    err = capsys.readouterr().err
    assert "usage: ditcache calibrate" in err
    assert f"error: {argument}: " in err and message in err, err
    assert not any((tmp_path / "store").glob("*.json"))


def test_cli_evaluate_needs_an_output_tensor(
    user_module: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["calibrate", "--model", f"{user_module}:silent", "--steps", "5", "--samples", "1", "--evaluate", "0.1"]
    assert main([*argv, "--out", str(tmp_path / "o")]) == 2
    assert "error: --evaluate: target.run: must return the output tensor" in capsys.readouterr().err
    assert (tmp_path / "o" / "tiny-user.teacache.json").is_file()  # the profiles were written first


@pytest.mark.parametrize(
    "args",
    [
        ["--steps", "1"],
        ["--samples", "0"],
        ["--cfg", "-1"],
        ["--evaluate", "0.1,x"],
        ["--method", "grid"],
        ["--search-budget", "0"],
        ["--search-fractions", "0.2,1"],
    ],
)
def test_cli_bad_numbers_exit_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["calibrate", *args]) == 2
    assert args[0] in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ issue 10, item 15
def test_cli_finds_a_module_in_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "calib_here.py").write_text(user_module_source())
    monkeypatch.chdir(project)
    # The `ditcache` console script starts with its own bin directory on sys.path, not the current directory
    # (unlike `python -m`): emulate that.
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", os.getcwd())])
    sys.modules.pop("calib_here", None)
    argv = ["calibrate", "--model", "calib_here:make", "--steps", "4", "--samples", "1", "--no-compare"]
    assert main([*argv, "--out", str(tmp_path / "o")]) == 0, capsys.readouterr().err
    assert (tmp_path / "o" / "tiny-user.teacache.json").is_file()
    assert Path(sys.modules["calib_here"].__file__ or "").parent == project


def test_cli_bare_calibrate_refuses_to_hide_the_shipped_profile(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store"
    assert (profiles.bundled_profile_dir() / "digits-dit.teacache.json").is_file()
    quick = ["--config", json.dumps({"labels": [3]}), "--steps", "4", "--samples", "1", "--no-compare"]
    assert main(["calibrate", *quick]) == 2
    err = capsys.readouterr().err
    assert "error: --name: 'digits-dit' is the name of a profile shipped with ditcache" in err
    assert "Pass --name NAME" in err and "--out DIR" in err
    assert not any(store.glob("*.json"))
    before = TeaCacheConfig(profile="digits-dit").resolve(None)
    assert "bundled" in before.source
    # Another name, or the shipped name given explicitly: written, and the second says what it hides
    assert main(["calibrate", *quick, "--name", "mine"]) == 0
    assert "hides the shipped profile" not in capsys.readouterr().out
    assert (store / "mine.teacache.json").is_file()
    assert main(["calibrate", *quick, "--name", "digits-dit"]) == 0
    out = capsys.readouterr().out
    assert "note: the profile directory now holds 'digits-dit', which hides the shipped profile" in out
    assert TeaCacheConfig(profile="digits-dit").resolve(None).source == f"profile {store / 'digits-dit.teacache.json'}"


def test_cli_warns_when_the_fit_caches_worse_than_the_borrowed_preset(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    argv = ["calibrate", "--config", json.dumps({"labels": [3]}), "--steps", "12", "--samples", "1"]
    assert main([*argv, "--search-fractions", "0.3,0.5", "--out", str(tmp_path / "o")]) == 0
    captured = capsys.readouterr()
    stored = json.loads((tmp_path / "o" / "digits-dit.teacache.json").read_text())["data"]["borrowed_comparison"]
    assert stored["preset"] == "flux.1-dev" and stored["fractions"] == [0.3, 0.5] and stored["seeds"] == [0]
    assert stored["worse"] and stored["fitted_objective"] < stored["borrowed_objective"]
    line = f"fitted {stored['fitted_objective']:.2f} dB, borrowed {stored['borrowed_objective']:.2f} dB"
    assert "compared with the borrowed preset flux.1-dev (seed 0, mean PSNR at computed fractions 0.3, 0.5)" in (
        captured.out
    )
    assert line in captured.out
    assert "warning: the fitted coefficients cache worse than those of the preset flux.1-dev" in captured.out
    assert "calibrate.fit_worse_than_borrowed" in captured.err  # the structlog event, rendered on stderr
    # --no-compare: no comparison, no warning
    assert main([*argv, "--no-compare", "--out", str(tmp_path / "p")]) == 0
    captured = capsys.readouterr()
    assert "compared with the borrowed preset" not in captured.out and "fit_worse" not in captured.err
    assert "borrowed_comparison" not in json.loads((tmp_path / "p" / "digits-dit.teacache.json").read_text())["data"]
