"""The cache-dit backend's own behaviour on real tiny pipelines: adapter configs and per-model overrides (FLUX.2
[klein] ``Fn_compute_blocks=2``, also on SCM refresh), SCM masks per request with the step-count guard, Wan 2.2's
per-expert split, force-refresh hints, TaylorSeer, the pipeline accessor, patchable module globals and the
errors raised at ``enable``."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import cache_dit
import pytest
import torch
from torch import nn

from _support.pipelines import TinyPipeline, flux, flux2_klein, wan22
from ditcache.backends import cache_dit_backend as cdb
from ditcache.backends.cache_dit_adapters import ADAPTER_CONFIGS
from ditcache.backends.cache_dit_backend import CacheDiTBackend, cache_summary, may_enable_cache_dit


def _context_config(module: nn.Module) -> Any:
    return module._context_kwargs["cache_config"]  # type: ignore[index]


@pytest.fixture(scope="module")
def tiny_flux() -> TinyPipeline:
    return flux()


@pytest.fixture
def backends() -> Iterator[list[tuple[CacheDiTBackend, Any]]]:
    made: list[tuple[CacheDiTBackend, Any]] = []
    yield made
    for backend, pipe in made:
        backend.disable(pipe)


def _enable(made: list[tuple[CacheDiTBackend, Any]], pipe: Any, **config: Any) -> CacheDiTBackend:
    backend = CacheDiTBackend(config)
    backend.enable(pipe)
    made.append((backend, pipe))
    return backend


def test_flux2_klein_override_at_enable_and_on_scm_refresh(backends: Any) -> None:
    tp = flux2_klein()
    ref = tp.run(8)
    exact = _enable(backends, tp.pipe, residual_diff_threshold=0.0)
    exact.refresh(tp.pipe, 8, verbose=False)
    assert torch.equal(tp.run(8), ref)
    exact.disable(tp.pipe)
    backend = _enable(backends, tp.pipe, residual_diff_threshold=0.9, max_warmup_steps=1, scm_steps_mask_policy="fast")
    transformer = tp.pipe.transformer
    assert backend.config.Fn_compute_blocks == 1
    assert _context_config(transformer).Fn_compute_blocks == 2  # the pipeline's declared override
    backend.refresh(tp.pipe, 8, verbose=False)
    cfg = _context_config(transformer)
    assert cfg.Fn_compute_blocks == 2
    assert list(cfg.steps_computation_mask) == list(cache_dit.steps_mask(mask_policy="fast", total_steps=8))
    out = tp.run(8)
    assert sum(len(s.cached_steps or []) for s in backend.stats(tp.pipe)["transformer"]) > 0
    assert not torch.equal(out, ref)
    backend.disable(tp.pipe)
    assert torch.equal(tp.run(8), ref)


def test_scm_mask_per_request_with_guard(backends: Any, tiny_flux: TinyPipeline) -> None:
    backend = _enable(
        backends, tiny_flux.pipe, scm_steps_mask_policy="fast", scm_steps_policy="static", max_warmup_steps=3
    )
    transformer = tiny_flux.pipe.transformer
    for steps in (8, 5, 4, 7, 9):
        backend.refresh(tiny_flux.pipe, steps, verbose=False)
        cfg = _context_config(transformer)
        assert cfg.num_inference_steps == steps
        if steps in (8, 4, 9):
            assert list(cfg.steps_computation_mask) == list(cache_dit.steps_mask(mask_policy="fast", total_steps=steps))
            assert cfg.steps_computation_policy == "static"
        else:  # steps_mask cannot build these: a mask equivalent to none (warm-up, then the threshold decides)
            assert list(cfg.steps_computation_mask) == [1, 1, 1] + [0] * (steps - 3)
            assert cfg.steps_computation_policy == "dynamic"
        assert tiny_flux.run(steps).shape[0] == 1
    assert backend._last_num_inference_steps == 9


def test_wan22_experts_refresh_with_their_share(backends: Any) -> None:
    tp = wan22()
    timesteps_before = tp.pipe.scheduler.timesteps
    backend = _enable(backends, tp.pipe, max_warmup_steps=3, enable_taylorseer=True, taylorseer_order=2)
    backend.refresh(tp.pipe, 8, verbose=False)
    high, low = _context_config(tp.pipe.transformer), _context_config(tp.pipe.transformer_2)
    assert (high.num_inference_steps, low.num_inference_steps) == (6, 2)  # boundary 0.6 of 8 UniPC steps
    assert (high.max_warmup_steps, low.max_warmup_steps) == (3, 2)  # the low-noise expert's own settings
    for t in (tp.pipe.transformer, tp.pipe.transformer_2):
        calibrator = t._context_kwargs["calibrator_config"]
        assert isinstance(calibrator, cache_dit.TaylorSeerCalibratorConfig) and calibrator.taylorseer_order == 2
    assert tp.pipe.scheduler.timesteps is timesteps_before  # the split used a copy of the scheduler
    backend.refresh(tp.pipe, 20, verbose=False)
    assert (
        _context_config(tp.pipe.transformer).num_inference_steps
        + _context_config(tp.pipe.transformer_2).num_inference_steps
        == 20
    )


def test_force_refresh_hint_is_rearmed(backends: Any, tiny_flux: TinyPipeline) -> None:
    backend = _enable(backends, tiny_flux.pipe, force_refresh_step_hint=3, force_refresh_step_policy="repeat")
    assert _context_config(tiny_flux.pipe.transformer).force_refresh_step_hint == 3
    backend.refresh(tiny_flux.pipe, 9, verbose=False)
    cfg = _context_config(tiny_flux.pipe.transformer)
    assert (cfg.force_refresh_step_hint, cfg.force_refresh_step_policy) == (3, "repeat")
    assert tiny_flux.run(9).shape[0] == 1


def test_module_globals_are_looked_up_at_call_time(
    backends: Any, tiny_flux: TinyPipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[dict[str, Any]] = []
    refreshed: list[tuple[Any, Any]] = []

    class RecordingAdapter(cache_dit.BlockAdapter):  # type: ignore[misc]
        def __init__(self, **kwargs: Any) -> None:
            built.append(kwargs)
            super().__init__(**kwargs)

    class RecordingCacheDiT:
        def __getattr__(self, name: str) -> Any:
            return getattr(cache_dit, name)

        def refresh_context(self, transformer: Any, **kwargs: Any) -> None:
            refreshed.append((transformer, kwargs["cache_config"]))
            cache_dit.refresh_context(transformer, **kwargs)

    flux_config = ADAPTER_CONFIGS["FluxTransformer2DModel"]
    monkeypatch.setitem(
        ADAPTER_CONFIGS, "FluxTransformer2DModel", dataclasses.replace(flux_config, check_forward_pattern=False)
    )
    monkeypatch.setattr(cdb, "BlockAdapter", RecordingAdapter)
    monkeypatch.setattr(cdb, "cache_dit", RecordingCacheDiT())
    backend = _enable(backends, tiny_flux.pipe)
    assert len(built) == 1 and built[0]["check_forward_pattern"] is False
    assert built[0]["forward_pattern"] == [cache_dit.ForwardPattern.Pattern_1] * 2
    backend.refresh(tiny_flux.pipe, 6, verbose=False)
    assert refreshed and refreshed[0][0] is tiny_flux.pipe.transformer
    assert refreshed[0][1].num_inference_steps == 6


class ToyDiT(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([nn.Linear(4, 4) for _ in range(3)])


class ModelPipeline:
    """A pipeline whose DiT is ``pipeline.model`` (as vLLM-Omni's HunyuanImage3 pipeline)."""

    _dit_modules = ("model",)

    def __init__(self, model: nn.Module) -> None:
        self.model = model


def test_errors_at_enable_leave_the_pipeline_uncached(tiny_flux: TinyPipeline) -> None:
    transformer = tiny_flux.pipe.transformer
    backend = CacheDiTBackend({"Fn_compute_blocks": 3})
    with pytest.raises(ValueError, match=r"Fn_compute_blocks=3 .* 2 blocks"):
        backend.enable(tiny_flux.pipe)
    assert not backend.is_enabled() and not getattr(transformer, "_is_cached", False)
    assert "forward" not in transformer.__dict__
    with pytest.raises(ValueError, match="no CacheDiTAdapterConfig for ToyDiT"):
        CacheDiTBackend().enable(ModelPipeline(ToyDiT()))
    with pytest.raises(ValueError, match="no DiT module"):
        CacheDiTBackend().enable(object())
    with pytest.raises(ValueError, match="mag_calibrate"):
        CacheDiTBackend({"mag_calibrate": True}).enable(tiny_flux.pipe)


def test_pipeline_accessor_summary_and_convenience(backends: Any) -> None:
    model = flux().pipe.transformer
    pipe = ModelPipeline(model)
    assert cdb.default_get_pipeline_transformer(pipe) is model
    cache_summary(pipe)  # nothing cached: a warning, no error
    backend = may_enable_cache_dit(pipe, {"cache_backend": "cache-dit", "cache_config": {"max_warmup_steps": 2}})
    assert isinstance(backend, CacheDiTBackend) and backend.is_enabled() and model._is_cached
    backends.append((backend, pipe))
    backend.refresh(pipe, 4, verbose=False)
    assert _context_config(model).num_inference_steps == 4
    assert cache_summary(pipe, details=False) is None
    assert may_enable_cache_dit(pipe, {"cache_backend": "tea_cache"}) is None
    backend.disable(pipe)
    assert not getattr(model, "_is_cached", False) and "forward" not in model.__dict__
    backend.refresh(pipe, 4)  # not enabled: a warning, no error
    assert backend._refresh_func is None


def test_declared_cached_adapter_cls_replaces_enable_cache(
    backends: Any, tiny_flux: TinyPipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cache_dit.caching.cache_adapters import CachedAdapter

    applied: list[dict[str, Any]] = []

    class RecordingCachedAdapter(CachedAdapter):  # type: ignore[misc]
        @classmethod
        def apply(cls, pipe_or_adapter: Any, **context_kwargs: Any) -> Any:
            applied.append(context_kwargs)
            return super().apply(pipe_or_adapter, **context_kwargs)

    flux_config = ADAPTER_CONFIGS["FluxTransformer2DModel"]
    monkeypatch.setitem(
        ADAPTER_CONFIGS,
        "FluxTransformer2DModel",
        dataclasses.replace(flux_config, cached_adapter_cls=RecordingCachedAdapter),
    )
    assert CacheDiTBackend.maybe_get_cached_adapter_cls(tiny_flux.pipe) is RecordingCachedAdapter
    backend = _enable(backends, tiny_flux.pipe, enable_taylorseer=True)
    assert len(applied) == 1
    assert isinstance(applied[0]["calibrator_config"], cache_dit.TaylorSeerCalibratorConfig)
    backend.refresh(tiny_flux.pipe, 5, verbose=False)
    assert tiny_flux.run(5).shape[0] == 1
