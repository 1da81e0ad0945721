"""The TaylorSeer option of the step-level caches (``taylorseer`` / ``taylorseer_order`` / ``taylorseer_method`` of
TeaCacheConfig and MagCacheConfig) and the ResidualCache that implements it.

With forecasting on, a skipped step adds the TaylorSeer extrapolation of the computed steps' block-stack residuals
instead of the last residual; nothing else changes. So, on the tiny random Flux of ``tests/_support/flux.py``:

* fed the same inputs, a forecasting cache makes the same decisions as plain reuse, returns the same outputs on
  computed steps and on skipped steps with a single computed step behind them, and different ones on the other
  skipped steps;
* ``taylorseer_order=0`` is plain reuse and a never-skipping setting is the uncached model, bit for bit.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import torch
from diffusers import FluxTransformer2DModel

import ditcache
from _support.flux import FluxCall, FluxInputs, denoise, replay
from _support.probes import decisions, rel_err
from ditcache import MagCacheConfig, TeaCacheConfig
from ditcache.caches.reuse import ForecastSettings, ResidualCache
from ditcache.core import CacheMiddleware

STEPS = 20
LINEAR = (0.0, 0.0, 0.0, 10.0, 0.0)  # TeaCache polynomial for the random model: 10 * x

# Skipping settings (TeaCache: 12 of 20 steps skipped, MagCache: 13), and settings that never skip.
SKIPPING: dict[str, dict[str, Any]] = {
    "teacache": {"rel_l1_thresh": 1.4, "coefficients": LINEAR},
    "magcache": {"threshold": 0.24, "max_skip_steps": 3, "retention_ratio": 0.1, "model": "flux.1-dev"},
}
NEVER: dict[str, dict[str, Any]] = {
    "teacache": {"rel_l1_thresh": 1e-9, "coefficients": LINEAR},
    "magcache": {"threshold": 0.24, "max_skip_steps": 3, "retention_ratio": 0.99, "model": "flux.1-dev"},
}
_APPLY: dict[str, Callable[[torch.nn.Module, dict[str, Any]], CacheMiddleware[Any]]] = {
    "teacache": ditcache.apply_teacache_hook,
    "magcache": ditcache.apply_magcache_hook,
}
CACHES = list(_APPLY)


pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------------------------ helpers
def cached(base: FluxTransformer2DModel, cache: str, **settings: Any) -> tuple[torch.nn.Module, CacheMiddleware[Any]]:
    model = copy.deepcopy(base)
    mw = _APPLY[cache](model, settings)
    ditcache.refresh(model, num_inference_steps=STEPS)
    return model, mw


def run(
    model: torch.nn.Module, inputs: FluxInputs, trace: list[FluxCall] | None = None
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One generation: the final latents and the model's output of every call."""
    outputs: list[torch.Tensor] = []
    handle = model.register_forward_hook(lambda mod, args, out: outputs.append(out[0]))
    try:
        final = denoise(model, STEPS, inputs=inputs, trace=trace)
    finally:
        handle.remove()
    return final, outputs


# ------------------------------------------------------------------------------------------------------ in a loop
@pytest.mark.parametrize("method", ["taylor", "newton"])
@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize("cache", CACHES)
def test_forecast_changes_only_skipped_steps_given_the_same_inputs(
    base: FluxTransformer2DModel, inputs: FluxInputs, cache: str, order: int, method: str
) -> None:
    plain_model, plain = cached(base, cache, **SKIPPING[cache])
    trace: list[FluxCall] = []
    _, plain_out = run(plain_model, inputs, trace)
    model, seer = cached(
        base, cache, **SKIPPING[cache], taylorseer=True, taylorseer_order=order, taylorseer_method=method
    )
    outputs = replay(model, trace)
    assert decisions(seer) == decisions(plain)  # the decisions never depend on the reused residual
    computed_before = 0
    changed = 0
    for step, (got, want) in enumerate(zip(outputs, plain_out, strict=True)):
        computed = plain.stats()[-1].decisions[step].computed
        if computed or computed_before < 2:
            # Computed steps run the blocks; a skip with one computed step behind it has nothing to extrapolate.
            assert torch.equal(got, want), f"step {step} changed"
        else:
            assert not torch.equal(got, want), f"skipped step {step} was not forecast"
            changed += 1
        computed_before += computed
    assert changed >= 5


