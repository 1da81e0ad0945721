"""Behaviour of the TeaCache middleware and the cache runtime on a tiny random diffusers Flux model.

The decisions are checked against an independent re-implementation of the published rule (see
:func:`reference_rule`), fed with modulated inputs recorded from an *uncached* forward of the same calls.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import numpy as np
import pytest
import torch
from diffusers import FluxTransformer2DModel, QwenImageTransformer2DModel, WanTransformer3DModel
from torch import nn

import ditcache
from _support.flux import FluxCall, denoise, flow_sigmas, make_flux, make_inputs, replay
from _support.logs import event_of
from _support.probes import count_block_calls
from _support.probes import step_decisions as decisions_of
from ditcache import TeaCacheConfig, apply_teacache_hook
from ditcache.core import ExtractorNotFoundError, HookRegistry
from ditcache.core.validators import config_fields
from ditcache.presets import TEACACHE_PRESETS
from ditcache.presets.teacache import infer_teacache_model

# FLUX.1-dev, as published in ali-vilab/TeaCache TeaCache4FLUX/teacache_flux.py (numpy.poly1d order). Typed
# here from the paper's repository rather than imported, so the preset table is checked too.
FLUX_DEV = (4.98651651e02, -2.83781631e02, 5.58554382e01, -3.82021401e00, 2.64230861e-01)
# A steep polynomial (10 * x): on this model the step-to-step distance is ~0.04-0.09, so the accumulator grows
# by a varying 0.4-0.9 per step and the skip pattern is irregular (the FLUX set is nearly flat on that range,
# which gives regular every-other-step patterns that would hide ordering mistakes).
LINEAR = (0.0, 0.0, 0.0, 10.0, 0.0)
# Changes sign inside the distance range (20 * (x - 0.055)): abs_rescaled matters.
SIGNED = (0.0, 0.0, 0.0, 20.0, -1.1)

N_STEPS = 24


# ---------------------------------------------------------------------------------------------------- helpers
def reference_rule(
    mods: list[torch.Tensor],
    coefficients: tuple[float, ...],
    thresh: float,
    *,
    num_steps: int | None = None,
    warmup_steps: int = 1,
    force_last_step: bool = True,
    abs_rescaled: bool = False,
    max_consecutive_skips: int | None = None,
    mutant: str | None = None,
) -> tuple[list[int], list[float | None]]:
    """The published TeaCache decision rule (reference/algorithms.md §1.1, TeaCache4FLUX) over one generation.

    Returns the skipped steps and the distance of each step (None where the step is forced). ``mutant`` plants a
    known mistake ("prev_on_compute": previous input only updated on computed steps; "current_denominator":
    normalise by the current input; "no_reset": keep the accumulator on compute) to show the test can fail.
    """
    poly = np.poly1d(coefficients)
    acc = 0.0
    prev: torch.Tensor | None = None
    consecutive = 0
    skipped: list[int] = []
    distances: list[float | None] = []
    for cnt, mod in enumerate(mods):
        forced = (
            prev is None or cnt < warmup_steps or (force_last_step and num_steps is not None and cnt == num_steps - 1)
        )
        distance: float | None = None
        if forced:
            calc = True
            acc = 0.0
        else:
            assert prev is not None
            den = mod if mutant == "current_denominator" else prev
            distance = ((mod - prev).abs().mean() / den.abs().mean()).item()  # Eq. 4
            rescaled = float(poly(distance))
            acc += abs(rescaled) if abs_rescaled else rescaled
            capped = max_consecutive_skips is not None and consecutive >= max_consecutive_skips
            if acc < thresh and not capped:
                calc = False
            else:
                calc = True
                if mutant != "no_reset":
                    acc = 0.0
        if mutant != "prev_on_compute" or calc:
            prev = mod
        if calc:
            consecutive = 0
        else:
            consecutive += 1
            skipped.append(cnt)
        distances.append(distance)
    return skipped, distances


def modulated_inputs(model: FluxTransformer2DModel, calls: list[FluxCall]) -> list[torch.Tensor]:
    """The first block's modulated input (``norm1(h, emb=temb)[0]``) for each call, from an uncached forward."""
    assert ditcache.get_cache_runtime(model) is None, "record the indicator from the uncached model"
    seen: list[torch.Tensor] = []

    def hook(module: nn.Module, args: Any, output: Any) -> None:
        seen.append(output[0].detach().clone())

    handle = model.transformer_blocks[0].norm1.register_forward_hook(hook)
    try:
        replay(model, calls)
    finally:
        handle.remove()
    assert len(seen) == len(calls)
    return seen


def rel_l1(a: torch.Tensor, b: torch.Tensor) -> float:
    """``mean|a - b| / mean|b|`` in float64."""
    return float((a.double() - b.double()).abs().mean() / b.double().abs().mean())


@pytest.fixture
def flux() -> FluxTransformer2DModel:
    return make_flux()


