"""``ditcache demo``: every cache on the bundled model, the table, the plots and the output-directory errors."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from ditcache import TeaCacheConfig
from ditcache.bundled import DigitsDiT, load_digits_dit
from ditcache.tools.cli import main
from ditcache.tools.demo import demo_methods, run_demo
from ditcache.tools.evaluation import EvalSettings, Method, ours
from ditcache.tools.output import check_output_dir

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _restore(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``main`` configures the ``ditcache`` logger and the demo sets torch's threads; put both back."""
    monkeypatch.setenv("COLUMNS", "200")  # rich: wide enough that no table cell wraps
    logger = logging.getLogger("ditcache")
    saved = (list(logger.handlers), logger.level, logger.propagate, torch.get_num_threads())
    yield
    logger.handlers[:] = saved[0]
    logger.setLevel(saved[1])
    logger.propagate = saved[2]
    torch.set_num_threads(saved[3])


@pytest.fixture(scope="module")
def model() -> DigitsDiT:
    torch.set_num_threads(1)
    return load_digits_dit()


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path.name} is not a PNG"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _table_rows(output: str) -> dict[str, list[str]]:
    rows = {}
    for line in output.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃]", line) if c.strip()]
        if len(cells) == 7:
            rows[cells[0]] = cells[1:]
    return rows


def test_demo_command_prints_table_and_writes_plots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--steps", "6", "--labels", "0,3", "--repeats", "1"]
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    rows = _table_rows(stdout)
    names = [m.name for m in demo_methods(out / "magcache_profile.json")]
    assert len(names) == 5 and all(name in rows for name in names)

    data = json.loads((out / "demo.json").read_text())
    results = {r["name"]: r for r in data["evaluation"]["results"]}
    assert list(results) == names
    assert data["evaluation"]["settings"]["num_steps"] == 6
    for name in names:
        r, cells = results[name], rows[name]
        assert r["error"] is None
        assert cells[0].startswith(f"{r['computed_steps']}/{2 * 6}")  # CFG: two calls per step
        assert cells[1] == f"{r['blocks_executed']}/{r['blocks_total']}"
        assert float(cells[3].rstrip("x")) == pytest.approx(r["speedup"], abs=0.006)
        assert r["max_abs_error"] is None or f"{r['max_abs_error']:.4f}" == cells[5]
        assert r["computed_steps"] + r["partial_steps"] + r["skipped_steps"] == 12
    # DBCache's cached steps run only its first block (Fn = 1); the stack computes at most what MagCache alone does.
    db = results["DBCache + TaylorSeer"]
    assert db["blocks_executed"] == 6 * db["computed_steps"] + db["partial_steps"]
    assert results["MagCache over DBCache"]["blocks_executed"] <= results["MagCache (calibrated)"]["blocks_executed"]

    profile = json.loads((out / "magcache_profile.json").read_text())
    assert set(profile["data"]["curves"]) == {"cond", "uncond"}
    width, height = _png_size(out / "samples.png")
    assert width > 0 and height > 0
    _png_size(out / "decisions.png")
    assert "Wrote samples.png, decisions.png, magcache_profile.json, demo.json" in stdout


def test_run_demo_grid_has_one_row_per_configuration(model: DigitsDiT, tmp_path: Path) -> None:
    settings = EvalSettings(labels=(1, 2, 3), num_steps=4, guidance_scale=None, repeats=1)

    def build(n: int) -> list[Method]:
        return [ours(f"tea {i}", TeaCacheConfig(rel_l1_thresh=0.1 * (i + 1), model="flux.1-dev")) for i in range(n)]

    heights = []
    for n in (1, 3):
        out = tmp_path / f"n{n}"
        out.mkdir()
        report = run_demo(out, settings, model=model, methods=lambda _path, n=n: build(n))
        assert [r.name for r in report.evaluation.results] == [m.name for m in build(n)]
        assert all(p.is_file() for p in report.files.values())
        heights.append(_png_size(out / "samples.png")[1])
    assert heights[1] > heights[0]  # two more rows of samples


def test_demo_runs_the_patches_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    argv = ["demo", "--model", "patches", "--out", str(out), "--steps", "4", "--labels", "5", "--repeats", "1"]
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    assert "patches model (diffusers QwenImageTransformer2DModel)" in stdout and "guidance 2," in stdout
    data = json.loads((out / "demo.json").read_text())
    settings = data["evaluation"]["settings"]
    assert settings["model"] == "patches" and settings["labels"] == [5] and settings["guidance_scale"] == 2.0
    results = data["evaluation"]["results"]
    assert [r["error"] for r in results] == [None] * len(demo_methods(out / "magcache_profile.json"))
    assert all(r["blocks_total"] == 4 * 4 * 2 for r in results)  # 4 dual-stream blocks, 4 steps, 2 branches
    # TeaCache resolves the Qwen-Image preset for the class, not FLUX.1-dev's
    assert "model" not in results[0]["params"]["teacache"]
    assert _png_size(out / "samples.png")[0] > 0


@pytest.mark.parametrize("kind", ["file", "under_file"])
def test_unwritable_output_directory_exits_2(tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    target = blocker if kind == "file" else blocker / "sub"
    assert main(["demo", "--out", str(target), "--steps", "2"]) == 2
    captured = capsys.readouterr()
    assert "argument --out" in captured.out
    assert str(target) in captured.out.replace("\n", "")
    assert check_output_dir(target) is not None
    assert check_output_dir(tmp_path / "fresh" / "deeper") is None
    assert (tmp_path / "fresh" / "deeper").is_dir()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--steps", "1"], "argument --steps: expected an integer in [2, 1000], got '1'"),
        (["--labels", "1,12"], "argument --labels: the digits model's labels are 0..9, got '1,12'"),
        (["--model", "patches", "--labels", "3,104"], "argument --labels: the patches model's labels are 0..103"),
        (["--labels", "a"], "argument --labels: expected comma-separated labels (ints >= 0), got 'a'"),
        (["--labels", "-1"], "argument --labels: expected comma-separated labels (ints >= 0), got '-1'"),
        (["--model", "faces"], "argument --model: invalid choice"),
        (["--guidance", "1"], "argument --guidance: expected a finite number > 1, got '1'"),
        (["--repeats", "0"], "argument --repeats: expected an integer in [1, 100], got '0'"),
        (["--threads", "0"], "argument --threads: expected an integer in [1, 256], got '0'"),
    ],
)
def test_bad_demo_arguments_exit_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", *argv]) == 2
    assert message in capsys.readouterr().err
