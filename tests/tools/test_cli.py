"""The ``ditcache`` command line: ``info``, argument errors, help, the script and ``python -m``.

The ``demo`` and ``bench`` commands have their own test files (test_demo.py, test_bench.py).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import entry_points

import pytest

import ditcache
from ditcache.presets import MAG_RATIO_PRESETS, TEACACHE_PRESETS
from ditcache.tools.cli import main


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


def test_info_lists_extractors_and_presets(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "FluxTransformer2DModel" in out
    for key, preset in TEACACHE_PRESETS.items():
        assert key in out
        assert preset.source in out
    assert "MagCache magnitude-ratio presets" in out
    for key, mag in MAG_RATIO_PRESETS.items():
        assert f"  {key}\n" in out
        assert f"source: {mag.source}" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["demo", "--steps", "0"], "argument --steps: expected an integer in [2, 1000], got '0'"),
        (["demo", "--steps", "ten"], "argument --steps: expected an integer in [2, 1000], got 'ten'"),
        (["demo", "--guidance", "-1"], "argument --guidance: expected a finite number > 1, got '-1'"),
        (["demo", "--guidance", "nan"], "argument --guidance: expected a finite number > 1, got 'nan'"),
        (["demo", "--seed", "-3"], "argument --seed: expected an integer in [0, 2147483647], got '-3'"),
        (["bench", "--quick"], "the following arguments are required: --out"),
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
    assert "--out" in out and "--steps" in out and "--guidance" in out and "--seed" in out
    assert main(["bench", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--out" in out and "--quick" in out and "--no-peers" in out
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
