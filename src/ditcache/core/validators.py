"""Shared helpers for the attrs config classes: strict key checking for configs built from dicts."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import attrs

__all__ = [
    "check_keys",
    "coerce_config",
    "config_fields",
    "int_at_least",
    "is_bool",
    "opt_bool",
    "opt_int_at_least",
]


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


# attrs validators shared by the config classes; messages name ``ClassName.field`` and the allowed values.
Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]


def _field(inst: Any, attribute: attrs.Attribute[Any]) -> str:
    return f"{type(inst).__name__}.{attribute.name}"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_bool(inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """True or False only (not 0/1)."""
    if not isinstance(value, bool):
        raise TypeError(f"{_field(inst, attribute)}: expected True or False, got {value!r}")


def opt_bool(inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """True, False or None."""
    if value is not None and not isinstance(value, bool):
        raise TypeError(f"{_field(inst, attribute)}: expected True, False or None, got {value!r}")


def int_at_least(low: int) -> Validator:
    """An int (not a bool) >= ``low``."""

    def check(inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if not _is_int(value) or value < low:
            raise ValueError(f"{_field(inst, attribute)}: expected an int >= {low}, got {value!r}")

    return check


def opt_int_at_least(low: int, none_means: str = "") -> Validator:
    """None or an int (not a bool) >= ``low``; ``none_means`` explains None in the message."""
    suffix = f" or None{f' ({none_means})' if none_means else ''}"

    def check(inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value is not None and (not _is_int(value) or value < low):
            raise ValueError(f"{_field(inst, attribute)}: expected an int >= {low}{suffix}, got {value!r}")

    return check
