"""The error tolerance ``rtol`` of TeaCache and MagCache (``ditcache.caches.tolerance``).

The controller on its own (threshold from a measured error, growth and shrink limits, no raise from forced steps),
then the two caches under it: refused combinations fail at config time, nothing is skipped before the first
measurement, a tolerance too tight to skip leaves the model bit-exact, a loose one skips and records what it
measured, and on the trained bundled model a tighter tolerance gives a closer image with more steps computed.
"""

from __future__ import annotations

import math
from typing import Any

import attrs
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ditcache
from _support.flux import denoise, make_flux, make_inputs, replay
from ditcache.bundled import get_bundled_model
from ditcache.caches.magcache import MagCacheConfig, apply_magcache_hook
from ditcache.caches.teacache import RAW_DISTANCE, TeaCacheConfig, apply_teacache_hook
from ditcache.caches.tolerance import MAX_EXTRAPOLATION, MAX_GROWTH, MAX_SHRINK, SAFETY, ErrorControl
from ditcache.core.metrics import psnr, rel_l1
from ditcache.presets.teacache import TEACACHE_PRESETS

STEPS = 20


# ---------------------------------------------------------------------------------------------- the controller
def test_nothing_is_allowed_before_the_first_observation() -> None:
    control = ErrorControl(0.05)
    assert control.threshold is None
    assert not control.allows(0.0)
    assert not control.allows(1e-12)


def test_first_observation_sets_the_threshold_from_the_error_model() -> None:
    control = ErrorControl(0.05, order=1)
    threshold = control.observe(0.4, 0.03)
    assert threshold == pytest.approx(0.4 * SAFETY * (0.05 / 0.03) ** 0.5)
    assert control.allows(threshold * 0.99) and not control.allows(threshold)


def test_a_small_error_extrapolates_at_most_the_limit() -> None:
    control = ErrorControl(0.05)
    assert control.observe(0.1, 1e-9) == pytest.approx(0.1 * MAX_EXTRAPOLATION)
    fresh = ErrorControl(0.05)
    assert fresh.observe(0.1, 0.0) == pytest.approx(0.1 * MAX_EXTRAPOLATION)


def test_growth_and_shrink_per_observation_are_limited() -> None:
    control = ErrorControl(0.05)
    first = control.observe(1.0, 0.05 / SAFETY)  # the error model gives back 1.0 * SAFETY**2... roughly 0.81
    assert first is not None
    assert control.observe(100.0, 1e-9) == pytest.approx(first * MAX_GROWTH)
    grown = control.threshold
    assert grown is not None
    assert control.observe(1e-3, 10.0) == pytest.approx(grown * MAX_SHRINK)


def test_a_forced_step_may_lower_but_not_raise() -> None:
    control = ErrorControl(0.05)
    first = control.observe(0.5, 0.05)
    assert first is not None
    assert control.observe(5.0, 1e-6, may_raise=False) == first
    lower = control.observe(0.5, 0.5, may_raise=False)
    assert lower is not None and lower < first


def test_an_infinite_error_blocks_skipping_without_freezing_the_threshold() -> None:
    control = ErrorControl(0.05)
    assert control.observe(0.3, math.inf) == 0.0
    assert not control.allows(0.0)
    assert control.observe(0.3, 0.05) == pytest.approx(0.3 * SAFETY)  # recovers on the next measurement


def test_observations_without_a_step_size_are_ignored() -> None:
    control = ErrorControl(0.05)
    assert control.observe(0.0, 0.1) is None
    assert control.observe(math.nan, 0.1) is None
    assert control.observe(0.2, math.nan) is None
    assert control.observations == 0


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.1, math.inf, math.nan])
def test_rtol_outside_the_open_unit_interval_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match=r"ErrorControl\.rtol: expected a number in \(0, 1\)"):
        ErrorControl(bad)


def test_order_is_checked() -> None:
    with pytest.raises(ValueError, match=r"ErrorControl\.order: expected an int >= 0"):
        ErrorControl(0.1, order=-1)


@settings(max_examples=200, deadline=None)
@given(
    rtol=st.floats(1e-4, 0.9),
    acc=st.floats(1e-6, 1e3),
    e1=st.floats(1e-8, 10.0),
    e2=st.floats(1e-8, 10.0),
)
def test_a_larger_error_never_gives_a_larger_threshold(rtol: float, acc: float, e1: float, e2: float) -> None:
    lo, hi = sorted((e1, e2))
    a, b = ErrorControl(rtol), ErrorControl(rtol)
    t_lo, t_hi = a.observe(acc, lo), b.observe(acc, hi)
    assert t_lo is not None and t_hi is not None
    assert t_hi <= t_lo * (1 + 1e-12)
    assert t_lo <= acc * MAX_EXTRAPOLATION * (1 + 1e-12)


