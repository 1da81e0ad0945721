"""Composable field validators for the attrs config classes, and one strict ``from_dict``.

In the manner of ``attr.validators``, a field states its rule inline::

    steps: int | None = attrs.field(default=None, converter=plain_scalar, validator=optional(int_ge(1)))

Every rule is a small callable object with a readable ``repr``; a failure raises with ditcache's message shape
``ClassName.field: expected <what the rule allows>, got <value>``. A rule can also check a plain value outside a
class: ``int_ge(1).check(n, "num_steps")``.

NumPy scalars (``np.int64(8)``, ``np.float32(0.2)``, ``np.True_``) are accepted wherever a Python int, float or
bool is: :func:`plain_scalar`, used as the field's converter, turns them into the Python value first, so a config
holds plain numbers (hashable alike, JSON-ready). This module imports nothing else from ditcache.
"""

from __future__ import annotations

import difflib
import functools
import math
import numbers
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, TypeVar

import attrs

__all__ = [
    "Rule",
    "StrictConfig",
    "Validator",
    "accept_aliases",
    "and_",
    "check_keys",
    "closest_names",
    "coerce_config",
    "config_fields",
    "finite",
    "from_dict",
    "int_ge",
    "is_bool",
    "non_empty_str",
    "one_of",
    "optional",
    "plain_scalar",
    "unknown_names_message",
]

Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]
"""The attrs validator signature: ``(instance, attribute, value) -> None``."""

C = TypeVar("C")


# ------------------------------------------------------------------------------------------------ scalars
def plain_scalar(value: Any) -> Any:
    """A NumPy scalar (or any ``numbers.Number`` with ``.item()`` that is not already a Python bool/int/float) as
    its Python value; anything else unchanged. Use as the converter of int, float and bool fields."""
    if isinstance(value, (bool, int, float)) or value is None:
        return value
    if isinstance(value, numbers.Number) or type(value).__module__ == "numpy":
        item = getattr(value, "item", None)
        if callable(item):
            try:
                out = item()
            except (TypeError, ValueError):
                return value
            if isinstance(out, (bool, int, float)):
                return out
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _where(inst: Any, attribute: attrs.Attribute[Any]) -> str:
    name = getattr(attribute, "alias", None) or attribute.name
    return f"{type(inst).__name__}.{name}"


