"""Generation boundaries at the transformer level (ditcache.core.clock, core.runtime), hardened (issue 10).

Proves, each against a fresh cached run: a run that starts again from the latent its predecessor started from, with
new prompt tensors (even at a reused address), or after a failed call, is a new generation although its timestep
keeps decreasing (item 1); a step count given per run (``cache_context(num_inference_steps=...)``) is that run's, and
a longer run after a shorter one stays one generation (item 2); a repeated timestep (Heun) is a second evaluation,
not a new run (item 14); finished generations release their tensors, and the branch bound is a setting.
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest
import torch
from diffusers import FluxTransformer2DModel

import ditcache
from _support.flux import FluxInputs, denoise, flow_sigmas, make_flux, make_inputs
from _support.flux_pipelines import make_flux_pipeline, prompt_kwargs, run_pipeline
from _support.memory import held_tensor_bytes
from ditcache.core.cache import CacheMiddleware

CONFIGS: dict[str, Any] = {
    "teacache": ditcache.TeaCacheConfig(rel_l1_thresh=0.6, model="flux.1-dev"),
    "magcache": ditcache.MagCacheConfig(
        threshold=0.5, max_skip_steps=3, retention_ratio=0.1, model="flux.1-dev", num_inference_steps=10
    ),
    "dbcache": ditcache.DBCacheConfig(
        fn_compute_blocks=1, bn_compute_blocks=0, residual_diff_threshold=0.5, max_warmup_steps=1
    ),
}
APPLY = {
    "teacache": ditcache.apply_teacache_hook,
    "magcache": ditcache.apply_magcache_hook,
    "dbcache": ditcache.apply_dbcache_hook,
}
PARTIAL = flow_sigmas(12)[:7]  # 1.0 -> 0.5 in 6 steps, then the run stops
LOWER = flow_sigmas(10, start=0.4)  # the next run starts below where that one stopped


def _apply(name: str, model: FluxTransformer2DModel, **changes: Any) -> CacheMiddleware[Any]:
    config = attrs.evolve(CONFIGS[name], **changes) if changes else CONFIGS[name]
    return APPLY[name](model, config)  # type: ignore[no-any-return,operator]


def _fresh(name: str, steps: int, inputs: FluxInputs, **kw: Any) -> tuple[torch.Tensor, list[Any]]:
    model = make_flux()
    cache = _apply(name, model)
    out = denoise(model, steps, inputs=inputs, **kw)
    return out, [s.decisions for s in cache.stats()]


def _skips(decisions: list[Any]) -> int:
    return sum(not d.computed for gen in decisions for d in gen)


# ------------------------------------------------------------------------------------ item 1: lower restarts
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_a_lower_restart_from_the_same_latent_is_a_new_generation(name: str, one_thread: None) -> None:
    inputs = make_inputs(make_flux())
    ref_out, ref_decisions = _fresh(name, 10, inputs, sigmas=LOWER)
    model = make_flux()
    cache = _apply(name, model)
    denoise(model, 6, inputs=inputs, sigmas=PARTIAL)
    before = len(cache.stats())
    out = denoise(model, 10, inputs=inputs, sigmas=LOWER)
    assert [s.decisions for s in cache.stats()[before:]] == ref_decisions and _skips(ref_decisions) > 0
    assert torch.equal(out, ref_out)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_new_prompt_tensors_at_a_reused_address_start_a_new_generation(name: str, one_thread: None) -> None:
    # A serving loop writes each request's prompt into one buffer: the address repeats, the content does not.
    first, second = make_inputs(make_flux(), seed=1), make_inputs(make_flux(), seed=2)
    second = attrs.evolve(second, latents=second.latents.clone())  # a new latent object: only the prompt tells
    ref_out, ref_decisions = _fresh(name, 10, second, sigmas=LOWER)
    buffer = torch.empty_like(first.prompt_embeds)
    model = make_flux()
    cache = _apply(name, model)
    buffer.copy_(first.prompt_embeds)
    denoise(model, 6, inputs=attrs.evolve(first, prompt_embeds=buffer), sigmas=PARTIAL)
    before = len(cache.stats())
    buffer.copy_(second.prompt_embeds)
    out = denoise(model, 10, inputs=attrs.evolve(second, prompt_embeds=buffer), sigmas=LOWER)
    assert [s.decisions for s in cache.stats()[before:]] == ref_decisions
    assert torch.equal(out, ref_out)


def test_a_failed_call_ends_the_run(one_thread: None) -> None:
    inputs = make_inputs(make_flux())
    later = attrs.evolve(inputs, latents=inputs.latents.clone())
    ref_out, ref_decisions = _fresh("teacache", 10, later, sigmas=LOWER)
    model = make_flux()
    cache = _apply("teacache", model)
    calls = [0]

    def fault(module: torch.nn.Module, args: Any) -> None:
        calls[0] += 1
        if calls[0] == 4:
            raise RuntimeError("injected fault")

    handle = model.x_embedder.register_forward_pre_hook(fault)  # runs inside every cached call
    with pytest.raises(RuntimeError, match="injected fault"):
        denoise(model, 6, inputs=inputs, sigmas=PARTIAL)
    handle.remove()
    runtime = ditcache.get_cache_runtime(model)
    assert runtime is not None and cache._slots == {}  # the failed run ended: nothing of it is kept
    out = denoise(model, 10, inputs=later, sigmas=LOWER)
    assert [s.decisions for s in cache.stats()[-1:]] == ref_decisions
    assert torch.equal(out, ref_out)


# ------------------------------------------------------------------------------------ item 2: step counts
def _under_cache_context(model: FluxTransformer2DModel, steps: int, inputs: FluxInputs) -> torch.Tensor:
    with model.cache_context("cond", num_inference_steps=steps):  # type: ignore[operator]
        return denoise(model, steps, inputs=inputs)


def test_a_cache_context_step_count_belongs_to_its_run(one_thread: None) -> None:
    inputs = make_inputs(make_flux())
    fresh = make_flux()
    fresh_cache = _apply("teacache", fresh)
    ref_out = _under_cache_context(fresh, 9, inputs)
    ref_decisions = [s.decisions for s in fresh_cache.stats()]
    assert len(ref_decisions) == 1 and ref_decisions[0][-1].computed  # the known last step is forced

    model = make_flux()
    cache = _apply("teacache", model)
    _under_cache_context(model, 6, inputs)
    out = _under_cache_context(model, 9, inputs)  # not 6 + 3, and step 8 is the forced last step
    assert [s.decisions for s in cache.stats()[1:]] == ref_decisions
    assert torch.equal(out, ref_out)


@pytest.mark.parametrize("source", ["refresh", "config"])
def test_a_longer_run_after_a_shorter_one_is_one_generation(source: str, one_thread: None) -> None:
    inputs = make_inputs(make_flux())
    model = make_flux()
    if source == "refresh":
        cache = _apply("teacache", model)
        ditcache.refresh(model, 6)
    else:
        cache = _apply("teacache", model, num_inference_steps=6)
    denoise(model, 6, inputs=inputs)
    denoise(model, 9, inputs=attrs.evolve(inputs, latents=inputs.latents.clone()))
    assert [len(s.decisions) for s in cache.stats()] == [6, 9]


# ------------------------------------------------------------------------------------ item 14: repeated timesteps
def heun_sigmas(steps: int) -> torch.Tensor:
    """Sigmas of a Heun-style loop: every timestep after the first evaluated twice (dt = 0 in between)."""
    base = flow_sigmas(steps)
    return torch.cat([base[:1], base[1:-1].repeat_interleave(2), base[-1:]])


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_a_repeated_timestep_is_a_second_evaluation_not_a_new_run(name: str, one_thread: None) -> None:
    sigmas = heun_sigmas(8)  # 15 calls
    calls = len(sigmas) - 1
    model = make_flux()
    cache = _apply(name, model, num_inference_steps=calls) if name == "magcache" else _apply(name, model)
    inputs = make_inputs(model)
    for _ in range(2):  # two runs: two generations of 15 calls each
        denoise(model, calls, inputs=inputs, sigmas=sigmas)
    stats = cache.stats()
    assert [[d.step for d in s.decisions] for s in stats] == [list(range(calls))] * 2
    assert _skips([s.decisions for s in stats]) > 0


def test_a_non_monotone_schedule_is_one_pipeline_generation(one_thread: None) -> None:
    pipe = make_flux_pipeline()
    (cache,) = ditcache.apply_cache_to_pipeline(pipe, CONFIGS["dbcache"])["transformer"]
    sigmas = [1.0, 0.8, 0.85, 0.6, 0.4, 0.45, 0.2]
    run_pipeline(pipe, len(sigmas), sigmas=sigmas)
    assert [len(s.decisions) for s in cache.stats()] == [len(sigmas)] * 2  # cond and uncond, one generation each


# ------------------------------------------------------------------------------------ memory and the branch bound
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_finished_generations_hold_no_tensors_after_100_calls(name: str, one_thread: None) -> None:
    config = attrs.evolve(CONFIGS[name], taylorseer=True) if name != "dbcache" else CONFIGS[name]
    pipe = make_flux_pipeline()
    (cache,) = ditcache.apply_cache_to_pipeline(pipe, config)["transformer"]
    runtime = ditcache.get_cache_runtime(pipe.transformer)
    prompts = prompt_kwargs()
    held = []
    for i in range(100):
        run_pipeline(pipe, 3, seed=i, prompts=prompts)
        held.append(held_tensor_bytes(runtime, cache))
    assert len(cache.stats()) == 64  # the history keeps stats only (its bounded deque), no tensors
    assert held == [0] * 100


def test_transformer_level_memory_stays_bounded(one_thread: None) -> None:
    # Estimated counts (a config's) do not end a generation at the count; a new run ends the previous one.
    # Each run's prompt is a new tensor, so every run is a new automatic branch: max_branches caps them.
    model = make_flux()
    config = attrs.evolve(CONFIGS["teacache"], taylorseer=True)
    cache = ditcache.apply_cache(model, ditcache.TeaCache(config, config.resolve(model)), max_branches=3)
    runtime = ditcache.get_cache_runtime(model)
    assert runtime is not None and runtime.clock.max_branches == 3
    held = []
    for i in range(100):
        denoise(model, 3, inputs=make_inputs(model, seed=i))
        held.append(held_tensor_bytes(runtime, cache))
    assert len(runtime.clock.branches()) <= 3 and len(cache._slots) <= 1
    assert max(held) == held[0] > 0  # one open generation's tensors at most, never growing


def test_max_branches_is_a_validated_setting() -> None:
    model = make_flux()
    cache = ditcache.apply_teacache_hook(model, CONFIGS["teacache"])
    for bad in (0, -1, True, 2.5, "4"):
        with pytest.raises(ValueError, match=r"max_branches: expected an int >= 1"):
            ditcache.apply_cache(model, cache, max_branches=bad)  # type: ignore[arg-type]
    runtime = ditcache.get_cache_runtime(model)
    assert runtime is not None and runtime.clock.max_branches == 16
    assert ditcache.apply_cache(model, cache, max_branches=2) is cache and runtime.clock.max_branches == 2
    for name in ("a", "b", "c"):
        with ditcache.cfg_branch(name):
            denoise(model, 2, inputs=make_inputs(model))
    assert runtime.clock.branches() == ["b", "c"]  # "a" was evicted: its generation ended, its state dropped
    assert set(cache._slots) <= {"b", "c"}
