"""The pipeline entry point (ditcache.apply_cache_to_pipeline): each ``pipe(...)`` call is one generation.

Proves, on real tiny diffusers pipelines (FluxPipeline with true CFG, FluxImg2ImgPipeline) built from random
components with precomputed prompt embeddings: every call of a cached pipeline equals, bit for bit and decision for
decision, the same call on a freshly built and freshly cached pipeline, whatever ran before (other step counts, an
interrupted call, a lower img2img strength); and nothing is patched on the pipeline, its class or its scheduler.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from diffusers import FluxImg2ImgPipeline, FluxPipeline

import ditcache
from _support.flux_pipelines import make_flux_pipeline, run_pipeline
from ditcache.core.cache import CacheMiddleware, StepDecision
from ditcache.core.hooks import HookRegistry

CONFIGS: dict[str, Any] = {
    "teacache": ditcache.TeaCacheConfig(rel_l1_thresh=0.6, model="flux.1-dev"),
    "magcache": ditcache.MagCacheConfig(threshold=0.5, max_skip_steps=3, retention_ratio=0.1, model="flux.1-dev"),
    "dbcache": ditcache.DBCacheConfig(
        fn_compute_blocks=1, bn_compute_blocks=0, residual_diff_threshold=0.5, max_warmup_steps=1
    ),
}

Call = dict[str, Any]


def _interrupt_at(step: int) -> Any:
    def callback(pipe: Any, i: int, t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        if i + 1 == step:
            pipe._interrupt = True
        return {}

    return callback


def _decisions(caches: list[CacheMiddleware[Any]], since: list[int]) -> list[list[StepDecision]]:
    return [[s.decisions for s in c.stats()[n:]] for c, n in zip(caches, since, strict=True)]  # type: ignore[misc]


def _fresh(img2img: bool, config: Any, call: Call) -> tuple[torch.Tensor, list[list[StepDecision]]]:
    pipe = make_flux_pipeline(img2img=img2img)
    caches = ditcache.apply_cache_to_pipeline(pipe, config)["transformer"]
    out = run_pipeline(pipe, **call)
    return out, _decisions(caches, [0] * len(caches))


def _check_sequence(img2img: bool, config: Any, calls: list[Call]) -> None:
    pipe = make_flux_pipeline(img2img=img2img)
    caches = ditcache.apply_cache_to_pipeline(pipe, config)["transformer"]
    skipped = 0
    for call in calls:
        before = [len(c.stats()) for c in caches]
        out = run_pipeline(pipe, **call)
        decisions = _decisions(caches, before)
        if "callback_on_step_end" in call:
            continue  # an interrupted call has no fresh equivalent; what matters is the next call
        ref_out, ref_decisions = _fresh(img2img, config, call)
        assert decisions == ref_decisions, call
        assert torch.equal(out, ref_out), call
        skipped += sum(not d.computed for per_cache in decisions for gen in per_cache for d in gen)
    assert skipped > 0  # the configs do cache, so a carried-over state would show


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_each_flux_call_equals_a_fresh_cached_run(name: str, one_thread: None) -> None:
    calls: list[Call] = [
        {"steps": 6},
        {"steps": 9, "seed": 4},  # longer: one generation, not 6 + 3
        {"steps": 4},  # shorter: no stale count of 9
        {"steps": 8, "callback_on_step_end": _interrupt_at(3)},  # interrupted after 3 steps
        {"steps": 7, "seed": 5},
    ]
    _check_sequence(False, CONFIGS[name], calls)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_each_img2img_call_equals_a_fresh_cached_run(name: str, one_thread: None) -> None:
    calls: list[Call] = [
        {"steps": 8, "strength": 0.9},
        {"steps": 8, "strength": 0.9, "callback_on_step_end": _interrupt_at(3)},  # stops near 0.55
        {"steps": 10, "strength": 0.4},  # starts lower than the interrupted call stopped
        {"steps": 6, "strength": 0.75, "seed": 4},
    ]
    _check_sequence(True, CONFIGS[name], calls)


def test_the_step_count_comes_from_each_call(one_thread: None) -> None:
    pipe = make_flux_pipeline(img2img=True)
    (cache,) = ditcache.apply_cache_to_pipeline(pipe, CONFIGS["teacache"])["transformer"]
    runtime = ditcache.get_cache_runtime(pipe.transformer)
    assert runtime is not None
    for steps, strength, calls in [(8, 1.0, 8), (8, 0.5, 4), (10, 0.3, 3), (5, 0.7, 4)]:
        before = len(cache.stats())
        run_pipeline(pipe, steps, strength=strength)
        gens = cache.stats()[before:]
        # one generation per CFG branch, each bounded by the call's own count, and ended (its tensors dropped)
        assert [len(g.decisions) for g in gens] == [calls, calls]
        assert [g.decisions[-1].computed for g in gens] == [True, True]  # the known last step is forced
        assert cache._slots == {} and runtime.clock.open_generations() == []


def test_nothing_is_patched_and_remove_restores(one_thread: None) -> None:
    pipe = make_flux_pipeline()
    other = make_flux_pipeline()
    call_before = FluxPipeline.__call__
    forward = pipe.transformer.forward
    ref = run_pipeline(other, 5)

    applied = ditcache.apply_cache_to_pipeline(pipe, CONFIGS["dbcache"])
    assert list(applied) == ["transformer"]
    assert FluxPipeline.__call__ is call_before and FluxImg2ImgPipeline.__call__ is not call_before
    assert "__call__" not in pipe.__dict__ and "set_timesteps" not in pipe.scheduler.__dict__
    run_pipeline(pipe, 5)
    assert HookRegistry.get(other.transformer) is None  # the other instance is untouched
    assert torch.equal(run_pipeline(other, 5), ref)

    removed = ditcache.remove_cache_from_pipeline(pipe)
    assert [c.name for c in removed] == ["dbcache"]
    assert HookRegistry.get(pipe.transformer) is None and pipe.transformer.forward == forward
    # what is left on the instance and its scheduler is what an uncached call leaves
    assert set(pipe.__dict__) == set(other.__dict__) and set(pipe.scheduler.__dict__) == set(other.scheduler.__dict__)
    assert torch.equal(run_pipeline(pipe, 5), ref)  # same seed-0 components: uncached again


def test_bad_arguments_are_refused_naming_the_field() -> None:
    pipe = make_flux_pipeline()
    with pytest.raises(TypeError, match=r"config: expected a TeaCacheConfig, MagCacheConfig or DBCacheConfig"):
        ditcache.apply_cache_to_pipeline(pipe, {"rel_l1_thresh": 0.3})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"components: \['vae2'\] are not nn.Module components"):
        ditcache.apply_cache_to_pipeline(pipe, CONFIGS["teacache"], components=("vae2",))
    with pytest.raises(ValueError, match=r"max_branches: expected an int >= 1"):
        ditcache.apply_cache_to_pipeline(pipe, CONFIGS["teacache"], max_branches=0)
    with pytest.raises(TypeError, match=r"pipe: expected a diffusers DiffusionPipeline"):
        ditcache.apply_cache_to_pipeline(object(), CONFIGS["teacache"])
    assert HookRegistry.get(pipe.transformer) is None  # nothing applied by the refused calls