# ------------------------------------------------------------------------------------------------ rules
@attrs.frozen(repr=False)
class Rule:
    """A validator: ``test(value)`` must hold; ``expected`` says what is allowed (the message's "expected ...")."""

    test: Callable[[Any], bool]
    expected: str
    error: type[Exception] = ValueError
    message: Callable[[str, Any], str] | None = None
    """Optional full message builder ``(where, value) -> str`` replacing the standard one."""

    def check(self, value: Any, where: str) -> None:
        """Raise ``error`` naming ``where`` unless ``value`` passes."""
        if not self.test(value):
            if self.message is not None:
                raise self.error(self.message(where, value))
            raise self.error(f"{where}: expected {self.expected}, got {value!r}")

    def __call__(self, inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        self.check(value, _where(inst, attribute))

    def __repr__(self) -> str:
        return f"<validator: {self.expected}>"


is_bool = Rule(lambda v: isinstance(v, bool), "True or False", TypeError)
"""True or False only (not 0/1; NumPy bools pass through :func:`plain_scalar` first)."""

non_empty_str = Rule(lambda v: isinstance(v, str) and bool(v), "a non-empty string", TypeError)
"""A string with at least one character."""


def optional(rule: Rule, means: str = "") -> Rule:
    """None, or what ``rule`` allows; ``means`` explains None in the message (``"no limit"``)."""
    suffix = f" or None{f' ({means})' if means else ''}"
    inner = rule.message

    def message(where: str, value: Any) -> str:
        assert inner is not None
        return inner(where, value)

    return Rule(
        lambda v: v is None or rule.test(v),
        rule.expected + suffix,
        rule.error,
        message if inner is not None else None,
    )


def int_ge(low: int) -> Rule:
    """An int (not a bool) ``>= low``."""
    return Rule(lambda v: _is_int(v) and v >= low, f"an int >= {low}")


def _interval(gt: float | None, ge: float | None, lt: float | None, le: float | None) -> str:
    if (gt is not None or ge is not None) and (lt is not None or le is not None):
        left = f"({gt}" if gt is not None else f"[{ge}"
        right = f"{lt})" if lt is not None else f"{le}]"
        return f"a number in {left}, {right}"
    parts = [f"{op} {b}" for op, b in ((">", gt), (">=", ge), ("<", lt), ("<=", le)) if b is not None]
    return "a finite number" + (f" {' and '.join(parts)}" if parts else "")


def finite(
    *,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    hint: str = "",
) -> Rule:
    """A finite int or float (not a bool) within the given bounds; ``hint`` is added to the message."""

    def test(v: Any) -> bool:
        return (
            _is_real(v)
            and math.isfinite(v)
            and (gt is None or v > gt)
            and (ge is None or v >= ge)
            and (lt is None or v < lt)
            and (le is None or v <= le)
        )

    return Rule(test, _interval(gt, ge, lt, le) + (f" ({hint})" if hint else ""))


def one_of(values: Iterable[Any], *, label: str = "", hint: str = "") -> Rule:
    """One of ``values``. With ``label`` the message reads ``unknown <label> 'x'; allowed values: [...]``."""
    allowed = tuple(values)
    shown = sorted(allowed) if label else list(allowed)
    suffix = f" ({hint})" if hint else ""

    def test(v: Any) -> bool:
        try:
            return v in allowed
        except TypeError:
            return False

    if not label:
        return Rule(test, f"one of {shown}{suffix}")
    return Rule(
        test,
        f"one of {shown}{suffix}",
        message=lambda where, v: f"{where}: unknown {label} {v!r}; allowed values: {shown}{suffix}",
    )


def and_(*rules: Rule) -> Validator:
    """Every rule in turn (the first failure raises)."""

    def check(inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        for rule in rules:
            rule(inst, attribute, value)

    return check


# ------------------------------------------------------------------------------------------------ from_dict
def config_fields(cls: type) -> list[str]:
    """The setting names an attrs config class accepts as keywords (the fields' init names)."""
    return [f.alias or f.name for f in attrs.fields(cls) if f.init]


def closest_names(key: str, allowed: Iterable[str]) -> list[str]:
    """The names in ``allowed`` closest to ``key`` (``difflib``, at most 3, best first)."""
    return difflib.get_close_matches(key, list(allowed), n=3, cutoff=0.6)


def unknown_names_message(owner: str, unknown: Iterable[str], allowed: Iterable[str]) -> str:
    """``<owner>: unknown setting(s) [...]; allowed settings: [...]; closest: 'x' -> 'y'`` for explicit names."""
    unknown, allowed = list(unknown), list(allowed)
    message = f"{owner}: unknown setting(s) {unknown}; allowed settings: {allowed}"
    hints = []
    for key in unknown:
        close = closest_names(key, allowed)
        if close:
            hints.append(f"{key!r} -> {' or '.join(repr(c) for c in close)}")
    if hints:
        message += f"; closest: {', '.join(hints)}"
    return message


def _unknown_message(cls: type, unknown: list[str], allowed: list[str]) -> str:
    return unknown_names_message(cls.__name__, unknown, allowed)


def check_keys(cls: type, data: Mapping[str, Any], allowed: Iterable[str] | None = None) -> None:
    """Raise TypeError if ``data`` is not a mapping, ValueError naming any unknown key, the closest valid ones
    (``difflib``) and the allowed ones: ``allowed``, or by default the fields of the attrs class ``cls``."""
    if not isinstance(data, Mapping):
        raise TypeError(f"{cls.__name__}: expected a mapping of settings, got {type(data).__name__}")
    names = config_fields(cls) if allowed is None else list(allowed)
    unknown = sorted(str(k) for k in data if k not in names)
    if unknown:
        raise ValueError(_unknown_message(cls, unknown, names))


def from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
    """Build the attrs config ``cls`` from a mapping, strictly.

    Keys are the keyword names of ``cls``; a field's attribute name is accepted for its keyword (so the output of
    ``attrs.asdict`` round-trips), and so are the spellings in ``cls.__setting_aliases__`` (``{alias: name}``).
    An unknown key raises ValueError naming it, the closest valid names and all of them; a key given twice (under
    its name and an alias) raises ValueError; a non-mapping raises TypeError.
    """
    if not isinstance(data, Mapping):
        raise TypeError(f"{cls.__name__}: expected a mapping of settings, got {type(data).__name__}")
    fields = [f for f in attrs.fields(cls) if f.init]  # type: ignore[arg-type,misc]
    allowed = [f.alias or f.name for f in fields]
    renames: dict[str, str] = {f.name: f.alias for f in fields if f.alias and f.alias != f.name}
    renames.update(getattr(cls, "__setting_aliases__", {}))
    out: dict[str, Any] = {}
    unknown: list[str] = []
    for key, value in data.items():
        name = renames.get(key, key) if isinstance(key, str) else key
        if name not in allowed:
            unknown.append(str(key))
            continue
        if name in out:
            raise ValueError(f"{cls.__name__}.{name}: given twice (as {name!r} and as an alias); give it once")
        out[name] = value
    if unknown:
        raise ValueError(_unknown_message(cls, sorted(unknown), allowed))
    return cls(**out)


class StrictConfig:
    """Mixin for config classes: ``Config.from_dict(mapping)`` through the strict :func:`from_dict`."""

    __slots__ = ()
    __setting_aliases__: ClassVar[Mapping[str, str]] = {}
    """Other accepted spellings of settings, ``{alias: field keyword}`` (e.g. a peer library's names)."""

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
        """Build from a mapping; an unknown key is an error naming it, the closest and the allowed settings."""
        return from_dict(cls, data)


def coerce_config(
    cls: type[C],
    cfg: C | Mapping[str, Any] | None,
    *,
    name: str = "cfg",
    build: Callable[[Mapping[str, Any]], C] | None = None,
) -> C:
    """``cfg`` as an instance of the config class ``cls``: None gives the defaults, a mapping goes through the
    strict :func:`from_dict` (or ``build``, for a class that is not an attrs class), anything else is a TypeError
    naming ``name``."""
    if cfg is None:
        return cls()
    if isinstance(cfg, cls):
        return cfg
    if isinstance(cfg, Mapping):
        return from_dict(cls, cfg) if build is None else build(cfg)
    raise TypeError(f"{name}: expected a {cls.__name__}, a dict or None, got {type(cfg).__name__}")


def accept_aliases(cls: type[C]) -> type[C]:
    """Class decorator (outside ``@attrs.define``): the constructor also takes the spellings in
    ``cls.__setting_aliases__`` (``{alias: field keyword}``); a setting given under both raises ValueError."""
    init = cls.__init__
    aliases: Mapping[str, str] = getattr(cls, "__setting_aliases__", {})

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        for alias, name in aliases.items():
            if alias in kwargs:
                if name in kwargs:
                    raise ValueError(f"{cls.__name__}.{name}: given twice (as {name!r} and as {alias!r}); give it once")
                kwargs[name] = kwargs.pop(alias)
        init(self, *args, **kwargs)

    cls.__init__ = __init__  # type: ignore[method-assign,misc]
    return cls