@pytest.mark.parametrize("cache", CACHES)
def test_forecast_in_a_closed_loop_diverges_first_on_a_skipped_step(
    base: FluxTransformer2DModel, inputs: FluxInputs, cache: str
) -> None:
    plain_model, plain = cached(base, cache, **SKIPPING[cache])
    plain_final, plain_out = run(plain_model, inputs)
    model, seer = cached(base, cache, **SKIPPING[cache], taylorseer=True)
    final, outputs = run(model, inputs)
    assert not torch.equal(final, plain_final)
    first = next(i for i, (a, b) in enumerate(zip(outputs, plain_out, strict=True)) if not torch.equal(a, b))
    plain_decisions, seer_decisions = decisions(plain), decisions(seer)
    assert seer_decisions[: first + 1] == plain_decisions[: first + 1]
    assert plain_decisions[first][1] is False, "the first output that changed must be a skipped step's"
    assert sum(computed for _, computed, _ in plain_decisions[:first]) >= 2
    if cache == "magcache":  # the schedule is fixed up front: identical decisions all the way
        assert [d[:2] for d in seer_decisions] == [d[:2] for d in plain_decisions]


@pytest.mark.parametrize("cache", CACHES)
def test_order_zero_is_plain_reuse(base: FluxTransformer2DModel, inputs: FluxInputs, cache: str) -> None:
    plain_model, plain = cached(base, cache, **SKIPPING[cache])
    model, seer = cached(base, cache, **SKIPPING[cache], taylorseer=True, taylorseer_order=0)
    plain_final, _ = run(plain_model, inputs)
    final, _ = run(model, inputs)
    assert plain.stats()[-1].skipped_steps
    assert torch.equal(final, plain_final)
    assert decisions(seer) == decisions(plain)


@pytest.mark.parametrize("method", ["taylor", "newton"])
@pytest.mark.parametrize("cache", CACHES)
def test_never_skipping_setting_with_forecast_is_uncached(
    base: FluxTransformer2DModel, inputs: FluxInputs, uncached: torch.Tensor, cache: str, method: str
) -> None:
    model, seer = cached(base, cache, **NEVER[cache], taylorseer=True, taylorseer_order=2, taylorseer_method=method)
    final, _ = run(model, inputs)
    assert seer.stats()[-1].skipped_steps == []
    assert torch.equal(final, uncached)


@pytest.mark.parametrize("cache", CACHES)
def test_forecast_stacks_over_dbcache(base: FluxTransformer2DModel, inputs: FluxInputs, cache: str) -> None:
    """The forecast is of the whole stack's residual: over a DBCache that never hits it is the outer cache alone."""
    settings = {**SKIPPING[cache], "taylorseer": True}
    alone, _ = cached(base, cache, **settings)
    model, _ = cached(base, cache, **settings)
    db = ditcache.apply_dbcache_hook(model, {"fn_compute_blocks": 1, "residual_diff_threshold": 0.0})
    ditcache.refresh(model, num_inference_steps=STEPS)
    final, _ = run(model, inputs)
    ref, _ = run(alone, inputs)
    assert db.stats()[-1].skipped_steps == []
    assert torch.equal(final, ref)


@pytest.mark.parametrize("cache", CACHES)
def test_forecast_error_stays_of_the_order_of_plain_reuse(
    base: FluxTransformer2DModel, inputs: FluxInputs, uncached: torch.Tensor, cache: str
) -> None:
    """On random weights forecasting need not help; it must not blow up either (observed ratios 0.6-1.5)."""
    plain_final, _ = run(cached(base, cache, **SKIPPING[cache])[0], inputs)
    plain = rel_err(plain_final, uncached)
    assert 0 < plain < 0.02
    for order, method in ((1, "taylor"), (2, "taylor"), (2, "newton")):
        model, _ = cached(
            base, cache, **SKIPPING[cache], taylorseer=True, taylorseer_order=order, taylorseer_method=method
        )
        final, _ = run(model, inputs)
        assert 0 < rel_err(final, uncached) < 2 * plain, (order, method)


