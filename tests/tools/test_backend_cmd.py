"""``ditcache backend``: a bundled model served through each serving backend, requests of different step counts."""

from __future__ import annotations

import pytest

from ditcache.tools.backend_cmd import run_backend
from ditcache.tools.cli import main


@pytest.mark.parametrize(
    ("name", "config"),
    [
        ("tea_cache", {"rel_l1_thresh": 0.3}),
        ("mag_cache", {}),
        ("ditcache", {"ditcache_stack": ["tea_cache"], "rel_l1_thresh": 0.3}),
    ],
)
def test_each_request_skips_blocks_and_stays_close(name: str, config: dict[str, object]) -> None:
    results = run_backend(name, config, "digits", [8, 12])
    assert [r["steps"] for r in results] == [8, 12]
    assert all(r["calls"] == 2 * r["steps"] for r in results)  # cond + uncond each step
    assert any(r["blocks_run_fraction"] < 1.0 for r in results)
    assert all(r["psnr_db"] > 20.0 for r in results)


def test_the_none_backend_equals_the_uncached_model() -> None:
    (result,) = run_backend("none", {}, "digits", [6])
    assert result["blocks_run_fraction"] == 1.0 and result["psnr_db"] == 99.0  # identical (capped PSNR)


def test_command_line_refuses_a_non_object_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backend", "--cache-backend", "tea_cache", "--cache-config", "[1, 2]"]) == 2
    assert "expected a JSON object" in capsys.readouterr().err


def test_the_patches_model_counts_its_qwen_image_blocks() -> None:
    (none,) = run_backend("none", {}, "patches", [4])
    assert none["blocks_run_fraction"] == 1.0 and none["psnr_db"] == 99.0
    (cached,) = run_backend("tea_cache", {"rel_l1_thresh": 1e9}, "patches", [6])
    assert cached["blocks_run_fraction"] < 1.0


def test_command_line_refuses_invalid_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backend", "--cache-backend", "tea_cache", "--cache-config", "{not json"]) == 2
    err = capsys.readouterr().err
    assert "is not valid JSON" in err and "expected a JSON object" in err