@pytest.fixture
def ditcache_logs(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """A function returning the structlog event dicts logged so far by ``ditcache`` loggers, captured at DEBUG.

    The records carry the event dict in ``record.ditcache_event``.
    """
    # configure_logging() (the CLI) turns propagation off; caplog listens on the root logger.
    monkeypatch.setattr(logging.getLogger("ditcache"), "propagate", True)

    def events() -> list[dict[str, Any]]:
        return [event_of(r) for r in caplog.records if r.name.startswith("ditcache") and event_of(r) is not None]

    with caplog.at_level(logging.DEBUG, logger="ditcache"):
        yield events


# ------------------------------------------------------------------------------- 1. the rule vs the reference
RULE_CASES: dict[str, tuple[dict[str, Any], str]] = {
    # name: (config, how the step count is made known: "none" | "config" | "refresh")
    "flux-0.15": ({"rel_l1_thresh": 0.15, "coefficients": FLUX_DEV}, "none"),
    "flux-0.3": ({"rel_l1_thresh": 0.3, "coefficients": FLUX_DEV}, "none"),
    "flux-0.6": ({"rel_l1_thresh": 0.6, "coefficients": FLUX_DEV}, "none"),
    "flux-1.5": ({"rel_l1_thresh": 1.5, "coefficients": FLUX_DEV}, "none"),
    "linear-0.9": ({"rel_l1_thresh": 0.9, "coefficients": LINEAR}, "none"),
    "linear-1.4": ({"rel_l1_thresh": 1.4, "coefficients": LINEAR}, "none"),
    "linear-2.5": ({"rel_l1_thresh": 2.5, "coefficients": LINEAR}, "none"),
    "signed": ({"rel_l1_thresh": 0.3, "coefficients": SIGNED}, "none"),
    "signed-abs": ({"rel_l1_thresh": 0.3, "coefficients": SIGNED, "abs_rescaled": True}, "none"),
    "max-skips-1": ({"rel_l1_thresh": 2.5, "coefficients": LINEAR, "max_consecutive_skips": 1}, "none"),
    "max-skips-2": ({"rel_l1_thresh": 2.5, "coefficients": LINEAR, "max_consecutive_skips": 2}, "none"),
    "warmup-0": ({"rel_l1_thresh": 1.4, "coefficients": LINEAR, "warmup_steps": 0}, "none"),
    "warmup-5": ({"rel_l1_thresh": 1.4, "coefficients": LINEAR, "warmup_steps": 5}, "none"),
    "last-config": ({"rel_l1_thresh": 2.5, "coefficients": LINEAR, "num_inference_steps": N_STEPS}, "config"),
    "last-refresh": ({"rel_l1_thresh": 2.5, "coefficients": LINEAR}, "refresh"),
    "last-off-config": (
        {"rel_l1_thresh": 2.5, "coefficients": LINEAR, "num_inference_steps": N_STEPS, "force_last_step": False},
        "config",
    ),
    "last-off-refresh": ({"rel_l1_thresh": 2.5, "coefficients": LINEAR, "force_last_step": False}, "refresh"),
    "preset-flux-0.6": ({"rel_l1_thresh": 0.6, "model": "flux.1-dev"}, "refresh"),
}


def _reference_kwargs(config: dict[str, Any], steps_known: str) -> dict[str, Any]:
    warmup = config.get("warmup_steps")
    force_last = config.get("force_last_step")
    return {
        "num_steps": None if steps_known == "none" else N_STEPS,
        "warmup_steps": 1 if warmup is None else warmup,  # the published rule: first step computed
        "force_last_step": True if force_last is None else force_last,  # ... and the last one when known
        "abs_rescaled": config.get("abs_rescaled", False),
        "max_consecutive_skips": config.get("max_consecutive_skips"),
    }


def _cached_run(config: dict[str, Any], steps_known: str) -> tuple[FluxTransformer2DModel, Any, list[FluxCall]]:
    model = make_flux()
    cache = apply_teacache_hook(model, config)
    if steps_known == "refresh":
        ditcache.refresh(model, N_STEPS)
    trace: list[FluxCall] = []
    denoise(model, N_STEPS, inputs=make_inputs(model), trace=trace)
    ditcache.remove_cache(model)
    return model, cache, trace


@pytest.mark.parametrize("case", list(RULE_CASES))
def test_decisions_match_reference_rule(case: str) -> None:
    config, steps_known = RULE_CASES[case]
    # The reference rule accumulates the polynomial as published; the default rescaling is the monotone one.
    model, cache, trace = _cached_run(
        config if config.get("abs_rescaled") else {**config, "rescale": "published"}, steps_known
    )
    (stats,) = cache.stats()
    mods = modulated_inputs(model, trace)
    coefficients = config.get("coefficients", FLUX_DEV)
    expected, distances = reference_rule(
        mods, coefficients, config["rel_l1_thresh"], **_reference_kwargs(config, steps_known)
    )
    assert [d.step for d in stats.decisions] == list(range(N_STEPS))
    assert stats.skipped_steps == expected
    got_distances = [d.info["distance"] for d in stats.decisions]
    assert [d is None for d in got_distances] == [d is None for d in distances]
    assert [d for d in got_distances if d is not None] == pytest.approx(
        [d for d in distances if d is not None], rel=1e-5
    )
    if case != "flux-0.15":  # that one is the never-skipping control (FLUX poly ~0.18 per step here)
        assert 0 < len(expected) < N_STEPS - 1, f"{case}: the case should skip some steps but not all"
    else:
        assert expected == []


def test_options_change_the_reference_decisions(flux: FluxTransformer2DModel) -> None:
    """The option cases above are discriminating: each option moves the reference's decisions on this data."""
    trace: list[FluxCall] = []
    denoise(flux, N_STEPS, inputs=make_inputs(flux), trace=trace)
    mods = modulated_inputs(flux, trace)

    def skips(coefficients: tuple[float, ...], thresh: float, **kw: Any) -> list[int]:
        return reference_rule(mods, coefficients, thresh, **kw)[0]

    base = skips(LINEAR, 2.5)
    assert skips(LINEAR, 2.5, max_consecutive_skips=1) != base
    assert skips(LINEAR, 2.5, max_consecutive_skips=2) != base
    assert skips(LINEAR, 2.5, num_steps=N_STEPS) != base  # the last step is forced
    assert skips(LINEAR, 2.5, num_steps=N_STEPS, force_last_step=False) == base
    assert skips(LINEAR, 1.4, warmup_steps=5) != skips(LINEAR, 1.4)
    assert skips(SIGNED, 0.3, abs_rescaled=True) != skips(SIGNED, 0.3)
    # ... and each planted mistake of the rule changes what the test above compares (skipped steps and
    # distances), so that test can fail.
    for mutant in ("prev_on_compute", "current_denominator", "no_reset"):
        assert any(
            reference_rule(mods, c, t, mutant=mutant) != reference_rule(mods, c, t)
            for c, t in ((LINEAR, 0.9), (LINEAR, 1.4), (LINEAR, 2.5))
        ), mutant


# ----------------------------------------------------------------------------- 2. a never-skipping threshold
@pytest.mark.parametrize("cfg_scale", [None, 3.0])
def test_tiny_threshold_is_bit_identical_to_uncached(flux: FluxTransformer2DModel, cfg_scale: float | None) -> None:
    inputs = make_inputs(flux)
    uncached = denoise(flux, 20, cfg_scale, inputs=inputs)
    cache = apply_teacache_hook(flux, {"rel_l1_thresh": 1e-9})
    cached = denoise(flux, 20, cfg_scale, inputs=inputs)
    stats = cache.stats()
    assert len(stats) == (1 if cfg_scale is None else 2)
    for s in stats:
        assert s.computed_steps == list(range(20)) and s.skipped_steps == []
    assert torch.equal(cached, uncached)


# ----------------------------------------------------------------------------- 3. a usable threshold
def test_usable_threshold_skips_and_stays_close(flux: FluxTransformer2DModel) -> None:
    inputs = make_inputs(flux)
    uncached = denoise(flux, N_STEPS, inputs=inputs)
    cache = apply_teacache_hook(flux, {"rel_l1_thresh": 0.25, "model": "flux.1-dev"})
    ditcache.refresh(flux, N_STEPS)
    cached = denoise(flux, N_STEPS, inputs=inputs)
    (stats,) = cache.stats()
    skipped = len(stats.skipped_steps)
    assert 0.3 * N_STEPS <= skipped <= 0.6 * N_STEPS, stats.skipped_steps
    error = rel_l1(cached, uncached)
    # Bound: a skipped step reuses the previous computed step's block residual, which differs from the true one by
    # about the indicator's step-to-step change (the distances logged here are <= ~0.07). The skipped steps carry
    # at most 60% of the sigma path (asserted above), and the whole path moves the latent by about half of its
    # final magnitude (mean|uncached - noise| / mean|uncached| ~ 0.51, checked below), so the final drift is at
    # most ~0.6 * 0.07 * 0.51 ~ 0.021; we allow 0.025. (Measured: ~2e-3, as errors of opposite sign cancel.)
    bound = 0.025
    assert 0.0 < error < bound, f"{skipped}/{N_STEPS} skipped, final-latent rel-L1 {error:.2e}"
    assert max(d.info["distance"] or 0.0 for d in stats.decisions) < 0.08
    path = rel_l1(inputs.latents, uncached)
    assert 0.4 < path < 0.6
    assert path > 25 * error  # the caching error is small next to what the denoising does


# ----------------------------------------------------------------------------- 4. skipped steps skip the blocks
def test_skipped_steps_do_not_run_blocks(flux: FluxTransformer2DModel) -> None:
    inputs = make_inputs(flux)
    with count_block_calls(flux) as counts:
        denoise(flux, N_STEPS, inputs=inputs)
    assert counts == [N_STEPS] * 4
    cache = apply_teacache_hook(flux, {"rel_l1_thresh": 0.6, "model": "flux.1-dev"})
    with count_block_calls(flux) as counts:
        denoise(flux, N_STEPS, inputs=inputs)
    (stats,) = cache.stats()
    computed = len(stats.computed_steps)
    assert computed < N_STEPS // 2
    assert counts == [computed] * 4


# ----------------------------------------------------------------------------- 5. CFG branches
CFG_CONFIG = {"rel_l1_thresh": 1.4, "coefficients": LINEAR}
CFG_STEPS = 16


def _cfg_run(mode: str) -> tuple[dict[str, list[bool]], dict[str, list[bool]], FluxTransformer2DModel, Any]:
    """A CFG loop under ``mode``; returns per-branch computed flags (in call order) of the loop and of each
    branch's calls replayed alone on a fresh cache, the model and the loop's cache."""
    model = make_flux()
    cache = apply_teacache_hook(model, CFG_CONFIG)
    trace: list[FluxCall] = []
    denoise(model, CFG_STEPS, 3.0, inputs=make_inputs(model), branch_mode=mode, trace=trace)  # type: ignore[arg-type]
    # Every call made one decision; in one branch, decisions are in call order.
    flat: dict[str, list[bool]] = {"cond": [], "uncond": []}
    per_branch = {s.branch: iter(s.decisions) for s in cache.stats()} if mode != "shared" else None
    if per_branch is None:  # one branch name: the decisions of all calls are interleaved in one history
        all_decisions = iter([d for s in cache.stats() for d in s.decisions])
        for call in trace:
            flat[call.branch].append(next(all_decisions).computed)
    else:
        keys = {"cond": "cond", "uncond": "uncond"}
        if mode == "auto":  # automatic identities, in order of first appearance (cond is called first)
            keys = dict(zip(("cond", "uncond"), list(per_branch)))
        for call in trace:
            flat[call.branch].append(next(per_branch[keys[call.branch]]).computed)
    alone: dict[str, list[bool]] = {}
    ditcache.remove_cache(model)
    for name in ("cond", "uncond"):
        solo = apply_teacache_hook(model, CFG_CONFIG)
        replay(model, [c for c in trace if c.branch == name])
        (stats,) = solo.stats()
        alone[name] = [d.computed for d in stats.decisions]
        ditcache.remove_cache(model)
    return flat, alone, model, cache


@pytest.mark.parametrize("mode", ["auto", "cfg_branch", "cache_context"])
def test_cfg_branches_keep_separate_state(mode: str) -> None:
    flat, alone, _, cache = _cfg_run(mode)
    assert len(cache.stats()) == 2
    if mode != "auto":
        assert {s.branch for s in cache.stats()} == {"cond", "uncond"}
    assert alone["cond"] != alone["uncond"]  # the branches really behave differently
    assert not all(alone["cond"]) and not all(alone["uncond"])
    assert flat == alone


def test_cfg_modes_agree() -> None:
    outputs = []
    for mode in ("auto", "cfg_branch", "cache_context"):
        model = make_flux()
        cache = apply_teacache_hook(model, CFG_CONFIG)
        outputs.append(
            (denoise(model, CFG_STEPS, 3.0, inputs=make_inputs(model), branch_mode=mode), cache.stats())  # type: ignore[arg-type]
        )
    (ref, ref_stats), *others = outputs
    for out, stats in others:
        assert torch.equal(out, ref)
        assert [s.decisions for s in stats] == [s.decisions for s in ref_stats]


def test_one_shared_branch_name_mixes_state() -> None:
    """The failure mode the per-branch state avoids: with one name for both calls the decisions change."""
    flat, alone, _, _ = _cfg_run("shared")
    assert flat != alone


def test_cache_context_bridge_lifecycle(flux: FluxTransformer2DModel) -> None:
    assert "cache_context" not in flux.__dict__
    apply_teacache_hook(flux, CFG_CONFIG)
    assert "cache_context" in flux.__dict__
    runtime = ditcache.get_cache_runtime(flux)
    assert runtime is not None
    with flux.cache_context("uncond"):
        assert runtime.external_context == ("uncond", {})
    assert runtime.external_context is None
    ditcache.remove_cache(flux)
    assert "cache_context" not in flux.__dict__
    assert HookRegistry.get(flux) is None
    with flux.cache_context("cond"):  # diffusers' own context manager is back
        pass


# ----------------------------------------------------------------------------- 6. generations
GEN_CONFIG = {"rel_l1_thresh": 1.4, "coefficients": LINEAR}


def _fresh_run(
    model_dtype: torch.dtype = torch.float32,
    config: dict[str, Any] | None = None,
    refresh: int | None = None,
    **kw: Any,
) -> tuple[torch.Tensor, list[ditcache.core.StepDecision]]:
    """Output and decisions of the first generation of a fresh model with a fresh cache."""
    model = make_flux(dtype=model_dtype)
    cache = apply_teacache_hook(model, GEN_CONFIG if config is None else config)
    if refresh is not None:
        ditcache.refresh(model, refresh)
    steps = kw.pop("steps", N_STEPS)
    inputs = kw.pop("inputs", None) or make_inputs(model)
    out = denoise(model, steps, inputs=inputs, **kw)
    return out, decisions_of(cache)


def test_two_runs_are_identical(flux: FluxTransformer2DModel) -> None:
    cache = apply_teacache_hook(flux, GEN_CONFIG)
    inputs = make_inputs(flux)
    first = denoise(flux, N_STEPS, inputs=inputs)
    second = denoise(flux, N_STEPS, inputs=inputs)
    stats = cache.stats()
    assert len(stats) == 2 and stats[0].generation != stats[1].generation
    assert stats[0].skipped_steps  # the runs do cache
    assert stats[0].decisions == stats[1].decisions
    assert torch.equal(first, second)


@pytest.mark.parametrize("steps", [None, 10])
def test_refresh_resets_what_the_timestep_cannot_tell(flux: FluxTransformer2DModel, steps: int | None) -> None:
    # An img2img-like second run starts *below* where the first (interrupted) one stopped: the timestep keeps
    # decreasing, so only ditcache.refresh can tell a new generation started.
    inputs = make_inputs(flux)
    partial = flow_sigmas(12)[:7]  # 1.0 -> 0.5 in 6 steps, then stop
    second = flow_sigmas(10, start=0.4)
    ref_out, ref_decisions = _fresh_run(refresh=steps, steps=10, sigmas=second)

    cache = apply_teacache_hook(flux, GEN_CONFIG)
    denoise(flux, 6, inputs=inputs, sigmas=partial)
    ditcache.refresh(flux, steps)
    out = denoise(flux, 10, inputs=inputs, sigmas=second)
    assert decisions_of(cache) == ref_decisions
    assert torch.equal(out, ref_out)

    # Without refresh the second run is a new generation too: it starts from the latent the first one started from
    # (not a continuation, although its timestep keeps decreasing); with no count given it equals a fresh run.
    ditcache.remove_cache(flux)
    cache = apply_teacache_hook(flux, GEN_CONFIG)
    denoise(flux, 6, inputs=inputs, sigmas=partial)
    out = denoise(flux, 10, inputs=inputs, sigmas=second)
    fresh_out, fresh_decisions = _fresh_run(steps=10, sigmas=second)
    assert len(cache.stats()) == 2 and decisions_of(cache) == fresh_decisions
    assert torch.equal(out, fresh_out)


def test_refresh_keeps_configured_step_count(flux: FluxTransformer2DModel) -> None:
    """``refresh(model)`` without a count resets state but keeps the count given in the config."""
    config = {**GEN_CONFIG, "rel_l1_thresh": 2.5, "num_inference_steps": N_STEPS}
    ref_out, ref_decisions = _fresh_run(config=config)
    assert ref_decisions[-1].computed  # the known last step is forced
    cache = apply_teacache_hook(flux, config)
    ditcache.refresh(flux)
    out = denoise(flux, N_STEPS, inputs=make_inputs(flux))
    assert decisions_of(cache) == ref_decisions
    assert torch.equal(out, ref_out)


@pytest.mark.parametrize("known_steps", [False, True])
@pytest.mark.parametrize("fail_at", [0, 1, 9])
def test_exception_mid_generation_leaves_next_one_clean(
    flux: FluxTransformer2DModel, fail_at: int, known_steps: bool
) -> None:
    config = {**GEN_CONFIG, "num_inference_steps": N_STEPS} if known_steps else GEN_CONFIG
    ref_out, ref_decisions = _fresh_run(config=config)
    cache = apply_teacache_hook(flux, config)
    inputs = make_inputs(flux)
    armed = [False]
    fired = [0]

    def fault(module: nn.Module, args: Any) -> None:
        if armed[0]:
            armed[0] = False
            fired[0] += 1
            raise RuntimeError("injected fault")

    def arm(step: int) -> None:
        if step == fail_at:
            armed[0] = True

    # A middle block, so the failing step has run part of the stack when it fails.
    handle = flux.single_transformer_blocks[0].register_forward_pre_hook(fault)
    try:
        with pytest.raises(RuntimeError, match="injected fault"):
            denoise(flux, N_STEPS, inputs=inputs, on_step=arm)
        assert fired == [1]
        out = denoise(flux, N_STEPS, inputs=inputs)
    finally:
        handle.remove()
    assert decisions_of(cache) == ref_decisions
    assert torch.equal(out, ref_out)


def test_exception_inside_cache_context_cfg_loop(flux: FluxTransformer2DModel) -> None:
    """A fault in an uncond call under ``model.cache_context``: the branch name is restored, the next run is clean."""
    ref_model = make_flux()
    ref_cache = apply_teacache_hook(ref_model, CFG_CONFIG)
    ref_out = denoise(ref_model, CFG_STEPS, 3.0, inputs=make_inputs(ref_model), branch_mode="cache_context")
    cache = apply_teacache_hook(flux, CFG_CONFIG)
    runtime = ditcache.get_cache_runtime(flux)
    assert runtime is not None
    inputs = make_inputs(flux)
    uncond_calls = [0]

    def fault(module: nn.Module, args: Any) -> None:  # fails the 3rd computed uncond step
        if runtime.external_context is not None and runtime.external_context[0] == "uncond":
            uncond_calls[0] += 1
            if uncond_calls[0] == 3:
                raise RuntimeError("injected fault")

    handle = flux.transformer_blocks[1].register_forward_pre_hook(fault)
    try:
        with pytest.raises(RuntimeError, match="injected fault"):
            denoise(flux, CFG_STEPS, 3.0, inputs=inputs, branch_mode="cache_context")
    finally:
        handle.remove()
    assert runtime.external_context is None
    out = denoise(flux, CFG_STEPS, 3.0, inputs=inputs, branch_mode="cache_context")
    assert torch.equal(out, ref_out)
    assert [s.decisions for s in cache.stats()[-2:]] == [s.decisions for s in ref_cache.stats()]


@pytest.mark.parametrize("continue_timesteps", [False, True])
def test_resolution_change_between_runs(flux: FluxTransformer2DModel, continue_timesteps: bool) -> None:
    big = make_inputs(flux)
    # Same prompt tensors (so the same automatic branch), a 4x6 latent instead of 8x8.
    small_ref = make_inputs(flux, height=4, width=6)
    small = attrs.evolve(big, latents=small_ref.latents, img_ids=small_ref.img_ids)
    # With continue_timesteps the second run starts below where the first ended: only the shape tells.
    first_sigmas = flow_sigmas(12)[:7] if continue_timesteps else flow_sigmas(12)
    second_sigmas = flow_sigmas(12, start=0.4) if continue_timesteps else flow_sigmas(12)
    ref_small, ref_small_decisions = _fresh_run(steps=12, sigmas=second_sigmas, inputs=small)

    cache = apply_teacache_hook(flux, GEN_CONFIG)
    denoise(flux, len(first_sigmas) - 1, inputs=big, sigmas=first_sigmas)
    out_small = denoise(flux, 12, inputs=small, sigmas=second_sigmas)
    assert decisions_of(cache) == ref_small_decisions
    assert torch.equal(out_small, ref_small)
    # ... and back to the first resolution.
    ref_big, ref_big_decisions = _fresh_run(steps=12, inputs=big)
    out_big = denoise(flux, 12, inputs=big)
    assert decisions_of(cache) == ref_big_decisions
    assert torch.equal(out_big, ref_big)


def test_dtype_change_between_runs(flux: FluxTransformer2DModel) -> None:
    inputs = make_inputs(flux)
    cache = apply_teacache_hook(flux, GEN_CONFIG)
    first = denoise(flux, N_STEPS, inputs=inputs)
    first_decisions = decisions_of(cache)
    assert not all(d.computed for d in first_decisions)

    flux.to(torch.float64)
    out64 = denoise(flux, N_STEPS, inputs=inputs.to(torch.float64))
    ref64, ref64_decisions = _fresh_run(torch.float64, inputs=inputs.to(torch.float64))
    assert out64.dtype == torch.float64
    assert decisions_of(cache) == ref64_decisions
    assert torch.equal(out64, ref64)

    flux.to(torch.float32)  # float32 -> float64 -> float32 is exact: the first run must come back
    again = denoise(flux, N_STEPS, inputs=inputs)
    assert decisions_of(cache) == first_decisions
    assert torch.equal(again, first)


# ----------------------------------------------------------------------------- 7. config validation
BAD_FIELDS: list[tuple[dict[str, Any], str]] = [
    ({"rtol": 0.0}, "rtol"),
    ({"rtol": 0.1, "rel_l1_thresh": 0.5}, "rtol"),
    ({"rel_l1_thresh": 0}, "rel_l1_thresh"),
    ({"rel_l1_thresh": -0.1}, "rel_l1_thresh"),
    ({"rel_l1_thresh": math.nan}, "rel_l1_thresh"),
    ({"rel_l1_thresh": math.inf}, "rel_l1_thresh"),
    ({"rel_l1_thresh": True}, "rel_l1_thresh"),
    ({"rel_l1_thresh": "0.2"}, "rel_l1_thresh"),
    ({"coefficients": [1.0, 2.0, 3.0, 4.0]}, "coefficients"),
    ({"coefficients": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]}, "coefficients"),
    ({"coefficients": [1.0, 2.0, 3.0, 4.0, math.nan]}, "coefficients"),
    ({"coefficients": 5}, "coefficients"),
    ({"coefficients": "12345"}, "coefficients"),
    ({"coefficients": [1, 2, 3, 4, "x"]}, "coefficients"),
    ({"model": "flux"}, "model"),
    ({"model": 3}, "model"),
    ({"model": ["flux.1-dev"]}, "model"),
    ({"indicator": 3}, "indicator"),
    ({"indicator": ""}, "indicator"),
    ({"num_inference_steps": 0}, "num_inference_steps"),
    ({"num_inference_steps": 2.5}, "num_inference_steps"),
    ({"num_inference_steps": True}, "num_inference_steps"),
    ({"warmup_steps": -1}, "warmup_steps"),
    ({"warmup_steps": "1"}, "warmup_steps"),
    ({"force_last_step": "yes"}, "force_last_step"),
    ({"force_last_step": 1}, "force_last_step"),
    ({"max_consecutive_skips": 0}, "max_consecutive_skips"),
    ({"max_consecutive_skips": 1.0}, "max_consecutive_skips"),
    ({"abs_rescaled": 1}, "abs_rescaled"),
    ({"abs_rescaled": "true"}, "abs_rescaled"),
    ({"abs_rescaled": None}, "abs_rescaled"),
]


