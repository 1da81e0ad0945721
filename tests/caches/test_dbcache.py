"""DBCache: config validation, step masks, gates, and the oracles against cache-dit and diffusers' FirstBlockCache.

The oracle model is a tiny random diffusers ``FluxTransformer2DModel`` with 2 double and 4 single blocks (6 blocks
in the stack, as cache-dit's default Flux path merges them), 8x8 latent tokens and 8 text tokens, run through the
same 20-step flow-matching Euler loop (``tests/_support/flux.py``). The same cached steps are required exactly;
outputs are compared with ``rtol=1e-5, atol=1e-6`` (they agree bit for bit on CPU float32, since both libraries
perform the same tensor operations in the same order).
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

import pytest
import torch

import ditcache
from _support.flux import count_block_calls, denoise, make_flux, make_inputs
from ditcache.caches.dbcache import DBCache, DBCacheConfig, apply_dbcache_hook
from ditcache.caches.step_masks import (
    SCM_PRESETS,
    leading_compute_steps,
    mask_from_bins,
    preset_mask,
    resolve_mask,
    validate_mask,
)
from ditcache.core.hooks import HookRegistry
from ditcache.core.runtime import get_cache_runtime

STEPS = 20
RTOL, ATOL = 1e-5, 1e-6


@pytest.fixture(scope="module")
def flux() -> Any:
    return make_flux(num_single_layers=4)


@pytest.fixture(scope="module")
def inputs(flux: Any) -> Any:
    return make_inputs(flux)


@pytest.fixture(scope="module")
def baseline(flux: Any, inputs: Any) -> torch.Tensor:
    return denoise(flux, STEPS, inputs=inputs)


@pytest.fixture(scope="module")
def cache_dit() -> Any:
    return pytest.importorskip("cache_dit")


pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(**changes: Any) -> DBCacheConfig:
    """F1B0 W4 R0.3 (the reference notes' tiny-Flux setting), last step not forced: cache-dit's semantics."""
    base: dict[str, Any] = {
        "fn_compute_blocks": 1,
        "bn_compute_blocks": 0,
        "max_warmup_steps": 4,
        "residual_diff_threshold": 0.3,
        "force_last_step": False,
    }
    return DBCacheConfig(**{**base, **changes})


def run_ours(
    flux: Any,
    inputs: Any,
    cfg: DBCacheConfig,
    *,
    steps: int = STEPS,
    cfg_scale: float | None = None,
    mode: str = "auto",
) -> tuple[torch.Tensor, DBCache]:
    model = copy.deepcopy(flux)
    cache = apply_dbcache_hook(model, cfg)
    ditcache.refresh(model, num_inference_steps=steps)
    out = denoise(model, steps, cfg_scale, inputs=inputs, branch_mode=mode)  # type: ignore[arg-type]
    return out, cache


def _to_cache_dit(cache_dit: Any, cfg: DBCacheConfig, steps: int) -> tuple[Any, Any]:
    mask = cfg.steps_computation_mask
    if isinstance(mask, str):
        mask = cache_dit.steps_mask(mask_policy=mask, total_steps=steps)
    elif mask is not None:
        mask = list(mask)
    config = cache_dit.DBCacheConfig(
        Fn_compute_blocks=cfg.fn_compute_blocks,
        Bn_compute_blocks=cfg.bn_compute_blocks,
        residual_diff_threshold=cfg.residual_diff_threshold,
        max_warmup_steps=cfg.max_warmup_steps,
        warmup_interval=cfg.warmup_interval,
        max_cached_steps=-1 if cfg.max_cached_steps is None else cfg.max_cached_steps,
        max_continuous_cached_steps=-1 if cfg.max_continuous_cached_steps is None else cfg.max_continuous_cached_steps,
        max_accumulated_residual_diff_threshold=cfg.max_accumulated_residual_diff_threshold,
        steps_computation_mask=mask,
        steps_computation_policy=cfg.steps_computation_policy,
    )
    calibrator = None
    if cfg.taylorseer:
        calibrator = cache_dit.TaylorSeerCalibratorConfig(taylorseer_order=cfg.taylorseer_order)
    return config, calibrator


def run_cache_dit(
    cache_dit: Any,
    flux: Any,
    inputs: Any,
    cfg: DBCacheConfig,
    *,
    steps: int = STEPS,
    cfg_scale: float | None = None,
) -> tuple[torch.Tensor, Any]:
    model = copy.deepcopy(flux)
    config, calibrator = _to_cache_dit(cache_dit, cfg, steps)
    if cfg_scale is not None:
        config.enable_separate_cfg = True  # cond call first, then uncond: cache-dit's cfg_compute_first=False
    cache_dit.enable_cache(model, cache_config=config, calibrator_config=calibrator)
    cache_dit.refresh_context(model, num_inference_steps=steps)
    out = denoise(model, steps, cfg_scale, inputs=inputs)
    return out, cache_dit.summary(model, logging=False)[-1]


def _skipped(cache: DBCache, branch: str | None = None) -> list[int]:
    stats = [g for g in cache.stats() if branch is None or str(g.branch) == branch]
    return stats[-1].skipped_steps


# ------------------------------------------------------------------------------------------------ oracle: cache-dit
ORACLE_CASES: dict[str, dict[str, Any]] = {
    "F1B0_W4_R0.3": {},
    "F2B1": {"fn_compute_blocks": 2, "bn_compute_blocks": 1},
    "F2B2": {"fn_compute_blocks": 2, "bn_compute_blocks": 2},
    "W8I2": {"max_warmup_steps": 8, "warmup_interval": 2},
    "W0": {"max_warmup_steps": 0},
    "R0.22": {"residual_diff_threshold": 0.22},
    "R0.4": {"residual_diff_threshold": 0.4},
    "R0_never": {"residual_diff_threshold": 0.0},
    "R1_always": {"residual_diff_threshold": 1.0},
    "R5_always": {"residual_diff_threshold": 5.0},
    "M3": {"residual_diff_threshold": 0.4, "max_cached_steps": 3},
    "MC1": {"residual_diff_threshold": 0.4, "max_continuous_cached_steps": 1},
    "MC2": {"residual_diff_threshold": 0.4, "max_continuous_cached_steps": 2},
    "budget1.0": {"residual_diff_threshold": 0.4, "max_accumulated_residual_diff_threshold": 1.0},
    "SCM_fast_dynamic": {"steps_computation_mask": "fast"},
    "SCM_slow_dynamic_MC1_M3": {
        "steps_computation_mask": "slow",
        "residual_diff_threshold": 0.5,
        "max_continuous_cached_steps": 1,
        "max_cached_steps": 3,
    },
    "SCM_ultra_static": {"steps_computation_mask": "ultra", "steps_computation_policy": "static"},
    "SCM_medium_static_MC1": {
        "steps_computation_mask": "medium",
        "steps_computation_policy": "static",
        "max_continuous_cached_steps": 1,
    },
    "SCM_custom_dynamic_W8": {
        "steps_computation_mask": (1, 1, 1, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1),
        "max_warmup_steps": 8,
        "residual_diff_threshold": 0.5,
    },
    "TS_O1": {"taylorseer": True, "taylorseer_order": 1},
    "TS_O2": {"taylorseer": True, "taylorseer_order": 2},
    "TS_O2_R1": {"taylorseer": True, "taylorseer_order": 2, "residual_diff_threshold": 1.0},
    "TS_O1_W8I2": {
        "taylorseer": True,
        "taylorseer_order": 1,
        "max_warmup_steps": 8,
        "warmup_interval": 2,
        "residual_diff_threshold": 0.4,
    },
    "TS_O2_F2B1_R0.5": {
        "taylorseer": True,
        "taylorseer_order": 2,
        "fn_compute_blocks": 2,
        "bn_compute_blocks": 1,
        "residual_diff_threshold": 0.5,
    },
}


@pytest.mark.parametrize("case", list(ORACLE_CASES))
def test_same_cached_steps_and_outputs_as_cache_dit(
    cache_dit: Any, flux: Any, inputs: Any, baseline: torch.Tensor, case: str
) -> None:
    cfg = _cfg(**ORACLE_CASES[case])
    theirs, summary = run_cache_dit(cache_dit, flux, inputs, cfg)
    ours, cache = run_ours(flux, inputs, cfg)
    assert _skipped(cache) == list(summary.cached_steps)
    torch.testing.assert_close(ours, theirs, rtol=RTOL, atol=ATOL)
    if cfg.residual_diff_threshold > 0:
        assert _skipped(cache), "the case should cache some steps"
        assert not torch.equal(ours, baseline)
    else:
        assert torch.equal(ours, baseline)


def test_golden_cases_of_the_reference_notes_shape(cache_dit: Any, flux: Any, inputs: Any) -> None:
    """The always-cache sentinel caches every step after the warm-up, as cache-dit (4..19 for W4, 20 steps)."""
    cfg = _cfg(residual_diff_threshold=1.0)
    _, cache = run_ours(flux, inputs, cfg)
    assert _skipped(cache) == list(range(4, STEPS))
    forced = _cfg(residual_diff_threshold=1.0, force_last_step=True)
    _, cache = run_ours(flux, inputs, forced)
    assert _skipped(cache) == list(range(4, STEPS - 1))


def test_taylorseer_changes_the_output_and_the_delay_is_what_matches_cache_dit(
    cache_dit: Any, flux: Any, inputs: Any
) -> None:
    case = ORACLE_CASES["TS_O1_W8I2"]
    plain, _ = run_ours(flux, inputs, _cfg(**{**case, "taylorseer": False}))
    theirs, _ = run_cache_dit(cache_dit, flux, inputs, _cfg(**case))
    forecast, _ = run_ours(flux, inputs, _cfg(**case))
    torch.testing.assert_close(forecast, theirs, rtol=RTOL, atol=ATOL)
    assert not torch.allclose(forecast, plain, rtol=RTOL, atol=ATOL)
    eager, _ = run_ours(flux, inputs, _cfg(**case, taylorseer_derivative_delay=0))
    assert not torch.allclose(eager, theirs, rtol=RTOL, atol=ATOL)


def test_newton_forecast_equals_taylor_at_order_one_and_differs_at_order_two(flux: Any, inputs: Any) -> None:
    case = {"taylorseer": True, "residual_diff_threshold": 0.4}
    taylor1, _ = run_ours(flux, inputs, _cfg(**case, taylorseer_order=1))
    newton1, _ = run_ours(flux, inputs, _cfg(**case, taylorseer_order=1, taylorseer_method="newton"))
    assert torch.equal(taylor1, newton1)
    taylor2, _ = run_ours(flux, inputs, _cfg(**case, taylorseer_order=2))
    newton2, cache = run_ours(flux, inputs, _cfg(**case, taylorseer_order=2, taylorseer_method="newton"))
    assert _skipped(cache)
    assert not torch.allclose(taylor2, newton2, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("mode", ["auto", "cfg_branch", "cache_context"])
@pytest.mark.parametrize("case", ["F1B0_W4_R0.3", "MC2", "TS_O1"])
def test_cfg_branches_keep_separate_state_like_cache_dit_separate_cfg(
    cache_dit: Any, flux: Any, inputs: Any, mode: str, case: str
) -> None:
    cfg = _cfg(**ORACLE_CASES[case])
    theirs, summary = run_cache_dit(cache_dit, flux, inputs, cfg, cfg_scale=3.0)
    ours, cache = run_ours(flux, inputs, cfg, cfg_scale=3.0, mode=mode)
    stats = cache.stats()
    assert len(stats) == 2
    cond, uncond = (str(g.branch) for g in stats)  # in the order their generations finished: cond first
    if mode != "auto":
        assert (cond, uncond) == ("cond", "uncond")
    assert _skipped(cache, cond) == list(summary.cached_steps)
    assert _skipped(cache, uncond) == list(summary.cfg_cached_steps)
    assert _skipped(cache, cond) != _skipped(cache, uncond)  # the branches really decided apart
    torch.testing.assert_close(ours, theirs, rtol=RTOL, atol=ATOL)


# ------------------------------------------------------------------------------------------------ oracle: FBC
def _run_fbc(flux: Any, inputs: Any, threshold: float, cfg_scale: float | None) -> tuple[torch.Tensor, list[int]]:
    from diffusers.hooks import FirstBlockCacheConfig, apply_first_block_cache

    model = copy.deepcopy(flux)
    apply_first_block_cache(model, FirstBlockCacheConfig(threshold=threshold))
    # FBC leaves the hooked block's forward pre-hooks firing; norm1 of block 1 only runs when the block body runs.
    calls = [0]
    handle = model.transformer_blocks[1].norm1.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    before: list[int] = []
    try:
        out = denoise(
            model,
            STEPS,
            cfg_scale,
            inputs=inputs,
            branch_mode="cache_context",
            on_step=lambda i: before.append(calls[0]),
        )
        before.append(calls[0])
    finally:
        handle.remove()
        model._reset_stateful_cache()
    per_step = [b - a for a, b in itertools.pairwise(before)]
    return out, per_step


@pytest.mark.parametrize("threshold", [0.3, 0.4, 0.5])
@pytest.mark.parametrize("cfg_scale", [None, 3.0])
def test_fn1_bn0_matches_diffusers_first_block_cache(
    flux: Any, inputs: Any, threshold: float, cfg_scale: float | None
) -> None:
    # FBC: no warm-up, no caps, no sentinel, computes when diff > threshold (ours caches when diff < threshold;
    # they differ only at exact equality, which these runs never hit).
    theirs, per_step = _run_fbc(flux, inputs, threshold, cfg_scale)
    cfg = DBCacheConfig(
        fn_compute_blocks=1, max_warmup_steps=0, residual_diff_threshold=threshold, force_last_step=False
    )
    ours, cache = run_ours(flux, inputs, cfg, cfg_scale=cfg_scale, mode="cache_context")
    torch.testing.assert_close(ours, theirs, rtol=RTOL, atol=ATOL)
    computed = [i for i, n in enumerate(per_step) if n > 0]
    branches = {str(g.branch): g for g in cache.stats()}
    ours_any_computed = sorted(set().union(*(set(g.computed_steps) for g in branches.values())))
    assert ours_any_computed == computed
    assert len(computed) < STEPS
    if cfg_scale is None:
        assert per_step == [int(i in branches["cond"].computed_steps) for i in range(STEPS)]
    else:
        both = [
            int(i in branches["cond"].computed_steps) + int(i in branches["uncond"].computed_steps)
            for i in range(STEPS)
        ]
        assert per_step == both


# ------------------------------------------------------------------------------------------------ behaviour
@pytest.mark.parametrize(
    "changes",
    [
        {"residual_diff_threshold": 0.0},
        {"residual_diff_threshold": -1.0},
        {"residual_diff_threshold": 1e-9},
        {"max_cached_steps": 0, "residual_diff_threshold": 1.0},
        {"max_continuous_cached_steps": 0, "residual_diff_threshold": 1.0},
        {"steps_computation_mask": (1,) * STEPS, "steps_computation_policy": "static", "residual_diff_threshold": 1.0},
    ],
)
def test_never_hitting_settings_equal_the_uncached_model_exactly(
    flux: Any, inputs: Any, baseline: torch.Tensor, changes: dict[str, Any]
) -> None:
    ours, cache = run_ours(flux, inputs, _cfg(**changes))
    assert torch.equal(ours, baseline)
    assert _skipped(cache) == []
    assert cache.stats()[-1].computed_steps == list(range(STEPS))


@pytest.mark.parametrize(("fn", "bn"), [(4, 2), (6, 0), (1, 5)])
def test_fn_plus_bn_equal_to_the_block_count_is_refused_at_apply_time(flux: Any, fn: int, bn: int) -> None:
    # Issue 10 item 17: no middle block is left to cache, so every step would run every block while the stats
    # reported the cached steps as skipped. It was accepted before.
    model = copy.deepcopy(flux)
    with pytest.raises(ValueError, match=rf"{fn} \+ {bn} = 6 covers all 6 blocks .* no block is left to cache"):
        apply_dbcache_hook(model, DBCacheConfig(fn_compute_blocks=fn, bn_compute_blocks=bn))
    assert HookRegistry.get(model) is None
    assert "forward" not in model.__dict__


def test_a_step_is_reported_cached_only_when_blocks_were_skipped(flux: Any, inputs: Any) -> None:
    # The block executions add up to what the stats claim: every cached step ran only the Fn + Bn blocks (item 17).
    model = copy.deepcopy(flux)
    fn, bn = 4, 1
    cache = apply_dbcache_hook(model, _cfg(fn_compute_blocks=fn, bn_compute_blocks=bn, residual_diff_threshold=1.0))
    total = len(model.transformer_blocks) + len(model.single_transformer_blocks)
    with count_block_calls(model) as counts:
        denoise(model, STEPS, inputs=inputs)
    stats = cache.stats()[-1]
    computed, skipped = len(stats.computed_steps), len(stats.skipped_steps)
    assert computed + skipped == STEPS and skipped > 0
    assert sum(counts) == computed * total + skipped * (fn + bn)


@pytest.mark.parametrize(("fn", "bn"), [(7, 0), (5, 2), (1, 6), (8, 0)])
def test_fn_plus_bn_over_the_block_count_is_refused_at_apply_time(flux: Any, fn: int, bn: int) -> None:
    model = copy.deepcopy(flux)
    with pytest.raises(ValueError, match=r"fn_compute_blocks \+ bn_compute_blocks: .* exceeds the 6 blocks"):
        apply_dbcache_hook(model, DBCacheConfig(fn_compute_blocks=fn, bn_compute_blocks=bn))
    assert HookRegistry.get(model) is None  # nothing was installed
    assert "forward" not in model.__dict__


def test_default_config_is_refused_on_a_six_block_model(flux: Any) -> None:
    with pytest.raises(ValueError, match="6 \\+ 0 = 6 covers all 6 blocks of FluxTransformer2DModel"):
        apply_dbcache_hook(copy.deepcopy(flux), {"Fn_compute_blocks": 6})
    with pytest.raises(ValueError, match="8 \\+ 0 = 8 exceeds the 6 blocks of FluxTransformer2DModel"):
        apply_dbcache_hook(copy.deepcopy(flux), None)


def test_interrupted_generation_does_not_leak_into_the_next(flux: Any, inputs: Any) -> None:
    cfg = _cfg(residual_diff_threshold=0.4)
    reference, ref_cache = run_ours(flux, inputs, cfg)

    model = copy.deepcopy(flux)
    cache = apply_dbcache_hook(model, cfg)
    ditcache.refresh(model, num_inference_steps=STEPS)

    def boom(i: int) -> None:
        if i == 9:
            raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        denoise(model, STEPS, inputs=inputs, on_step=boom)
    # No refresh: the timestep jumping back up starts a new generation with fresh state.
    again = denoise(model, STEPS, inputs=inputs)
    assert torch.equal(again, reference)
    assert _skipped(cache) == _skipped(ref_cache)
    assert [g.skipped_steps for g in cache.stats()][-2] == [s for s in _skipped(ref_cache) if s < 9]
    # With an explicit refresh too.
    with pytest.raises(RuntimeError):
        denoise(model, STEPS, inputs=inputs, on_step=boom)
    ditcache.refresh(model, num_inference_steps=STEPS)
    assert torch.equal(denoise(model, STEPS, inputs=inputs), reference)


def test_repeated_generations_are_identical(flux: Any, inputs: Any) -> None:
    model = copy.deepcopy(flux)
    cache = apply_dbcache_hook(model, _cfg(taylorseer=True, taylorseer_order=2))
    outs = []
    for _ in range(2):
        ditcache.refresh(model, num_inference_steps=STEPS)
        outs.append(denoise(model, STEPS, inputs=inputs))
    assert torch.equal(outs[0], outs[1])
    assert cache.stats()[-1].skipped_steps == cache.stats()[-2].skipped_steps != []


def test_static_mask_never_hits_at_step_zero_and_keeps_the_last_step(flux: Any, inputs: Any) -> None:
    # cache-dit would try to reuse an empty cache here (mask[0] == 0, static); we compute instead.
    cfg = DBCacheConfig(
        fn_compute_blocks=1,
        max_warmup_steps=4,  # capped to the mask's leading 1s: none
        steps_computation_mask=(0,) * STEPS,
        steps_computation_policy="static",
    )
    _, cache = run_ours(flux, inputs, cfg)
    decisions = cache.stats()[-1].decisions
    assert decisions[0].computed and decisions[0].info["reason"] == "no_reference"
    assert decisions[-1].computed and decisions[-1].info["reason"] == "last_step"
    assert _skipped(cache) == list(range(1, STEPS - 1))


def test_gate_reasons_follow_cache_dit_order(flux: Any, inputs: Any) -> None:
    cfg = _cfg(
        steps_computation_mask="fast",
        residual_diff_threshold=1.0,
        max_cached_steps=4,
        max_continuous_cached_steps=2,
        force_last_step=True,
    )
    _, cache = run_ours(flux, inputs, cfg)
    reasons = [d.info["reason"] for d in cache.stats()[-1].decisions]
    mask = preset_mask("fast", STEPS)
    warmup = min(4, leading_compute_steps(mask))
    assert reasons[:warmup] == ["warmup"] * warmup
    assert reasons[-1] == "last_step"
    for step in range(warmup, STEPS - 1):
        if mask[step] == 1:
            assert reasons[step] == "mask_compute"
        else:
            assert reasons[step] in ("threshold_always", "max_cached_steps", "max_continuous_cached_steps")
    assert "max_continuous_cached_steps" in reasons and "max_cached_steps" in reasons
    assert len(_skipped(cache)) == 4


def test_mask_preset_needs_a_step_count_and_explicit_masks_must_fit(flux: Any, inputs: Any) -> None:
    model = copy.deepcopy(flux)
    apply_dbcache_hook(model, _cfg(steps_computation_mask="fast"))
    with pytest.raises(ValueError, match="steps_computation_mask: the preset 'fast' needs"):
        denoise(model, 4, inputs=inputs)
    model = copy.deepcopy(flux)
    apply_dbcache_hook(model, _cfg(steps_computation_mask=(1, 0, 1)))
    ditcache.refresh(model, num_inference_steps=4)
    with pytest.raises(ValueError, match="the mask has 3 entries but the generation has 4 steps"):
        denoise(model, 4, inputs=inputs)


def test_num_inference_steps_in_the_config_sets_the_step_count(flux: Any, inputs: Any) -> None:
    model = copy.deepcopy(flux)
    cache = apply_dbcache_hook(model, _cfg(residual_diff_threshold=1.0, force_last_step=True, num_inference_steps=8))
    runtime = get_cache_runtime(model)
    assert runtime is not None and runtime.clock.num_steps == 8
    denoise(model, 8, inputs=inputs)
    assert _skipped(cache) == [4, 5, 6]


def test_stacks_inside_teacache_and_applies_idempotently(flux: Any, inputs: Any) -> None:
    model = copy.deepcopy(flux)
    db = apply_dbcache_hook(model, _cfg())
    tea = ditcache.apply_teacache_hook(model, ditcache.TeaCacheConfig(rel_l1_thresh=1e-9, model="flux.1-dev"))
    runtime = get_cache_runtime(model)
    assert runtime is not None
    assert [mw.name for mw in runtime.middlewares] == ["teacache", "dbcache"]
    assert apply_dbcache_hook(model, _cfg()) is db
    with pytest.raises(ValueError, match="different config"):
        apply_dbcache_hook(model, _cfg(residual_diff_threshold=0.5))
    ditcache.refresh(model, num_inference_steps=STEPS)
    out = denoise(model, STEPS, inputs=inputs)
    alone, alone_cache = run_ours(flux, inputs, _cfg())
    assert tea.stats()[-1].skipped_steps == []  # TeaCache never skips at this threshold, so DBCache sees every step
    assert torch.equal(out, alone)
    assert db.stats()[-1].skipped_steps == _skipped(alone_cache)
    ditcache.remove_cache(model)
    assert HookRegistry.get(model) is None


# ------------------------------------------------------------------------------------------------ config
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("fn_compute_blocks", 0),
        ("fn_compute_blocks", 1.5),
        ("fn_compute_blocks", True),
        ("bn_compute_blocks", -1),
        ("residual_diff_threshold", float("nan")),
        ("residual_diff_threshold", float("inf")),
        ("residual_diff_threshold", "0.1"),
        ("max_warmup_steps", -1),
        ("warmup_interval", 0),
        ("max_cached_steps", -2),  # -1 is cache-dit's "no limit"
        ("max_continuous_cached_steps", -2),
        ("max_accumulated_residual_diff_threshold", 0.0),
        ("max_accumulated_residual_diff_threshold", float("nan")),
        ("steps_computation_mask", "turbo"),
        ("steps_computation_mask", (0, 2, 1)),
        ("steps_computation_mask", ()),
        ("steps_computation_mask", 3),
        ("steps_computation_policy", "lazy"),
        ("num_inference_steps", 0),
        ("force_last_step", "yes"),
        ("taylorseer", 1),
        ("taylorseer_order", -1),
        ("taylorseer_derivative_delay", -1),
        ("taylorseer_method", "euler"),
        ("taylorseer_encoder", None),
    ],
)
def test_invalid_config_values_name_the_field(field: str, value: Any) -> None:
    with pytest.raises((ValueError, TypeError), match=f"DBCacheConfig.{field}"):
        DBCacheConfig(**{field: value})


def test_config_error_lists_allowed_values() -> None:
    with pytest.raises(ValueError, match=r"\['dynamic', 'static'\]"):
        DBCacheConfig(steps_computation_policy="lazy")
    with pytest.raises(ValueError, match=r"'slow', 'medium', 'fast', 'ultra'"):
        DBCacheConfig(steps_computation_mask="turbo")


def test_from_dict_refuses_unknown_keys_and_normalises_masks() -> None:
    with pytest.raises(ValueError, match=r"unknown setting.*Fn_compute_block.*allowed settings"):
        DBCacheConfig.from_dict({"Fn_compute_block": 1})
    cfg = DBCacheConfig.from_dict({"fn_compute_blocks": 2, "steps_computation_mask": [1, 1, 0, 1]})
    assert cfg == DBCacheConfig(fn_compute_blocks=2, steps_computation_mask=(1, 1, 0, 1))
    assert DBCacheConfig(steps_computation_mask="1101").steps_computation_mask == (1, 1, 0, 1)
    assert DBCacheConfig(steps_computation_mask="fast").steps_computation_mask == "fast"
    assert hash(cfg) == hash(DBCacheConfig(fn_compute_blocks=2, steps_computation_mask=(1, 1, 0, 1)))
    assert DBCacheConfig(fn_compute_blocks=1, residual_diff_threshold=0.3).tag == "DBCache_F1B0_W8I1M0MC0_R0.3"
    with pytest.raises(TypeError, match="cfg"):
        apply_dbcache_hook(torch.nn.Linear(2, 2), 3)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ step masks
@pytest.mark.parametrize("preset", SCM_PRESETS)
def test_preset_masks_equal_cache_dit_for_many_step_counts(cache_dit: Any, preset: str) -> None:
    for steps in [4, 6, *range(8, 121), 150, 200, 250]:
        theirs = tuple(cache_dit.steps_mask(mask_policy=preset, total_steps=steps))
        ours = preset_mask(preset, steps)
        assert ours == theirs, (preset, steps)
        assert len(ours) == steps and ours[-1] == 1 and ours[0] == 1


def test_mask_from_bins_equals_cache_dit(cache_dit: Any) -> None:
    cases = [([4, 2], [3, 1], None), ([4, 2], [3, 1], 8), ([1], [5], 6), ([2, 1, 1], [1, 2], 5), ([3], [], 3)]
    for compute, cache, total in cases:
        theirs = tuple(cache_dit.steps_mask(compute_bins=compute, cache_bins=cache, total_steps=total))
        assert mask_from_bins(compute, cache, total) == theirs


def test_reference_masks_for_20_steps() -> None:
    # Published in the reference notes (cache-dit 1.5.3): 16-27 steps truncate the 28-step bins from the tail.
    expected = {
        "slow": "11111111011100111001",
        "medium": "11111101100011000101",
        "fast": "11111101000000000001",
        "ultra": "11110000000000000001",
    }
    for name, text in expected.items():
        assert "".join(map(str, preset_mask(name, 20))) == text
    assert "".join(map(str, preset_mask("fast", 28))) == "1111110100010000100000100001"


def test_mask_helpers_validate_their_inputs() -> None:
    with pytest.raises(ValueError, match="4, 6 and >= 8"):
        preset_mask("fast", 5)
    with pytest.raises(ValueError, match="unknown preset"):
        preset_mask("turbo", 20)
    with pytest.raises(ValueError, match="total_steps"):
        preset_mask("fast", 0)
    with pytest.raises(ValueError, match="cover 3 steps"):
        mask_from_bins([1], [2], 5)
    with pytest.raises(ValueError, match="compute_bins"):
        mask_from_bins([-1], [2])
    assert validate_mask([True, False, 1]) == (1, 0, 1)
    assert resolve_mask(None, 10) is None
    assert resolve_mask("ultra", 20) == preset_mask("ultra", 20)
    assert resolve_mask((1, 0), None) == (1, 0)
    assert leading_compute_steps((1, 1, 0, 1)) == 2


# ------------------------------------------------------------------------------------------------ cache-dit spellings
def test_cache_dit_spellings_are_accepted_as_aliases() -> None:
    # Issue 10: cache-dit / vLLM-Omni users type Fn_compute_blocks, Bn_compute_blocks and -1 for "no limit".
    canonical = DBCacheConfig(fn_compute_blocks=2, bn_compute_blocks=1)
    assert DBCacheConfig(Fn_compute_blocks=2, Bn_compute_blocks=1) == canonical  # type: ignore[call-arg]
    assert DBCacheConfig.from_dict({"Fn_compute_blocks": 2, "Bn_compute_blocks": 1}) == canonical
    unlimited = DBCacheConfig.from_dict({"max_cached_steps": -1, "max_continuous_cached_steps": -1})
    assert unlimited.max_cached_steps is None and unlimited.max_continuous_cached_steps is None
    assert unlimited == DBCacheConfig()
    with pytest.raises(ValueError, match=r"DBCacheConfig\.fn_compute_blocks: given twice"):
        DBCacheConfig.from_dict({"Fn_compute_blocks": 2, "fn_compute_blocks": 2})
    with pytest.raises(ValueError, match=r"DBCacheConfig\.fn_compute_blocks: given twice"):
        DBCacheConfig(Fn_compute_blocks=2, fn_compute_blocks=2)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match=r"DBCacheConfig\.max_cached_steps: expected an int >= 0 or None"):
        DBCacheConfig(max_cached_steps=-2)


def test_numpy_scalars_are_accepted_and_stored_as_python_numbers() -> None:
    np = pytest.importorskip("numpy")
    cfg = DBCacheConfig(
        fn_compute_blocks=np.int64(2),
        residual_diff_threshold=np.float32(0.25),
        max_cached_steps=np.int32(-1),
        force_last_step=np.bool_(False),
    )
    assert cfg == DBCacheConfig(
        fn_compute_blocks=2, residual_diff_threshold=float(np.float32(0.25)), force_last_step=False
    )
    assert type(cfg.fn_compute_blocks) is int and type(cfg.residual_diff_threshold) is float
    assert type(cfg.force_last_step) is bool


def test_nested_forecast_equals_the_flat_spelling_and_uses_the_shared_store(flux: Any, inputs: Any) -> None:
    from ditcache.caches.reuse import ForecastSettings, ResidualCache

    flat = DBCacheConfig(taylorseer=True, taylorseer_order=2)
    nested = DBCacheConfig(forecast=ForecastSettings(order=2))
    assert nested == flat == DBCacheConfig(forecast={"order": 2})
    assert flat.forecast() == ForecastSettings(order=2, derivative_delay=3)  # cache-dit's delay by default
    with pytest.raises(ValueError, match=r"DBCacheConfig\.forecast: the flat setting\(s\) \['taylorseer_order'\]"):
        DBCacheConfig(forecast=ForecastSettings(order=2), taylorseer_order=3, taylorseer=True)
    with pytest.raises(ValueError, match=r"DBCacheConfig\.forecast\.target: .* expected 'residual'"):
        DBCacheConfig(forecast={"target": "output"})
    a, cache_a = run_ours(flux, inputs, _cfg(residual_diff_threshold=0.5, taylorseer=True, taylorseer_order=1))
    b, cache_b = run_ours(flux, inputs, _cfg(residual_diff_threshold=0.5, forecast=ForecastSettings(order=1)))
    assert _skipped(cache_a) and _skipped(cache_a) == _skipped(cache_b)
    assert torch.equal(a, b)
    assert isinstance(cache_a.new_state().reuse, ResidualCache)