# ---------------------------------------------------------------------------------------------- configs
@pytest.mark.parametrize(
    ("config", "kwargs", "message"),
    [
        (TeaCacheConfig, {"rtol": 0.1, "rel_l1_thresh": 0.4}, r"TeaCacheConfig\.rtol: give either rtol .* not both"),
        (TeaCacheConfig, {"rtol": 0.1, "rel_l1_thresh": 0.2}, r"TeaCacheConfig\.rtol: give either rtol"),  # the default
        (MagCacheConfig, {"rtol": 0.1, "threshold": 0.06}, r"MagCacheConfig\.rtol: give either rtol"),  # the default
        (TeaCacheConfig, {"rtol": 0}, r"TeaCacheConfig\.rtol: expected a number in \(0, 1\) or None"),
        (TeaCacheConfig, {"rtol": 1.0}, r"TeaCacheConfig\.rtol"),
        (TeaCacheConfig, {"rtol": "0.1"}, r"TeaCacheConfig\.rtol"),
        (MagCacheConfig, {"rtol": 0.1, "threshold": 0.2}, r"MagCacheConfig\.rtol: give either rtol .* not both"),
        (MagCacheConfig, {"rtol": 0.1, "calibrate": True}, r"MagCacheConfig\.rtol: a calibration run never skips"),
        (MagCacheConfig, {"rtol": -0.1}, r"MagCacheConfig\.rtol"),
    ],
)
def test_refused_settings_fail_at_config_time(config: Any, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        config(**kwargs)


def test_magcache_has_no_schedule_under_rtol() -> None:
    config = MagCacheConfig(rtol=0.1, num_inference_steps=STEPS, model="flux.1-dev")
    with pytest.raises(ValueError, match=r"MagCacheConfig\.rtol: .* no schedule exists before it"):
        config.schedule()
    cache = apply_magcache_hook(make_flux(), config)
    with pytest.raises(ValueError, match=r"no schedule exists before it"):
        cache.schedule(STEPS)


def test_teacache_rtol_accumulates_the_raw_distance_when_coefficients_would_be_borrowed() -> None:
    model = make_flux()  # a tiny Flux matches no published checkpoint: FLUX.1-dev's polynomial would be borrowed
    assert TeaCacheConfig(rtol=0.1).resolve(model).coefficients == RAW_DISTANCE
    assert TeaCacheConfig().resolve(model).coefficients == TEACACHE_PRESETS["flux.1-dev"].coefficients
    chosen = TeaCacheConfig(rtol=0.1, model="flux.1-dev").resolve(model)  # named by the user: used as given
    assert chosen.coefficients == TEACACHE_PRESETS["flux.1-dev"].coefficients
    assert chosen.rtol == 0.1 and chosen.order == 0
    assert TeaCacheConfig(rtol=0.1, taylorseer=True, taylorseer_order=2).resolve(model).order == 2


# ---------------------------------------------------------------------------------------------- the caches
def _apply(kind: str, model: torch.nn.Module, rtol: float, **extra: Any) -> Any:
    if kind == "teacache":
        return apply_teacache_hook(model, TeaCacheConfig(rtol=rtol, **extra))
    extra.setdefault("retention_ratio", 0.1)
    return apply_magcache_hook(model, MagCacheConfig(rtol=rtol, model="flux.1-dev", **extra))


def _run(model: torch.nn.Module, cfg: float | None = None) -> torch.Tensor:
    ditcache.refresh(model, num_inference_steps=STEPS)
    return denoise(model, STEPS, cfg, inputs=make_inputs(model), branch_mode="cache_context")


@pytest.mark.parametrize("kind", ["teacache", "magcache"])
def test_a_tolerance_too_tight_to_skip_is_bit_exact(kind: str) -> None:
    native = denoise(make_flux(), STEPS, 3.0, branch_mode="cache_context")
    model = make_flux()
    cache = _apply(kind, model, 1e-9)
    out = _run(model, 3.0)
    assert torch.equal(out, native)
    stats = cache.stats()
    assert len(stats) == 2 and all(not s.skipped_steps for s in stats)
    assert any(d.info["measured_error"] is not None for s in stats for d in s.decisions)


@pytest.mark.parametrize("kind", ["teacache", "magcache"])
@pytest.mark.parametrize("forecast", [None, {"order": 1}, {"order": 1, "target": "output"}])
def test_a_loose_tolerance_skips_only_after_measuring(kind: str, forecast: dict[str, Any] | None) -> None:
    model = make_flux()
    cache = _apply(kind, model, 0.9, forecast=forecast, max_consecutive_skips=3) if kind == "teacache" else None
    if cache is None:
        cache = _apply(kind, model, 0.9, forecast=forecast)
    _run(model)
    (stats,) = cache.stats()
    assert stats.skipped_steps, "a 90% tolerance skips something on a 20-step run"
    first_measured = min(d.step for d in stats.decisions if d.info["measured_error"] is not None)
    assert min(stats.skipped_steps) > first_measured
    for d in stats.decisions:
        if not d.computed:
            assert d.info["threshold"] is not None and d.info["measured_error"] is None
    assert STEPS - 1 not in stats.skipped_steps or kind == "magcache"  # TeaCache forces the last step


def test_magcache_rtol_keeps_the_retention_window_and_the_skip_cap() -> None:
    model = make_flux()
    cache = _apply("magcache", model, 0.9, retention_ratio=0.25, max_skip_steps=2)
    _run(model)
    (stats,) = cache.stats()
    assert stats.skipped_steps and min(stats.skipped_steps) >= 5
    skipped = set(stats.skipped_steps)
    assert not any({s, s + 1, s + 2} <= skipped for s in skipped)


@pytest.mark.parametrize("kind", ["teacache", "magcache"])
def test_generations_restart_the_control(kind: str) -> None:
    model = make_flux()
    cache = _apply(kind, model, 0.5)
    first = _run(model)
    second = _run(model)
    assert torch.equal(first, second)
    a, b = cache.stats()
    assert [d.computed for d in a.decisions] == [d.computed for d in b.decisions]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["teacache", "magcache"])
