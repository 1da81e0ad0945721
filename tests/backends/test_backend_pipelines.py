"""Every serving backend on real diffusers pipelines (tiny random components, precomputed prompt embeddings).

For each backend (TeaCache, MagCache, cache-dit, the ditcache stack) and pipeline (FluxPipeline,
QwenImagePipeline with true CFG, WanPipeline with two experts split at ``boundary_ratio``, WanPipeline with one):

* a never-skipping config gives exactly the uncached output, with several images per prompt;
* a permissive config skips steps (counted from the backend's own statistics) and changes the output;
* a sequence of requests with different step counts and prompts gives, for each request, exactly what a freshly
  enabled backend gives for that request alone;
* ``disable`` restores the pipeline exactly (same output, no hook left).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from _support.pipelines import BUILDERS, TinyPipeline
from ditcache.backends import CacheBackend, get_cache_backend
from ditcache.core.hooks import HookRegistry

IDENTITY = [0.0, 0.0, 0.0, 1.0, 0.0]  # TeaCache rescale(x) = x

NEVER_SKIP: dict[str, dict[str, Any]] = {
    "tea_cache": {"rel_l1_thresh": 1e-9, "coefficients": IDENTITY},
    "mag_cache": {"mag_threshold": 1e-9, "mag_ratios": [2.0] * 10},
    "cache_dit": {"residual_diff_threshold": 0.0},
    "ditcache": {"rel_l1_thresh": 1e-9, "coefficients": IDENTITY, "residual_diff_threshold": 0.0},
}
SKIPPING: dict[str, dict[str, Any]] = {
    "tea_cache": {"rel_l1_thresh": 2.0, "coefficients": IDENTITY},
    "mag_cache": {"mag_threshold": 0.5, "mag_retention_ratio": 0.2, "mag_max_skip_steps": 3},
    "cache_dit": {"residual_diff_threshold": 0.9, "max_warmup_steps": 1},
    "ditcache": {
        "ditcache_stack": ["tea_cache", "db_cache"],
        "rel_l1_thresh": 0.3,
        "coefficients": IDENTITY,
        "residual_diff_threshold": 0.9,
        "max_warmup_steps": 1,
    },
}
BACKENDS = list(NEVER_SKIP)
PIPELINES = list(BUILDERS)


@functools.cache
def _pipeline(name: str) -> TinyPipeline:
    return BUILDERS[name]()


@functools.cache
def _uncached(name: str, steps: int, prompt: int, images: int) -> torch.Tensor:
    tp = _pipeline(name)
    assert not _has_cache(tp), "an earlier test left a cache on the pipeline"
    return tp.run(steps, prompt, images)


def _has_cache(tp: TinyPipeline) -> bool:
    for attr in tp.transformers:
        module = getattr(tp.pipe, attr)
        if HookRegistry.get(module) is not None and len(HookRegistry.get(module)) > 0:  # type: ignore[arg-type]
            return True
        if getattr(module, "_is_cached", False) or "forward" in module.__dict__:
            return True
    return False


@pytest.fixture
def enabled(request: pytest.FixtureRequest) -> Iterator[Any]:
    """``enable(backend_name, config, pipeline_name) -> (backend, tiny_pipeline)``; disabled after the test."""
    made: list[tuple[CacheBackend, TinyPipeline]] = []

    def enable(backend: str, config: dict[str, Any], pipeline: str) -> tuple[CacheBackend, TinyPipeline]:
        tp = _pipeline(pipeline)
        b = get_cache_backend(backend, config)
        assert b is not None
        b.enable(tp.pipe)
        made.append((b, tp))
        return b, tp

    yield enable
    for b, tp in made:
        b.disable(tp.pipe)


def _request(backend: CacheBackend, tp: TinyPipeline, steps: int, prompt: int = 0, images: int = 1) -> torch.Tensor:
    backend.refresh(tp.pipe, steps, verbose=False)
    return tp.run(steps, prompt, images)


def skipped_steps(backend: CacheBackend, tp: TinyPipeline) -> int:
    """How many (step, branch) decisions of the last request reused a cache, from the backend's statistics."""
    stats = backend.stats(tp.pipe) if backend.name == "cache_dit" else backend.stats()  # type: ignore[attr-defined]
    total = 0
    for per_module in stats.values():
        if backend.name == "cache_dit":
            last = per_module[-1]
            total += len(last.cached_steps or []) + len(last.cfg_cached_steps or [])
        else:
            for generations in per_module.values():
                total += sum(len(g.skipped_steps) for g in generations)
    return total


@pytest.mark.parametrize("pipeline", PIPELINES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_never_skipping_equals_uncached(enabled: Any, backend: str, pipeline: str) -> None:
    ref = _uncached(pipeline, 6, 0, 2)
    b, tp = enabled(backend, NEVER_SKIP[backend], pipeline)
    assert b.is_enabled() is True and b.enabled is True
    out = _request(b, tp, 6, 0, images=2)
    assert out.shape[0] == 2
    assert skipped_steps(b, tp) == 0
    assert torch.equal(out, ref)


@pytest.mark.parametrize("pipeline", PIPELINES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_skips_steps_and_requests_equal_fresh_runs(enabled: Any, backend: str, pipeline: str) -> None:
    uncached = _uncached(pipeline, 8, 0, 1)
    b, tp = enabled(backend, SKIPPING[backend], pipeline)
    requests = [(8, 0), (5, 1), (8, 1)]
    outputs = []
    for steps, prompt in requests:
        outputs.append(_request(b, tp, steps, prompt))
        if steps == 8:
            assert skipped_steps(b, tp) > 0, f"{backend} skipped nothing on {pipeline}"
    assert not torch.equal(outputs[0], uncached)
    assert b._last_num_inference_steps == 8  # type: ignore[attr-defined]
    b.disable(tp.pipe)
    assert not b.is_enabled()
    for (steps, prompt), out in zip(requests, outputs, strict=True):
        fresh = get_cache_backend(backend, SKIPPING[backend])
        assert fresh is not None
        fresh.enable(tp.pipe)
        try:
            expected = _request(fresh, tp, steps, prompt)
        finally:
            fresh.disable(tp.pipe)
        assert torch.equal(out, expected), f"request {steps} steps, prompt {prompt} differs from a fresh run"


@pytest.mark.parametrize("pipeline", PIPELINES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_disable_restores_exactly(backend: str, pipeline: str) -> None:
    tp = _pipeline(pipeline)
    ref = _uncached(pipeline, 5, 2, 1)
    b = get_cache_backend(backend, SKIPPING[backend])
    assert b is not None
    b.enable(tp.pipe)
    assert _has_cache(tp)
    cached = _request(b, tp, 5, 2)
    b.disable(tp.pipe)
    assert not b.is_enabled()
    assert not _has_cache(tp)
    assert torch.equal(tp.run(5, 2, 1), ref)
    assert cached.shape == ref.shape