@pytest.mark.parametrize(("kwargs", "field"), BAD_FIELDS, ids=[f"{f}={v!r}" for v, f in BAD_FIELDS])
def test_bad_field_raises_naming_it(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises((TypeError, ValueError), match=f"TeaCacheConfig.{field}"):
        TeaCacheConfig(**kwargs)
    with pytest.raises((TypeError, ValueError), match=f"TeaCacheConfig.{field}"):
        TeaCacheConfig.from_dict(kwargs)


def test_unknown_model_lists_allowed_keys() -> None:
    with pytest.raises(ValueError, match=r"TeaCacheConfig\.model") as info:
        TeaCacheConfig(model="flux-dev")
    for key in TEACACHE_PRESETS:
        assert repr(key) in str(info.value)


@pytest.mark.parametrize("via", ["from_dict", "apply"])
def test_unknown_dict_key_names_it_and_the_allowed(flux: FluxTransformer2DModel, via: str) -> None:
    data = {"rel_l1_thresh": 0.3, "threshold": 0.3}
    with pytest.raises(ValueError, match="threshold") as info:
        if via == "apply":
            apply_teacache_hook(flux, data)
        else:
            TeaCacheConfig.from_dict(data)
    for name in config_fields(TeaCacheConfig):
        assert repr(name) in str(info.value)
    assert HookRegistry.get(flux) is None


def test_from_dict_roundtrip_and_non_mapping() -> None:
    config = TeaCacheConfig(rel_l1_thresh=0.4, coefficients=LINEAR, max_consecutive_skips=2)
    assert TeaCacheConfig.from_dict(attrs.asdict(config)) == config
    with pytest.raises(TypeError, match="TeaCacheConfig"):
        TeaCacheConfig.from_dict([("rel_l1_thresh", 0.4)])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="cfg"):
        apply_teacache_hook(make_flux(), 0.4)  # type: ignore[arg-type]