# ------------------------------------------------------------------------------------------------------ ResidualCache
def _t(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_residual_cache_store_apply_and_usable_for() -> None:
    cache = ResidualCache()
    h_in, h_out, e_in, e_out = _t(1, 6, 4, seed=0), _t(1, 6, 4, seed=1), _t(1, 3, 4, seed=2), _t(1, 3, 4, seed=3)
    assert not cache.usable_for(h_in)
    cache.store(2, h_in, e_in, h_out, e_out)
    assert cache.step == 2
    assert torch.equal(cache.hidden, h_out - h_in)  # type: ignore[arg-type]
    assert torch.equal(cache.encoder, e_out - e_in)  # type: ignore[arg-type]
    assert cache.usable_for(_t(1, 6, 4, seed=4))
    assert not cache.usable_for(_t(1, 7, 4, seed=4)) and not cache.usable_for(_t(2, 6, 4, seed=4))
    h, e = _t(1, 6, 4, seed=5), _t(1, 3, 4, seed=6)
    got_h, got_e = cache.apply(5, h, e)
    assert torch.equal(got_h, h + (h_out - h_in))
    assert got_e is not None and torch.equal(got_e, e + (e_out - e_in))


@pytest.mark.parametrize("forecast", [None, ForecastSettings(1)], ids=["plain", "forecast"])
def test_residual_cache_leaves_an_unchanged_encoder_stream_alone(forecast: ForecastSettings | None) -> None:
    h_in, h_out, e = _t(1, 6, 4, seed=0), _t(1, 6, 4, seed=1), _t(1, 3, 4, seed=2)
    cache = ResidualCache(forecast)
    for step in (0, 1):
        cache.store(step, h_in, e, h_out + step, e)  # the blocks return the encoder stream itself (Wan)
    assert cache.encoder is None
    e_next = _t(1, 3, 4, seed=3)
    _, got_e = cache.apply(3, h_in, e_next)
    assert got_e is e_next
    # No encoder stream at all, and a stream whose shape the blocks change (no residual can be formed).
    cache.store(4, h_in, None, h_out, None)
    assert cache.encoder is None and cache.apply(5, h_in, None)[1] is None
    cache.store(6, h_in, e, h_out, _t(1, 5, 4, seed=4))
    assert cache.encoder is None and cache.apply(7, h_in, e_next)[1] is e_next


def test_residual_cache_encoder_forecast_restarts_after_an_unchanged_stretch() -> None:
    cache = ResidualCache(ForecastSettings(1))
    h, e = _t(1, 6, 4, seed=0), _t(1, 3, 4, seed=1)
    r0, r2 = _t(1, 3, 4, seed=2), _t(1, 3, 4, seed=3)
    cache.store(0, h, e, h, e + r0)
    cache.store(1, h, e, h, e)  # unchanged: the encoder forecaster forgets step 0
    cache.store(2, h, e, h, e + r2)
    _, got_e = cache.apply(4, h, e)
    assert got_e is not None and torch.equal(got_e, e + r2)  # one point since the restart: plain reuse


@pytest.mark.parametrize("method", ["taylor", "newton"])
def test_residual_cache_forecasts_a_linear_residual_exactly_at_order_1(method: str) -> None:
    a_h, b_h, a_e, b_e = _t(1, 6, 4, seed=0), _t(1, 6, 4, seed=1), _t(1, 3, 4, seed=2), _t(1, 3, 4, seed=3)
    h_in, e_in = _t(1, 6, 4, seed=4), _t(1, 3, 4, seed=5)
    cache = ResidualCache(ForecastSettings(1, method))
    for s in (0, 3):  # residual(s) = a + b * s on both streams, computed at steps 0 and 3
        cache.store(s, h_in, e_in, h_in + a_h + b_h * s, e_in + a_e + b_e * s)
    h, e = _t(1, 6, 4, seed=6), _t(1, 3, 4, seed=7)
    got_h, got_e = cache.apply(1 + 3 + 2, h, e)
    torch.testing.assert_close(got_h, h + a_h + b_h * 6, rtol=1e-12, atol=1e-12)
    assert got_e is not None
    torch.testing.assert_close(got_e, e + a_e + b_e * 6, rtol=1e-12, atol=1e-12)
    plain = ResidualCache()
    for s in (0, 3):
        plain.store(s, h_in, e_in, h_in + a_h + b_h * s, e_in + a_e + b_e * s)
    assert not torch.equal(plain.apply(6, h, e)[0], got_h)  # plain reuse is off by b * 3
    torch.testing.assert_close(plain.apply(6, h, e)[0], h + a_h + b_h * 3, rtol=1e-12, atol=1e-12)


def test_residual_cache_with_one_computed_step_or_order_0_is_plain_reuse() -> None:
    h_in, h_out, h = _t(1, 6, 4, seed=0), _t(1, 6, 4, seed=1), _t(1, 6, 4, seed=2)
    one = ResidualCache(ForecastSettings(2))
    one.store(0, h_in, None, h_out, None)
    assert torch.equal(one.apply(4, h, None)[0], h + (h_out - h_in))
    zero = ResidualCache(ForecastSettings(0))
    for s in (0, 1, 2):
        zero.store(s, h_in, None, h_out * (s + 1), None)
    assert torch.equal(zero.apply(5, h, None)[0], h + (h_out * 3 - h_in))


# ------------------------------------------------------------------------------------------------------ validation
@pytest.mark.parametrize("config", [TeaCacheConfig, MagCacheConfig], ids=lambda c: c.__name__)
@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"taylorseer_order": -1}, ValueError, r"\.taylorseer_order: expected an int >= 0"),
        ({"taylorseer_order": 1.5}, ValueError, r"\.taylorseer_order: expected an int >= 0"),
        ({"taylorseer_order": True}, ValueError, r"\.taylorseer_order: expected an int >= 0"),
        ({"taylorseer_method": "euler"}, ValueError, r"\.taylorseer_method: expected one of \['taylor', 'newton'\]"),
        ({"taylorseer": 1}, TypeError, r"\.taylorseer: expected True or False"),
        ({"taylorseer": "yes"}, TypeError, r"\.taylorseer: expected True or False"),
    ],
)
def test_invalid_forecast_settings_name_the_field(
    config: type[Any], kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=rf"^{config.__name__}{message}"):
        config(**kwargs)
    with pytest.raises(error, match=rf"^{config.__name__}{message}"):
        config.from_dict(kwargs)