def test_a_tighter_tolerance_is_closer_to_the_uncached_model(kind: str) -> None:
    entry = get_bundled_model("digits")
    labels, steps = [0, 3, 7], 30
    reference = entry.sample(entry.load(), labels, steps, 0.0, 0)
    results = {}
    for rtol in (0.01, 0.2):
        model = entry.load()
        if kind == "teacache":
            cache = apply_teacache_hook(model.transformer, TeaCacheConfig(rtol=rtol))
        else:
            cache = apply_magcache_hook(
                model.transformer, MagCacheConfig(rtol=rtol, retention_ratio=0.1, max_skip_steps=6)
            )
        images = entry.sample(model, labels, steps, 0.0, 0)
        computed = sum(len(s.computed_steps) for s in cache.stats())
        results[rtol] = (psnr(images, reference, data_range=entry.data_range), computed)
    (tight_psnr, tight_computed), (loose_psnr, loose_computed) = results[0.01], results[0.2]
    assert tight_psnr > loose_psnr
    assert tight_computed > loose_computed
    assert loose_computed < steps, "a 20% tolerance skips steps on the trained model"


def test_nothing_is_skipped_until_some_error_was_within_the_tolerance() -> None:
    control = ErrorControl(0.05)
    control.observe(0.4, 0.08)  # the power law puts the threshold near 0.3, but no reuse has met 5% yet
    assert control.threshold is not None and control.threshold > 0.1
    assert not control.allows(0.0) and not control.allows(0.1)
    control.observe(0.05, 0.01)
    assert control.allows(0.0)


@pytest.mark.parametrize("forecast", [None, {"order": 1, "target": "output"}])
def test_the_measured_error_is_the_error_a_skip_makes_in_the_output(forecast: dict[str, Any] | None) -> None:
    """The error recorded at a computed step equals rel_l1(what skipping that step returns, the real output)."""
    calls: list[Any] = []
    native = make_flux()
    denoise(native, 4, trace=calls)
    reference = replay(native, calls)
    common = {"coefficients": RAW_DISTANCE, "warmup_steps": 1, "force_last_step": False, "forecast": forecast}
    skipping = make_flux()
    apply_teacache_hook(skipping, TeaCacheConfig(rel_l1_thresh=1e9, max_consecutive_skips=1, **common))
    skipped = replay(skipping, calls)  # steps 1 and 3 reuse
    measuring = make_flux()
    cache = apply_teacache_hook(measuring, TeaCacheConfig(rtol=1e-9, **common))
    replay(measuring, calls)
    (stats,) = cache.stats()
    measured = {d.step: d.info["measured_error"] for d in stats.decisions}
    # step 3: the residual of step 2 either way; a forecast's history differs after step 1 (0, 2 vs 0, 1, 2)
    for step in (1, 3) if forecast is None else (1,):
        expected = rel_l1(skipped[step], reference[step])
        assert measured[step] == pytest.approx(expected, rel=1e-5), step


def test_output_values_read_every_kind_of_return_value() -> None:
    from diffusers.models.modeling_outputs import Transformer2DModelOutput

    from ditcache.caches.reuse import output_values

    a, b = torch.arange(4.0).reshape(2, 2), torch.arange(3.0)
    assert torch.equal(output_values(a), a)
    assert torch.equal(output_values((a,)), a)
    assert torch.equal(output_values(Transformer2DModelOutput(sample=a)), a)
    both = torch.cat([a.reshape(-1), b])
    assert torch.equal(output_values(([a, b],)), both)  # Z-Image: a list of per-sample tensors
    assert torch.equal(output_values(Transformer2DModelOutput(sample=[a, b])), both)
    with pytest.raises(TypeError, match="cannot find the output tensor in a str"):
        output_values("nope")


def test_the_thresholds_default_only_without_rtol() -> None:
    assert TeaCacheConfig().rel_l1_thresh == 0.2 and TeaCacheConfig(rtol=0.1).rel_l1_thresh is None
    assert MagCacheConfig().threshold == 0.06 and MagCacheConfig(rtol=0.1).threshold is None
    assert TeaCacheConfig.from_dict(attrs.asdict(TeaCacheConfig(rtol=0.1))) == TeaCacheConfig(rtol=0.1)