def test_equal_config_twice_is_a_noop(flux: FluxTransformer2DModel) -> None:
    first = apply_teacache_hook(flux, TeaCacheConfig(rel_l1_thresh=0.4, coefficients=LINEAR))
    second = apply_teacache_hook(flux, {"rel_l1_thresh": 0.4, "coefficients": list(LINEAR)})
    assert second is first
    registry = HookRegistry.get(flux)
    assert registry is not None and registry.names() == [ditcache.core.runtime.RUNTIME_NAME]
    runtime = ditcache.get_cache_runtime(flux)
    assert runtime is not None and runtime.middlewares == [first]


def test_different_config_raises_and_keeps_the_first(flux: FluxTransformer2DModel) -> None:
    first = apply_teacache_hook(flux, GEN_CONFIG)
    with pytest.raises(ValueError, match="teacache"):
        apply_teacache_hook(flux, {**GEN_CONFIG, "rel_l1_thresh": 0.5})
    runtime = ditcache.get_cache_runtime(flux)
    assert runtime is not None and runtime.middlewares == [first]
    out = denoise(flux, N_STEPS, inputs=make_inputs(flux))
    ref_out, ref_decisions = _fresh_run()
    assert decisions_of(first) == ref_decisions
    assert torch.equal(out, ref_out)


