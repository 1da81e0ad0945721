"""Which published preset applies to a model class: the preset-key rules, declared by the model files.

A model file declares, next to its extractor, one :class:`PresetRule` per cache (TeaCache coefficients, MagCache
ratios). A rule names every preset key it may choose (so ``ditcache info`` and the coverage page can list them) and
chooses one from the module's config, returning ``(key, exact)``: ``exact`` is False when the architecture matches
no published checkpoint and the nearest preset of the same family is borrowed (a random-weight test model, say).
A class with no published set declares :func:`none_published`, whose rule raises a ValueError saying so and
pointing to calibration; a class with no declaration at all gets the generic "none known" error.

:func:`preset_key` is the lookup the caches call (through ``infer_teacache_model`` / ``infer_magcache_model``).
Rules are keyed by class name and matched along the module's MRO, so a subclass of a supported model finds its
parent's rule; a ``torch.compile``'d module (``OptimizedModule``) is looked up as the module it wraps.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any, Literal

import attrs

__all__ = [
    "ModelPresets",
    "NoPresetError",
    "PresetRule",
    "config_value",
    "declare_presets",
    "declared_presets",
    "fixed",
    "none_published",
    "preset_key",
]

CacheKind = Literal["teacache", "magcache"]


def config_value(config: Any, key: str) -> Any:
    """``config[key]`` for a dict or attribute config; None when absent."""
    if config is None:
        return None
    if isinstance(config, Mapping):
        return config.get(key)
    return getattr(config, key, None)


@attrs.frozen
class PresetRule:
    """How one model class picks a preset for one cache."""

    keys: tuple[str, ...]
    """Every preset key this rule may return (empty when none is published)."""
    choose: Callable[[Any], tuple[str, bool]]
    """``choose(config) -> (key, exact)``; raises ValueError when no published preset fits."""
    note: str = ""
    """Why the rule is what it is (shown by ``ditcache info`` and the coverage page)."""


def fixed(key: str, published: Mapping[str, Any] | None = None, note: str = "") -> PresetRule:
    """One preset for the whole class; ``exact`` when every config value in ``published`` (the published
    checkpoint's config) matches."""
    expected = dict(published or {})

    def choose(config: Any) -> tuple[str, bool]:
        return key, all(config_value(config, k) == v for k, v in expected.items())

    return PresetRule((key,), choose, note)


def none_published(note: str) -> PresetRule:
    """No published preset exists for this class: the rule raises, saying so (``note`` says what is known)."""

    def choose(config: Any) -> tuple[str, bool]:
        raise LookupError(note)

    return PresetRule((), choose, note)


@attrs.frozen
class ModelPresets:
    """The rules one model class declares."""

    teacache: PresetRule | None = None
    magcache: PresetRule | None = None


_RULES: dict[str, ModelPresets] = {}
_LOCK = threading.Lock()


def declare_presets(class_name: str, *, teacache: PresetRule | None, magcache: PresetRule | None) -> None:
    """Declare the preset rules of a model class (called by the model file that supports it)."""
    with _LOCK:
        _RULES[class_name] = ModelPresets(teacache=teacache, magcache=magcache)


def declared_presets() -> dict[str, ModelPresets]:
    """A copy of every declaration made so far, by class name."""
    with _LOCK:
        return dict(_RULES)


def _unwrap(module: Any) -> Any:
    # torch.compile wraps a module in an OptimizedModule that keeps the original as _orig_mod
    inner = getattr(module, "_orig_mod", None)
    return inner if inner is not None and type(module).__name__ == "OptimizedModule" else module


def _find(cls: type) -> tuple[str, ModelPresets] | None:
    for base in cls.__mro__:
        found = _RULES.get(base.__name__)
        if found is not None:
            return base.__name__, found
    return None


class NoPresetError(ValueError):
    """No published preset fits a module: ``class_name`` is the class looked up, ``note`` the declared reason (None
    when the class declares nothing for this cache)."""

    def __init__(self, class_name: str, note: str | None) -> None:
        super().__init__(class_name if note is None else f"{class_name}: {note}")
        self.class_name = class_name
        self.note = note


def preset_key(module: Any, kind: CacheKind) -> tuple[str, bool]:
    """The preset key for ``module`` and cache ``kind``: ``(key, exact)``.

    Loads the model's declaration on first use (through the extractor lookup, which imports the model file), then
    applies its rule. Raises :class:`NoPresetError` when the class declares that none is published (with the
    declared note) or declares nothing.
    """
    module = _unwrap(module)
    cls = module if isinstance(module, type) else type(module)
    found = _find(cls)
    if found is None:
        from ditcache.core.extractor import get_extractor  # importing the model file declares its rules

        try:
            get_extractor(cls)
        except (LookupError, ValueError, ImportError):
            pass
        found = _find(cls)
    rule = None if found is None else getattr(found[1], kind)
    if found is None or rule is None:
        raise NoPresetError(cls.__name__, None)
    try:
        key, exact = rule.choose(getattr(module, "config", None))
        return str(key), bool(exact)
    except LookupError as exc:
        raise NoPresetError(found[0], str(exc.args[0])) from None
