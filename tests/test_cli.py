"""The ``ditcache`` command line: ``demo``, ``info``, argument errors, the script and ``python -m``."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import entry_points

import pytest

import ditcache
from ditcache import TEACACHE_PRESETS
from ditcache.cli import main, run_demo


@pytest.fixture(autouse=True)
def _restore_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``main`` configures the ``ditcache`` logger; put it back so other tests see the default setup."""
    monkeypatch.setenv("COLUMNS", "200")  # rich: wide enough that no cell of the tables wraps
    logger = logging.getLogger("ditcache")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:] = saved[0]
    logger.setLevel(saved[1])
    logger.propagate = saved[2]


def _row(output: str, label: str) -> str:
    """The value cell of the table row whose first cell starts with ``label``."""
    for line in output.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃]", line) if c.strip()]
        if len(cells) >= 2 and cells[0] == label:
            return cells[1]
    raise AssertionError(f"no table row {label!r} in:\n{output}")


def test_demo_prints_table_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    steps = 6
    assert main(["demo", "--steps", str(steps), "--repeats", "1", "--threshold", "0.6"]) == 0
    out = capsys.readouterr().out
    assert "random weights" in out
    computed, skipped = (int(n) for n in _row(out, "steps computed / skipped").split("/"))
    assert computed + skipped == steps
    indices = _row(out, "skipped step indices")
    listed = [] if indices == "none" else [int(i) for i in indices.split(",")]
    assert len(listed) == skipped
    # The first step (warm-up) and the last step (the step count is known) are never skipped.
    assert all(0 < i < steps - 1 for i in listed)
    assert float(_row(out, "measured speed-up").rstrip("x")) > 0
    bound = float(_row(out, "skipped-step bound (steps / computed)").rstrip("x"))
    assert bound == pytest.approx(steps / computed, abs=0.005)
    assert float(_row(out, "max abs error (final latent)")) >= 0
    assert float(_row(out, "relative L1 error (final latent)")) >= 0


def test_demo_never_skipping_threshold_is_exact() -> None:
    # FLUX.1-dev's polynomial is ~0.26 near 0, so the accumulated distance exceeds 1e-6 on every step.
    result = run_demo(steps=4, threshold=1e-6, repeats=1)
    assert result.skipped_steps == []
    assert result.computed_steps == [0, 1, 2, 3]
    assert result.max_abs_error == 0.0 and result.rel_l1_error == 0.0


def test_demo_huge_threshold_skips_all_but_first_and_last() -> None:
    steps = 5
    result = run_demo(steps=steps, threshold=1e9, repeats=1)
    assert result.computed_steps == [0, steps - 1]
    assert result.skipped_steps == list(range(1, steps - 1))
    assert result.max_abs_error > 0
    assert result.speedup > 0


@pytest.mark.parametrize("kwargs", [{"steps": 1}, {"repeats": 0}, {"seed": -1}, {"steps": 2.5}])
def test_run_demo_refuses_bad_values(kwargs: dict[str, object]) -> None:
    (name,) = kwargs
    with pytest.raises(ValueError, match=f"^{name}: expected an int >= "):
        run_demo(**kwargs)  # type: ignore[arg-type]


def test_info_lists_extractors_and_presets(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "FluxTransformer2DModel" in out
    for key, preset in TEACACHE_PRESETS.items():
        assert key in out
        assert preset.source in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["demo", "--steps", "0"], "argument --steps: expected an integer in [2, 1000], got '0'"),
        (["demo", "--steps", "ten"], "argument --steps: expected an integer in [2, 1000], got 'ten'"),
        (["demo", "--threshold", "-1"], "argument --threshold: expected a finite number > 0, got '-1'"),
        (["demo", "--threshold", "nan"], "argument --threshold: expected a finite number > 0, got 'nan'"),
        (["demo", "--seed", "-3"], "argument --seed: expected an integer >= 0, got '-3'"),
        (["demo", "--bogus"], "unrecognized arguments: --bogus"),
        (["--log-level", "loud", "info"], "argument --log-level: invalid choice: 'loud'"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        ([], "the following arguments are required: COMMAND"),
    ],
)
def test_bad_arguments_exit_2_with_message(
    argv: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert message in captured.err
    assert "usage: ditcache" in captured.err
    assert captured.out == ""


def test_help_and_version_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--steps" in out and "--threshold" in out and "--seed" in out
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"ditcache {ditcache.__version__}"


def test_console_script_points_at_main() -> None:
    (ep,) = [ep for ep in entry_points(group="console_scripts") if ep.name == "ditcache"]
    assert ep.load() is main


def test_python_dash_m_propagates_exit_status(tmp_path: os.PathLike[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    bad = subprocess.run(
        [sys.executable, "-m", "ditcache", "demo", "--steps", "1"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2
    assert "argument --steps" in bad.stderr