def test_failed_apply_leaves_module_untouched(flux: FluxTransformer2DModel) -> None:
    inputs = make_inputs(flux)
    before_out = denoise(flux, 4, inputs=inputs)
    before_attrs = set(flux.__dict__)
    with pytest.raises(ValueError, match=r"TeaCacheConfig\.model"):
        apply_teacache_hook(flux, {"model": "no-such-model"})
    assert set(flux.__dict__) == before_attrs
    assert HookRegistry.get(flux) is None and ditcache.get_cache_runtime(flux) is None
    assert torch.equal(denoise(flux, 4, inputs=inputs), before_out)

    linear = nn.Linear(4, 4)  # coefficients given, but no extractor for this module
    linear_attrs = set(linear.__dict__)
    with pytest.raises(ditcache.core.ExtractorNotFoundError, match="Linear"):
        apply_teacache_hook(linear, {"coefficients": LINEAR})
    assert set(linear.__dict__) == linear_attrs and HookRegistry.get(linear) is None


# ----------------------------------------------------------------------------- 8. coefficients
def test_presets_are_complete() -> None:
    assert TEACACHE_PRESETS
    for key, preset in TEACACHE_PRESETS.items():
        assert len(preset.coefficients) == 5, key
        assert all(isinstance(c, float) and math.isfinite(c) for c in preset.coefficients), key
        assert preset.source.strip(), key
    assert TEACACHE_PRESETS["flux.1-dev"].coefficients == FLUX_DEV


