"""Shared helpers for the attrs config classes: strict key checking for configs built from dicts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import attrs

__all__ = ["check_keys", "coerce_config", "config_fields"]


def config_fields(cls: type) -> list[str]:
    """The field names an attrs config class accepts."""
    return [f.name for f in attrs.fields(cls)]


def check_keys(cls: type, data: Mapping[str, Any]) -> None:
    """Raise TypeError if ``data`` is not a mapping, ValueError naming any unknown key and the allowed ones."""
    if not isinstance(data, Mapping):
        raise TypeError(f"{cls.__name__}: expected a mapping of settings, got {type(data).__name__}")
    allowed = config_fields(cls)
    unknown = sorted(str(k) for k in data if k not in allowed)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown setting(s) {unknown}; allowed settings: {allowed}")


C = TypeVar("C")


def coerce_config(cls: type[C], cfg: C | Mapping[str, Any] | None) -> C:
    """``cfg`` as an instance of the config class ``cls``: None gives the defaults, a mapping goes through the
    class's strict ``from_dict`` (unknown keys refused), anything else is a TypeError naming ``cfg``."""
    if cfg is None:
        return cls()
    if isinstance(cfg, cls):
        return cfg
    if isinstance(cfg, Mapping):
        return cls.from_dict(cfg)  # type: ignore[attr-defined,no-any-return]
    raise TypeError(f"cfg: expected a {cls.__name__}, a dict or None, got {type(cfg).__name__}")
