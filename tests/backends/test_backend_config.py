"""DiffusionCacheConfig (vLLM-Omni's fields and defaults, strict), the selector and the vLLM-Omni config shapes."""

from __future__ import annotations

from typing import Any

import pytest

from ditcache.backends import (
    SUPPORTED_BACKENDS,
    DiffusionCacheConfig,
    MagCacheBackend,
    MagCacheConfig,
    TeaCacheBackend,
    TeaCacheConfig,
    get_cache_backend,
)
from ditcache.backends.ditcache_backend import DitCacheBackend

# vLLM-Omni's DiffusionCacheConfig defaults (vllm_omni/diffusion/data.py at the commit the API pages describe).
VLLM_OMNI_DEFAULTS: dict[str, Any] = {
    "rel_l1_thresh": 0.2,
    "coefficients": None,
    "mag_threshold": 0.24,
    "mag_max_skip_steps": 5,
    "mag_retention_ratio": 0.1,
    "mag_ratios": None,
    "mag_calibrate": False,
    "Fn_compute_blocks": 1,
    "Bn_compute_blocks": 0,
    "max_warmup_steps": 4,
    "max_cached_steps": -1,
    "residual_diff_threshold": 0.24,
    "max_continuous_cached_steps": 3,
    "enable_taylorseer": False,
    "taylorseer_order": 1,
    "scm_steps_mask_policy": None,
    "scm_steps_policy": "dynamic",
    "num_inference_steps": None,
    "force_refresh_step_hint": None,
    "force_refresh_step_policy": "once",
    "step_cache_dit_enabled": True,
    "velocity_sim_thresholds": [0.95, 0.93],
    "velocity_skip_countdowns": [4, 2],
    "step_cache_dit_min_history": 2,
    "step_cache_dit_max_history": 2,
}


def test_fields_and_defaults_are_vllm_omnis() -> None:
    values = DiffusionCacheConfig().to_dict()
    assert {k: values[k] for k in VLLM_OMNI_DEFAULTS} == VLLM_OMNI_DEFAULTS
    assert set(values) - set(VLLM_OMNI_DEFAULTS) == {"ditcache_stack", "ditcache_rtol"}
    assert DiffusionCacheConfig.from_dict(values) == DiffusionCacheConfig()


@pytest.mark.parametrize(
    ("key", "suggested"),
    [("threshold", "mag_threshold"), ("rel_l1_threshold", "rel_l1_thresh"), ("fn_compute_blocks", "Fn_compute_blocks")],
)
def test_unknown_key_names_it_and_the_closest(key: str, suggested: str) -> None:
    with pytest.raises(
        ValueError, match=rf"unknown setting\(s\) \['{key}'\].*closest: '{key}' -> [^;]*'{suggested}'"
    ) as exc:
        DiffusionCacheConfig.from_dict({key: 0.1})
    assert "allowed settings: ['rel_l1_thresh'" in str(exc.value)
    with pytest.raises(ValueError, match=f"'{key}'"):
        DiffusionCacheConfig(**{key: 0.1})


def test_non_dict_and_attribute_typos() -> None:
    with pytest.raises(TypeError, match="expected a dict"):
        DiffusionCacheConfig.from_dict([("rel_l1_thresh", 0.2)])  # type: ignore[arg-type]
    with pytest.raises(AttributeError, match="did you mean 'mag_threshold'"):
        _ = DiffusionCacheConfig().threshold


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"rel_l1_thresh": 0}, "rel_l1_thresh"),
        ({"coefficients": [1, 2, 3]}, "coefficients"),
        ({"mag_threshold": -1.0}, "mag_threshold"),
        ({"mag_max_skip_steps": 0}, "mag_max_skip_steps"),
        ({"mag_retention_ratio": 1.0}, "mag_retention_ratio"),
        ({"mag_ratios": [1.0, -0.5]}, "mag_ratios"),
        ({"Fn_compute_blocks": 0}, "Fn_compute_blocks"),
        ({"max_cached_steps": -2}, "max_cached_steps"),
        ({"residual_diff_threshold": float("nan")}, "residual_diff_threshold"),
        ({"taylorseer_order": 0}, "taylorseer_order"),
        ({"scm_steps_mask_policy": "fastest"}, "scm_steps_mask_policy"),
        ({"scm_steps_policy": "dynamc"}, "scm_steps_policy"),
        ({"num_inference_steps": 0}, "num_inference_steps"),
        ({"force_refresh_step_policy": "twice"}, "force_refresh_step_policy"),
        ({"velocity_sim_thresholds": [0.9]}, "velocity_sim_thresholds"),
        ({"ditcache_stack": ["tea_cache", "mag_cache"]}, "ditcache_stack"),
        ({"ditcache_stack": ["teacache"]}, "ditcache_stack"),
        ({"ditcache_rtol": 1.5}, "ditcache_rtol"),
        ({"ditcache_rtol": 0.05, "ditcache_stack": ["db_cache"]}, "ditcache_rtol"),
        ({"Fn_compute_blocks": True}, "Fn_compute_blocks"),
    ],
)
def test_bad_values_name_the_field(settings: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=f"DiffusionCacheConfig.{field}:"):
        DiffusionCacheConfig.from_dict(settings)