def _tiny_wan(**overrides: Any) -> WanTransformer3DModel:
    config: dict[str, Any] = {
        "patch_size": (1, 2, 2),
        "num_attention_heads": 2,
        "attention_head_dim": 12,
        "in_channels": 4,
        "out_channels": 4,
        "text_dim": 16,
        "freq_dim": 16,
        "ffn_dim": 32,
        "num_layers": 1,
        "rope_max_seq_len": 32,
    }
    config.update(overrides)
    with torch.device("meta"):  # inference reads the class and the config only
        return WanTransformer3DModel(**config)


def _tiny_qwen(**overrides: Any) -> QwenImageTransformer2DModel:
    config: dict[str, Any] = {
        "patch_size": 2,
        "in_channels": 16,
        "out_channels": 4,
        "num_layers": 1,
        "attention_head_dim": 16,
        "num_attention_heads": 2,
        "joint_attention_dim": 16,
        "axes_dims_rope": (4, 6, 6),
    }
    config.update(overrides)
    with torch.device("meta"):
        return QwenImageTransformer2DModel(**config)


@pytest.mark.parametrize(
    ("build", "key", "exact"),
    [
        (lambda: make_flux(), "flux.1-dev", False),
        (lambda: make_flux(num_layers=19, num_single_layers=38), "flux.1-dev", True),
        (lambda: _tiny_qwen(), "qwen-image", False),
        (lambda: _tiny_qwen(num_layers=60), "qwen-image", True),
        (lambda: _tiny_wan(), "wan2.1-t2v-1.3b", False),
        (lambda: _tiny_wan(num_attention_heads=12, attention_head_dim=128), "wan2.1-t2v-1.3b", True),
        (lambda: _tiny_wan(num_attention_heads=40, attention_head_dim=128), "wan2.1-t2v-14b", True),
        (lambda: _tiny_wan(image_dim=16, added_kv_proj_dim=24), "wan2.1-i2v-14b-480p", False),
    ],
    ids=["flux-tiny", "flux-dev", "qwen-tiny", "qwen-full", "wan-t2v-tiny", "wan-t2v-1.3b", "wan-t2v-14b", "wan-i2v"],
)
def test_model_is_inferred_from_the_module(build: Any, key: str, exact: bool) -> None:
    module = build()
    assert infer_teacache_model(module) == (key, exact)
    resolved = TeaCacheConfig().resolve(module)
    assert resolved.preset == key
    assert resolved.coefficients == TEACACHE_PRESETS[key].coefficients


