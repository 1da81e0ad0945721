"""``ditcache.tools.evaluation.settings``: settings refuse bad values naming the field; methods from configs."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ditcache import DBCacheConfig, TeaCacheConfig
from ditcache.tools.evaluation import (
    EvalSettings,
    Method,
    config_params,
    ours,
)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"labels": ()}, "EvalSettings.labels: expected at least one label"),
        ({"labels": (3, 10)}, "EvalSettings.labels: allowed values are the digits model's labels 0..9"),
        ({"model": "patches", "labels": (104,)}, "EvalSettings.labels: allowed values are the patches model's labels"),
        ({"model": "faces"}, "EvalSettings.model: unknown bundled model 'faces'"),
        ({"labels": "012"}, "EvalSettings.labels: expected a sequence of class labels"),
        ({"num_steps": 1}, "EvalSettings.num_steps: expected an int >= 2"),
        ({"repeats": 0}, "EvalSettings.repeats: expected an int >= 1"),
        ({"seed": -1}, "EvalSettings.seed: expected an int >= 0"),
        ({"guidance_scale": 1.0}, "EvalSettings.guidance_scale: 1.0 is the same as no guidance"),
        ({"guidance_scale": -2.0}, "EvalSettings.guidance_scale: expected None"),
        ({"shift": 0.0}, "EvalSettings.shift: expected a finite number > 0"),
        ({"timer": "gpu"}, "EvalSettings.timer: expected one of ['wall', 'cpu']"),
    ],
)
def test_settings_refuse_bad_values_naming_the_field(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises((ValueError, TypeError)) as info:
        EvalSettings(**kwargs)
    assert message in str(info.value)


def test_settings_from_dict_refuses_unknown_keys_and_round_trips() -> None:
    with pytest.raises(ValueError, match="unknown setting"):
        EvalSettings.from_dict({"steps": 4})
    s = EvalSettings(labels=[1, 2], guidance_scale=2.5)
    assert EvalSettings.from_dict(s.as_dict()) == s
    assert s.branches == ("cond", "uncond") and s.guided
    assert EvalSettings(guidance_scale=None).branches == ("cond",)


def test_config_params_lists_only_non_defaults() -> None:
    params = config_params(DBCacheConfig(fn_compute_blocks=1, residual_diff_threshold=0.2))
    assert params == {"fn_compute_blocks": 1, "residual_diff_threshold": 0.2}
    assert config_params(TeaCacheConfig()) == {}
    json.dumps(config_params(TeaCacheConfig(coefficients=(1, 2, 3, 4, 5))))


def test_ours_refuses_non_configs() -> None:
    with pytest.raises(TypeError, match="configs: expected TeaCacheConfig"):
        ours("x", {"rel_l1_thresh": 0.2})
    with pytest.raises(ValueError, match="configs: give at least one"):
        ours("x")
    with pytest.raises(ValueError, match=r"Method\.origin"):
        Method("x", "theirs", "f")