def test_mutated_config_is_checked_again_at_enable() -> None:
    backend = TeaCacheBackend({"rel_l1_thresh": 0.3})
    backend.config.rel_l1_thresh = -1.0
    with pytest.raises(ValueError, match=r"DiffusionCacheConfig\.rel_l1_thresh"):
        backend.enable(object())
    assert not backend.is_enabled()


def test_selector_names() -> None:
    assert get_cache_backend(None, None) is None
    assert get_cache_backend("none", {"rel_l1_thresh": 0.3}) is None
    tea = get_cache_backend("tea_cache", {"rel_l1_thresh": 0.3})
    assert isinstance(tea, TeaCacheBackend) and tea.config.rel_l1_thresh == 0.3 and tea.enabled is False
    assert isinstance(get_cache_backend("mag_cache", DiffusionCacheConfig()), MagCacheBackend)
    assert isinstance(get_cache_backend("ditcache", None), DitCacheBackend)
    from ditcache.backends.cache_dit_backend import CacheDiTBackend

    cd = get_cache_backend("cache_dit", {"Fn_compute_blocks": 2})
    assert isinstance(cd, CacheDiTBackend) and cd.config.Fn_compute_blocks == 2
    assert cd._refresh_func is None and cd._last_num_inference_steps is None
    assert set(SUPPORTED_BACKENDS) == {"none", "tea_cache", "mag_cache", "cache_dit", "ditcache"}


def test_selector_errors() -> None:
    with pytest.raises(ValueError, match=r"'cache-dit' \(did you mean 'cache_dit'\?\); supported: \['none'"):
        get_cache_backend("cache-dit", None)
    with pytest.raises(ValueError, match="DreamZero"):
        get_cache_backend("step_cache", None)
    with pytest.raises(ValueError, match="'threshold'"):
        get_cache_backend("mag_cache", {"threshold": 0.06})
    with pytest.raises(ValueError, match="'threshold'"):
        get_cache_backend("none", {"threshold": 0.06})
    with pytest.raises(TypeError, match="cache_config"):
        get_cache_backend("tea_cache", 0.2)  # type: ignore[arg-type]


def test_vllm_omni_config_shapes() -> None:
    assert TeaCacheConfig().rel_l1_thresh == 0.2 and TeaCacheConfig().coefficients is None
    with pytest.raises(ValueError, match=r"TeaCacheConfig\.rel_l1_thresh"):
        TeaCacheConfig(rel_l1_thresh=0)
    with pytest.raises(ValueError, match=r"TeaCacheConfig\.coefficients"):
        TeaCacheConfig(coefficients=[1.0])
    mag = MagCacheConfig()
    assert (mag.threshold, mag.max_skip_steps, mag.retention_ratio, mag.num_inference_steps) == (0.24, 5, 0.1, 28)
    for bad, field in (({"threshold": 0}, "threshold"), ({"retention_ratio": 1}, "retention_ratio")):
        with pytest.raises(ValueError, match=f"MagCacheConfig.{field}"):
            MagCacheConfig(**bad)
    cfg = DiffusionCacheConfig(mag_threshold=0.5, num_inference_steps=12)
    assert MagCacheConfig.from_diffusion_config(cfg).num_inference_steps == 12
    assert MagCacheConfig.from_diffusion_config(DiffusionCacheConfig()).num_inference_steps == 28


def test_cache_dit_adapter_config_is_checked() -> None:
    from cache_dit import ForwardPattern

    from ditcache.backends.cache_dit_backend import CacheDiTAdapterConfig

    with pytest.raises(ValueError, match="cache_config_overrides: unknown cache-dit field"):
        CacheDiTAdapterConfig({"blocks": ForwardPattern.Pattern_2}, cache_config_overrides={"Fn": 2})
    with pytest.raises(ValueError, match="block_forward_patterns"):
        CacheDiTAdapterConfig({"blocks": "Pattern_2"})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="block_forward_patterns"):
        CacheDiTAdapterConfig({})