def test_wan22_ti2v_has_no_coefficients() -> None:
    with pytest.raises(ValueError, match="coefficients"):
        TeaCacheConfig().resolve(_tiny_wan(in_channels=48, out_channels=48))


def test_unknown_module_without_coefficients_names_allowed_keys() -> None:
    # Applying to a module without an extractor reports the missing extractor first (issue 10 item 11) ...
    with pytest.raises(ExtractorNotFoundError, match="no extractor is registered for Linear"):
        apply_teacache_hook(nn.Linear(4, 4))
    # ... and resolving a config for a module no preset matches names the allowed keys.
    with pytest.raises(ValueError, match="model") as info:
        TeaCacheConfig().resolve(nn.Linear(4, 4))
    for key in TEACACHE_PRESETS:
        assert repr(key) in str(info.value)
    resolved = TeaCacheConfig(coefficients=LINEAR).resolve(nn.Linear(4, 4))  # explicit coefficients are enough
    assert resolved.coefficients == LINEAR and resolved.preset is None


def test_borrowed_preset_warns(ditcache_logs: Callable[[], list[dict[str, Any]]]) -> None:
    TeaCacheConfig().resolve(make_flux())  # not a published checkpoint: borrows FLUX.1-dev
    TeaCacheConfig(model="flux.1-dev").resolve(make_flux())  # chosen explicitly: no warning
    TeaCacheConfig().resolve(make_flux(num_layers=19, num_single_layers=38))  # the real architecture
    TeaCacheConfig(coefficients=LINEAR).resolve(make_flux())  # own coefficients
    borrowed = [e for e in ditcache_logs() if e["event"] == "teacache.coefficients_borrowed"]
    assert len(borrowed) == 1
    assert borrowed[0]["preset"] == "flux.1-dev" and borrowed[0]["level"] == "warning"
    assert borrowed[0]["model_class"] == "FluxTransformer2DModel"


# ----------------------------------------------------------------------------- 9. logging
def test_decision_and_generation_events(ditcache_logs: Callable[[], list[dict[str, Any]]]) -> None:
    model = make_flux()
    cache = apply_teacache_hook(model, {"rel_l1_thresh": 1.4, "coefficients": LINEAR, "num_inference_steps": 10})
    inputs = make_inputs(model)
    for _ in range(2):  # the config's count is an estimate; a refresh bounds the run, so it ends at its last step
        ditcache.refresh(model, 10)
        denoise(model, 10, 3.0, inputs=inputs)
    events = ditcache_logs()
    decisions = [e for e in events if e["event"] == "cache.decision"]
    generations = [e for e in events if e["event"] == "cache.generation"]
    stats = cache.stats()
    assert len(stats) == 4  # 2 branches x 2 generations, all finished at their known last step
    assert len(decisions) == 2 * 2 * 10  # one per call
    for event in decisions:
        assert {"step", "branch", "skipped", "distance", "accumulated"} <= set(event)
        assert event["level"] == "debug" and event["cache"] == "teacache"
    for s in stats:  # the per-branch event stream is the recorded decisions, in order
        mine = [e for e in decisions if e["branch"] == str(s.branch)]
        assert len(mine) == 20
    expected_decisions = [
        (str(s.branch), d.step, not d.computed, d.info["distance"], d.info["accumulated"])
        for s in stats
        for d in s.decisions
    ]
    got_decisions = [(e["branch"], e["step"], e["skipped"], e["distance"], e["accumulated"]) for e in decisions]
    assert sorted(got_decisions, key=repr) == sorted(expected_decisions, key=repr)
    assert [
        (e["level"], e["branch"], e["steps"], e["computed"], e["skipped"], e["skipped_steps"]) for e in generations
    ] == [("info", str(s.branch), 10, len(s.computed_steps), len(s.skipped_steps), s.skipped_steps) for s in stats]


