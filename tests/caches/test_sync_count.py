"""Host syncs per transformer call (a count, not a timing), measured with benchmarks/sync_count.py's counter."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest


def _bench() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "sync_count.py"
    spec = importlib.util.spec_from_file_location("sync_count_bench", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


BENCH = _bench()


@pytest.mark.parametrize(
    ("cache", "max_per_call"),
    [("none", 0.0), ("magcache", 0.0), ("teacache", 1.0), ("dbcache", 1.0)],
)
def test_syncs_per_call_when_the_pipeline_passes_the_step_index(cache: str, max_per_call: float) -> None:
    result = BENCH.measure(cache, steps=10, step_index=True)
    assert result["per_call"] <= max_per_call, result
    assert "equal" not in result["ops"], result  # the Flux RoPE memo compares no tensor values


@pytest.mark.parametrize(("cache", "max_per_call"), [("magcache", 1.0), ("teacache", 2.0), ("dbcache", 2.0)])
def test_syncs_per_call_without_a_step_index(cache: str, max_per_call: float) -> None:
    # The one extra read is the timestep, which the step clock needs to detect a new generation without a hint.
    result = BENCH.measure(cache, steps=10, step_index=False)
    assert result["per_call"] <= max_per_call, result
    assert "equal" not in result["ops"], result


@pytest.mark.parametrize(("cache", "max_per_call"), [("magcache", 0.0), ("teacache", 0.9), ("dbcache", 0.55)])
def test_syncs_per_call_when_a_pipeline_drives_the_generations(cache: str, max_per_call: float) -> None:
    # The pipeline says where each generation starts, so the step clock never reads the timestep: one sync per call
    # less than without it (20 steps: teacache 1.90 -> 0.90, magcache 1.00 -> 0.00, dbcache 1.55 -> 0.55).
    driven = BENCH.measure(cache, steps=20, driven=True)
    undriven = BENCH.measure(cache, steps=20)
    assert driven["per_call"] <= max_per_call, driven
    assert driven["per_call"] < undriven["per_call"], (driven, undriven)
    assert "equal" not in driven["ops"], driven


def test_the_counter_counts_scalar_reads_equal_and_tolist() -> None:
    import torch

    x = torch.ones(3)
    with BENCH.count_syncs() as counter:
        float(x.sum())
        torch.equal(x, x)
        x.tolist()
        bool(x.any())
    assert counter.count == 4


@pytest.mark.parametrize(("cache", "plain_cache"), [("teacache-rtol", "teacache"), ("magcache-rtol", "magcache")])
def test_rtol_adds_one_sync_per_measured_step(cache: str, plain_cache: str) -> None:
    # The measured error is one relative L1 (one .tolist()) on each computed step that could have been skipped.
    tolerant = BENCH.measure(cache, steps=20, driven=True)
    plain = BENCH.measure(plain_cache, steps=20, driven=True)
    measured = tolerant["ops"].get("tolist", 0) - plain["ops"].get("tolist", 0)
    assert 0 < measured <= 20 - tolerant["skipped_steps"], (tolerant, plain)
    assert "equal" not in tolerant["ops"] and "_local_scalar_dense" not in tolerant["ops"], tolerant