@pytest.mark.parametrize("config", [TeaCacheConfig, MagCacheConfig], ids=lambda c: c.__name__)
def test_forecast_settings_are_validated_even_when_off_and_exposed_when_on(config: type[Any]) -> None:
    with pytest.raises(ValueError, match=rf"^{config.__name__}\.taylorseer_order"):
        config(taylorseer=False, taylorseer_order=-2)
    assert config().forecast() is None
    assert config(taylorseer=True, taylorseer_order=2, taylorseer_method="newton").forecast() == ForecastSettings(
        2, "newton"
    )
    with pytest.raises(ValueError, match=r"unknown setting.*taylorseer_order"):
        config.from_dict({"taylorseer_ordr": 2})


# ------------------------------------------------------------------------------------------------------ output target
@pytest.mark.parametrize("cache", CACHES)
def test_output_target_never_skipping_is_uncached(
    base: FluxTransformer2DModel, inputs: FluxInputs, uncached: torch.Tensor, cache: str
) -> None:
    model, _ = cached(base, cache, **NEVER[cache], taylorseer=True, taylorseer_target="output")
    final, _ = run(model, inputs)
    assert torch.equal(final, uncached)


@pytest.mark.parametrize("cache", CACHES)
def test_output_target_forecasts_the_model_output(base: FluxTransformer2DModel, inputs: FluxInputs, cache: str) -> None:
    # Same inputs as a plain run: same decisions; computed steps return the real output; a skipped step returns
    # exactly the last computed output at order 0, and an order-1 extrapolation of the outputs once two exist.
    plain_model, plain = cached(base, cache, **SKIPPING[cache])
    trace: list[FluxCall] = []
    _, plain_out = run(plain_model, inputs, trace)
    order0_model, order0 = cached(
        base, cache, **SKIPPING[cache], taylorseer=True, taylorseer_order=0, taylorseer_target="output"
    )
    out0 = replay(order0_model, trace)
    order1_model, order1 = cached(
        base, cache, **SKIPPING[cache], taylorseer=True, taylorseer_order=1, taylorseer_target="output"
    )
    out1 = replay(order1_model, trace)
    assert decisions(order0) == decisions(plain) and [d[:2] for d in decisions(order1)] == [
        d[:2] for d in decisions(plain)
    ]
    computed_steps: list[int] = []
    skipped_with_history = 0
    for step, want in enumerate(plain_out):
        if plain.stats()[-1].decisions[step].computed:
            assert torch.equal(out0[step], want) and torch.equal(out1[step], want)
            computed_steps.append(step)
            continue
        last = computed_steps[-1]
        assert torch.equal(out0[step], plain_out[last])  # order 0: the last real output, head skipped too
        if len(computed_steps) >= 2:
            prev = computed_steps[-2]
            slope = (plain_out[last] - plain_out[prev]) / (last - prev)
            torch.testing.assert_close(out1[step], plain_out[last] + slope * (step - last), rtol=1e-5, atol=1e-6)
            skipped_with_history += 1
    assert skipped_with_history >= 3


