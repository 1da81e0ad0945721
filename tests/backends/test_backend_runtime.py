"""The backends on ditcache's runtime (TeaCache, MagCache, the ditcache stack): per-request step counts, exact
removal, patchable module globals, atomic enable and the errors raised at ``enable``."""

from __future__ import annotations

from typing import Any

import pytest
from torch import nn

import ditcache
from _support.pipelines import TinyPipeline, flux
from ditcache.backends import (
    MagCacheBackend,
    MagCacheConfig,
    TeaCacheBackend,
    TeaCacheConfig,
    apply_mag_cache_hook,
    apply_magcache_hook,
    apply_teacache_hook,
)
from ditcache.backends.cache_dit_backend import CacheDiTBackend
from ditcache.backends.ditcache_backend import DitCacheBackend
from ditcache.backends.magcache import backend as mag_backend_module
from ditcache.backends.teacache import backend as tea_backend_module

IDENTITY = [0.0, 0.0, 0.0, 1.0, 0.0]


@pytest.fixture(scope="module")
def tiny() -> TinyPipeline:
    return flux()


def _decisions(backend: Any) -> list[tuple[int, bool]]:
    (generation,) = backend.stats()["transformer"][backend.cache_names[0]][-1:]
    return [(d.step, d.computed) for d in generation.decisions]


def test_teacache_refresh_forces_each_requests_last_step(tiny: TinyPipeline) -> None:
    backend = TeaCacheBackend({"rel_l1_thresh": 100.0, "coefficients": IDENTITY})
    backend.enable(tiny.pipe)
    try:
        for steps in (6, 9):
            backend.refresh(tiny.pipe, steps, verbose=False)
            tiny.run(steps)
            expected = [(i, i in (0, steps - 1)) for i in range(steps)]
            assert _decisions(backend) == expected
    finally:
        backend.disable(tiny.pipe)


def test_magcache_schedule_follows_each_requests_step_count(tiny: TinyPipeline) -> None:
    backend = MagCacheBackend({"mag_threshold": 0.3, "mag_retention_ratio": 0.2, "mag_max_skip_steps": 2})
    backend.enable(tiny.pipe)
    try:
        middleware = ditcache.get_cache_runtime(tiny.pipe.transformer).get("magcache")  # type: ignore[union-attr]
        plans = {}
        for steps in (10, 16):
            backend.refresh(tiny.pipe, steps, verbose=False)
            tiny.run(steps)
            plan = list(middleware.schedule(steps).compute)  # type: ignore[union-attr]
            assert [computed for _, computed in _decisions(backend)] == plan
            plans[steps] = plan
        assert not all(plans[10]) and not all(plans[16])
    finally:
        backend.disable(tiny.pipe)


def test_apply_functions_are_module_globals(tiny: TinyPipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[nn.Module, Any]] = []

    def tea(module: nn.Module, config: Any) -> Any:
        seen.append((module, config))
        return apply_teacache_hook(module, config)

    def mag(module: nn.Module, config: Any, strategy: Any = None) -> Any:
        seen.append((module, config))
        return apply_mag_cache_hook(module, config, strategy)

    monkeypatch.setattr(tea_backend_module, "apply_teacache_hook", tea)
    monkeypatch.setattr(mag_backend_module, "apply_mag_cache_hook", mag)
    for backend in (TeaCacheBackend({"rel_l1_thresh": 0.4}), MagCacheBackend({"mag_threshold": 0.1})):
        backend.enable(tiny.pipe)
        backend.disable(tiny.pipe)
    assert [m for m, _ in seen] == [tiny.pipe.transformer] * 2
    assert seen[0][1] == TeaCacheConfig(rel_l1_thresh=0.4, transformer_type="FluxTransformer2DModel")
    assert isinstance(seen[1][1], MagCacheConfig) and seen[1][1].threshold == 0.1
    assert apply_magcache_hook is apply_mag_cache_hook


def test_vllm_omni_hook_functions_check_their_arguments(tiny: TinyPipeline) -> None:
    transformer = tiny.pipe.transformer
    with pytest.raises(ValueError, match="transformer_type: 'QwenImageTransformer2DModel' does not match"):
        apply_teacache_hook(transformer, TeaCacheConfig(transformer_type="QwenImageTransformer2DModel"))
    with pytest.raises(ValueError, match="strategy"):
        apply_mag_cache_hook(transformer, MagCacheConfig(), strategy=object())
    middleware = apply_teacache_hook(transformer, TeaCacheConfig(rel_l1_thresh=0.3))
    assert isinstance(middleware, ditcache.TeaCache) and middleware.resolved.abs_rescaled
    ditcache.remove_cache(transformer)
    assert ditcache.get_cache_runtime(transformer) is None