def test_no_decision_events_above_debug(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logging.getLogger("ditcache"), "propagate", True)
    model = make_flux()
    apply_teacache_hook(model, {"rel_l1_thresh": 1.4, "coefficients": LINEAR, "num_inference_steps": 6})
    ditcache.refresh(model, num_inference_steps=6)  # this run's count: the generation ends at its last step
    with caplog.at_level(logging.INFO, logger="ditcache"):
        denoise(model, 6, inputs=make_inputs(model))
    events = [e["event"] for e in map(event_of, caplog.records) if e is not None]
    assert events == ["cache.generation"]


# ----------------------------------------------------------------------------- 10. stats
def test_stats_are_consistent() -> None:
    model = make_flux()
    cache = apply_teacache_hook(model, {"rel_l1_thresh": 1.4, "coefficients": LINEAR})
    inputs = make_inputs(model)
    for _ in range(2):  # a refresh bounds each run to 12 steps: both end (into the history) at their last step
        ditcache.refresh(model, 12)
        denoise(model, 12, 3.0, inputs=inputs)
    stats = cache.stats()
    assert ditcache.cache_stats(model) == {"teacache": stats}
    assert len(stats) == 4
    assert len({(str(s.branch), s.generation) for s in stats}) == 4
    for s in stats:
        assert s.cache == "teacache"
        computed, skipped = s.computed_steps, s.skipped_steps
        assert sorted(computed + skipped) == list(range(12)) and not set(computed) & set(skipped)
        assert computed == sorted(computed) and skipped == sorted(skipped)
        assert skipped and 0 in computed and 11 in computed  # first and known-last steps are forced
        summary = s.as_dict()
        assert summary == {
            "cache": "teacache",
            "branch": str(s.branch),
            "generation": s.generation,
            "steps": 12,
            "computed": len(computed),
            "skipped": len(skipped),
            "skipped_steps": skipped,
        }
        assert json.loads(json.dumps(summary)) == summary
    # refresh() finished nothing still running: the four generations are all in the history.
    assert list(cache.history) == stats


# ------------------------------------------------------------------------------- the monotone rescaling (issue 10)
# Rises to 0.5 at x = 0.03, then falls below zero from x ~ 0.047 (the distances of this model are ~0.04-0.09):
# the published rule accumulates negative values there, so a *larger* change makes a step *more* skippable.
HUMP = (0.0, 0.0, -2000.0, 120.0, -1.3)


def test_rescaled_distance_is_never_negative_and_never_decreasing_by_default() -> None:
    xs = np.linspace(0.0, 0.6, 1201)
    for key in TEACACHE_PRESETS:
        resolved = TeaCacheConfig(model=key).resolve(None)
        values = [resolved.rescale(float(x)) for x in xs]
        assert min(values) >= 0.0, key
        assert all(b >= a for a, b in itertools.pairwise(values)), key
    # Wan 2.1 1.3B's polynomial is negative at 0.31: the reference behaviour, kept as an explicit option.
    published = TeaCacheConfig(model="wan2.1-t2v-1.3b", rescale="published").resolve(None)
    default = TeaCacheConfig(model="wan2.1-t2v-1.3b").resolve(None)
    assert published.rescale(0.31) < 0.0 < default.rescale(0.31)
    assert default.rescale(0.31) >= default.rescale(0.2) >= default.rescale(0.1)
    # Where the polynomial rises to a new high it is unchanged (FLUX beyond the bottom of its initial dip).
    flux_default = TeaCacheConfig(model="flux.1-dev").resolve(None)
    flux_published = TeaCacheConfig(model="flux.1-dev", rescale="published").resolve(None)
    for x in (0.1, 0.2, 0.3, 0.5):
        assert flux_default.rescale(x) == flux_published.rescale(x)
    assert flux_default.rescale(0.0) == flux_published.rescale(0.0528439614272596)  # the bottom of the dip


def test_a_tiny_threshold_never_skips_with_the_default_rescaling() -> None:
    def skipped(**config: Any) -> list[int]:
        model = make_flux()
        cache = apply_teacache_hook(model, {"rel_l1_thresh": 1e-12, "coefficients": HUMP, **config})
        denoise(model, N_STEPS, inputs=make_inputs(model))
        return cache.stats()[-1].skipped_steps

    assert skipped(rescale="published"), "the published polynomial goes negative here and skips"
    assert skipped() == []


def test_rescale_and_abs_rescaled_agree() -> None:
    assert TeaCacheConfig(abs_rescaled=True) == TeaCacheConfig(rescale="abs")
    assert TeaCacheConfig(rescale="abs").abs_rescaled is True
    with pytest.raises(ValueError, match=r"TeaCacheConfig\.rescale: 'published' and abs_rescaled=True disagree"):
        TeaCacheConfig(rescale="published", abs_rescaled=True)
    with pytest.raises(ValueError, match=r"TeaCacheConfig\.rescale: expected one of \['monotone', 'published'"):
        TeaCacheConfig(rescale="clamp")


def test_numpy_scalars_are_accepted() -> None:
    cfg = TeaCacheConfig(
        rel_l1_thresh=np.float32(0.25),
        num_inference_steps=np.int64(28),
        warmup_steps=np.int32(1),
        force_last_step=np.bool_(True),
        coefficients=np.array(FLUX_DEV),
    )
    assert cfg.num_inference_steps == 28 and type(cfg.num_inference_steps) is int
    assert type(cfg.rel_l1_thresh) is float and type(cfg.force_last_step) is bool
    assert cfg == TeaCacheConfig.from_dict(attrs.asdict(cfg))


def test_unknown_key_suggests_the_closest_setting() -> None:
    with pytest.raises(ValueError, match=r"closest: 'rel_l1_threshold' -> 'rel_l1_thresh'"):
        TeaCacheConfig.from_dict({"rel_l1_threshold": 0.3})