def test_output_target_requires_taylorseer() -> None:
    with pytest.raises(ValueError, match=r"TeaCacheConfig\.taylorseer_target: 'output' forecasts with TaylorSeer"):
        TeaCacheConfig(taylorseer_target="output")
    with pytest.raises(ValueError, match=r"TeaCacheConfig\.taylorseer_target: expected one of"):
        TeaCacheConfig(taylorseer=True, taylorseer_target="velocity")


def test_output_tensor_round_trips_every_return_type() -> None:
    from diffusers.models.modeling_outputs import Transformer2DModelOutput

    from ditcache.caches.reuse import output_tensor, with_output_tensor

    t, u = torch.ones(2, 3), torch.zeros(2, 3)
    for template in (t, (t,), [t, "extra"], Transformer2DModelOutput(sample=t)):
        assert output_tensor(template) is t
        rebuilt = with_output_tensor(template, u)
        assert output_tensor(rebuilt) is u and type(rebuilt) is type(template)
    with pytest.raises(TypeError, match="cannot find the output tensor"):
        output_tensor({"not": "a tensor"})


def test_only_the_outermost_cache_may_return_the_model_output(base: FluxTransformer2DModel, inputs: FluxInputs) -> None:
    from ditcache.core.cache import FinalOutput

    class Inner(CacheMiddleware[None]):
        name = "inner-final"  # no level: placed inside step-level caches (core.cache.insertion_index)

        def new_state(self) -> None:
            return None

        def process(self, ctx: Any, call_next: Any) -> Any:
            return FinalOutput(ctx.postprocess(*call_next(ctx)))

    model = copy.deepcopy(base)
    inner = ditcache.apply_cache(model, Inner(None))
    call = dict(
        hidden_states=inputs.latents,
        encoder_hidden_states=inputs.prompt_embeds,
        pooled_projections=inputs.pooled_prompt_embeds,
        timestep=torch.ones(inputs.latents.shape[0]),
        img_ids=inputs.img_ids,
        txt_ids=inputs.txt_ids,
        return_dict=False,
    )
    with torch.no_grad():
        alone = model(**call)[0]  # outermost: allowed, and equal to the model's own output
        assert torch.equal(alone, base(**call)[0])
        ditcache.apply_teacache_hook(model, {"rel_l1_thresh": 1e-9, "coefficients": LINEAR})
        with pytest.raises(TypeError, match="only the outermost cache may return"):
            model(**call)
    assert ditcache.get_cache_runtime(model) is not None and inner in ditcache.get_cache_runtime(model).middlewares


# ------------------------------------------------------------------------------------------------ one forecast option
@pytest.mark.parametrize("config", [TeaCacheConfig, MagCacheConfig], ids=lambda c: c.__name__)
def test_nested_forecast_is_the_flat_spelling(config: type[Any]) -> None:
    flat = config(taylorseer=True, taylorseer_order=2, taylorseer_method="newton", taylorseer_target="output")
    nested = config(forecast=ForecastSettings(order=2, method="newton", target="output"))
    assert nested == flat == config(forecast={"order": 2, "method": "newton", "target": "output"})
    assert nested.taylorseer and nested.taylorseer_order == 2 and nested.taylorseer_target == "output"
    assert config.from_dict({"forecast": {"order": 2, "method": "newton", "target": "output"}}) == flat
    import attrs

    assert config.from_dict(attrs.asdict(flat)) == flat  # asdict output round-trips
    with pytest.raises(ValueError, match=rf"^{config.__name__}\.forecast\.method: expected one of"):
        config(forecast={"method": "euler"})
    with pytest.raises(ValueError, match=rf"^{config.__name__}\.forecast: unknown setting\(s\) \[.ordr.\].*closest"):
        config(forecast={"ordr": 2})
    with pytest.raises(TypeError, match=rf"^{config.__name__}\.forecast: expected a ForecastSettings"):
        config(forecast=2)
    with pytest.raises(ValueError, match=rf"^{config.__name__}\.forecast: the flat setting"):
        config(forecast=ForecastSettings(order=2), taylorseer_order=3)


def test_nested_and_flat_forecasting_run_identically(base: FluxTransformer2DModel, inputs: FluxInputs) -> None:
    for cache in CACHES:
        model_a, _ = cached(base, cache, **SKIPPING[cache], taylorseer=True, taylorseer_order=2)
        model_b, _ = cached(base, cache, **SKIPPING[cache], forecast=ForecastSettings(order=2))
        a = denoise(model_a, STEPS, inputs=inputs)
        b = denoise(model_b, STEPS, inputs=inputs)
        assert torch.equal(a, b), cache