class ToyDiT(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([nn.Linear(4, 4)])


class TwoDiTs:
    def __init__(self, transformer: nn.Module, transformer_2: nn.Module) -> None:
        self.transformer = transformer
        self.transformer_2 = transformer_2


@pytest.mark.parametrize("backend_cls", [TeaCacheBackend, MagCacheBackend, DitCacheBackend])
def test_unsupported_module_fails_at_enable_and_changes_nothing(tiny: TinyPipeline, backend_cls: type) -> None:
    pipe = TwoDiTs(tiny.pipe.transformer, ToyDiT())
    backend = backend_cls()
    with pytest.raises(ValueError, match=r"cannot cache TwoDiTs.transformer_2 \(ToyDiT\)"):
        backend.enable(pipe)
    assert not backend.is_enabled()
    assert ditcache.get_cache_runtime(tiny.pipe.transformer) is None


def test_enable_twice_refresh_checks_and_reload(tiny: TinyPipeline) -> None:
    backend = TeaCacheBackend()
    backend.refresh(tiny.pipe, 4)  # not enabled yet: a warning, nothing else
    backend.enable(tiny.pipe)
    backend.enable(tiny.pipe)
    runtime = ditcache.get_cache_runtime(tiny.pipe.transformer)
    assert runtime is not None and [m.name for m in runtime.middlewares] == ["teacache"]
    with pytest.raises(ValueError, match="num_inference_steps"):
        backend.refresh(tiny.pipe, 0)
    old = tiny.pipe.transformer
    replacement = flux(seed=1).pipe.transformer
    tiny.pipe.transformer = replacement
    try:
        backend.refresh(tiny.pipe, 4, verbose=False)  # the DiT was replaced: the new one is cached
        assert ditcache.get_cache_runtime(old) is None
        assert ditcache.get_cache_runtime(replacement) is not None
        assert backend.modules == {"transformer": replacement}
    finally:
        backend.disable(tiny.pipe)
        tiny.pipe.transformer = old
    assert ditcache.get_cache_runtime(replacement) is None


def test_ditcache_stack_config(tiny: TinyPipeline) -> None:
    backend = DitCacheBackend(
        {
            "ditcache_stack": ["mag_cache", "db_cache"],
            "enable_taylorseer": True,
            "taylorseer_order": 2,
            "scm_steps_mask_policy": "fast",
            "Fn_compute_blocks": 1,
            "Bn_compute_blocks": 1,
            "max_continuous_cached_steps": -1,
        }
    )
    backend.enable(tiny.pipe)
    try:
        runtime = ditcache.get_cache_runtime(tiny.pipe.transformer)
        assert runtime is not None and [m.name for m in runtime.middlewares] == ["magcache", "dbcache"]
        db = runtime.get("dbcache")
        assert db is not None
        assert (db.config.taylorseer, db.config.taylorseer_order, db.config.bn_compute_blocks) == (True, 2, 1)
        assert db.config.max_continuous_cached_steps is None  # cache-dit's -1: no cap
        assert runtime.get("magcache").config.taylorseer is False  # type: ignore[union-attr]
        assert db.config.steps_computation_mask is None  # no step count before the first refresh: no preset yet
        assert tiny.run(6).isfinite().all()  # a request without refresh does not fail
        for steps, mask in ((5, None), (8, "fast"), (7, None)):
            backend.refresh(tiny.pipe, steps, verbose=False)
            assert runtime.get("dbcache").config.steps_computation_mask == mask  # type: ignore[union-attr]
            assert tiny.run(steps).isfinite().all()
    finally:
        backend.disable(tiny.pipe)
    assert ditcache.get_cache_runtime(tiny.pipe.transformer) is None
    alone = DitCacheBackend({"ditcache_stack": ["tea_cache"], "enable_taylorseer": True})
    alone.enable(tiny.pipe)
    try:
        tea = ditcache.get_cache_runtime(tiny.pipe.transformer).get("teacache")  # type: ignore[union-attr]
        assert tea is not None and tea.config.taylorseer is True
    finally:
        alone.disable(tiny.pipe)


@pytest.mark.parametrize(("stack", "name"), [(["tea_cache", "db_cache"], "teacache"), (["mag_cache"], "magcache")])
def test_ditcache_rtol_replaces_the_step_caches_threshold(tiny: TinyPipeline, stack: list[str], name: str) -> None:
    backend = DitCacheBackend({"ditcache_stack": stack, "ditcache_rtol": 0.05, "mag_threshold": 0.5})
    backend.enable(tiny.pipe)
    try:
        step = ditcache.get_cache_runtime(tiny.pipe.transformer).get(name)  # type: ignore[union-attr]
        assert step is not None and step.config.rtol == 0.05
        backend.refresh(tiny.pipe, 8, verbose=False)
        assert tiny.run(8).isfinite().all()
        assert all("measured_error" in d.info for s in step.stats() for d in s.decisions)
    finally:
        backend.disable(tiny.pipe)


@pytest.mark.parametrize("backend", [TeaCacheBackend, MagCacheBackend, CacheDiTBackend])
def test_other_backends_refuse_ditcache_rtol(backend: Any) -> None:
    with pytest.raises(ValueError, match=r"DiffusionCacheConfig\.ditcache_rtol: read only by cache_backend='ditcache'"):
        backend({"ditcache_rtol": 0.05})


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"force_refresh_step_hint": 2}, "force_refresh_step_hint"),
        ({"ditcache_stack": ["mag_cache", "db_cache"], "mag_calibrate": True}, "mag_calibrate"),
        ({"Fn_compute_blocks": 4, "Bn_compute_blocks": 1}, "fn_compute_blocks"),
    ],
)
def test_ditcache_backend_refuses_at_enable(tiny: TinyPipeline, config: dict[str, Any], field: str) -> None:
    backend = DitCacheBackend(config)
    with pytest.raises(ValueError, match=field):
        backend.enable(tiny.pipe)
    assert ditcache.get_cache_runtime(tiny.pipe.transformer) is None
