"""The extractor contract and the registry that maps model classes (or string keys) to extractors.

An extractor knows one model family's forward. For a call ``module(*args, **kwargs)`` it runs the preprocessing and
returns a :class:`~ditcache.core.context.CacheContext` whose block stack and postprocess finish the forward. With
caching off (or a threshold that never skips) ``ctx.postprocess(*ctx.run_blocks())`` must equal the model's own forward
exactly; the test suite checks that for every registered diffusers model.
"""

from __future__ import annotations

import abc
import contextlib
import importlib
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from torch import nn

from ditcache.core.context import CacheContext

__all__ = [
    "add_lazy_models",
    "unregister_extractor",
    "Extractor",
    "ExtractorNotFoundError",
    "FunctionExtractor",
    "get_extractor",
    "register_extractor",
    "registered_extractors",
    "resolve_extractor",
]


class Extractor(abc.ABC):
    """Base class of per-model extractors.

    Subclasses implement :meth:`extract` and :meth:`block_modules`; they may override :meth:`scope` (state that
    must span the whole forward, such as LoRA scaling) and :meth:`check` (refuse an unsupported configuration when
    a cache is applied rather than at the first forward).
    """

    #: Short name used in logs and errors.
    name: str = "extractor"

    #: The keys :meth:`extract` puts in ``CacheContext.extra_states``, when declared (None: not declared). A
    #: declaration lets configs that name a key (``TeaCacheConfig.indicator``) be checked when the cache is applied
    #: instead of at the first forward. The built-in extractors do not declare theirs yet.
    extra_state_keys: frozenset[str] | None = None

    @abc.abstractmethod
    def extract(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> CacheContext:
        """Run the model's preprocessing for this call and describe the rest as a CacheContext."""

    @abc.abstractmethod
    def block_modules(self, module: nn.Module) -> Sequence[nn.Module]:
        """The model's transformer blocks in execution order (the same list the block stack runs)."""

    @contextlib.contextmanager
    def scope(self, module: nn.Module, kwargs: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Context entered around the whole cached forward; yields the kwargs :meth:`extract` receives."""
        yield kwargs

    def check(self, module: nn.Module) -> None:  # noqa: B027 - optional hook, empty by default
        """Raise ValueError if this extractor cannot serve ``module`` (called when a cache is applied)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class FunctionExtractor(Extractor):
    """Wraps a plain function ``fn(module, *args, **kwargs) -> CacheContext`` as an extractor.

    ``blocks`` returns the block list for apply-time checks; by default the first ``nn.ModuleList`` child named
    ``blocks``, ``transformer_blocks`` or ``layers``.
    """

    def __init__(
        self,
        fn: Callable[..., CacheContext],
        blocks: Callable[[nn.Module], Sequence[nn.Module]] | None = None,
        name: str | None = None,
    ) -> None:
        self.fn = fn
        self._blocks = blocks
        self.name = str(name or getattr(fn, "__name__", "function"))

    def extract(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> CacheContext:
        return self.fn(module, *args, **kwargs)

    def block_modules(self, module: nn.Module) -> Sequence[nn.Module]:
        if self._blocks is not None:
            return self._blocks(module)
        for attr in ("blocks", "transformer_blocks", "layers"):
            child = getattr(module, attr, None)
            if isinstance(child, nn.ModuleList):
                return list(child)
        raise ValueError(
            f"extractor {self.name!r}: cannot find the blocks of {type(module).__name__}; pass "
            "register_extractor(..., blocks=lambda m: m.my_blocks)"
        )


class ExtractorNotFoundError(LookupError, ValueError):
    """No extractor is registered for a model; the message lists the supported ones."""


_BY_CLASS: dict[type, Extractor] = {}
_BY_KEY: dict[str, Extractor] = {}
# The lazy table: model class name -> the module that registers its extractor when imported. Filled by
# ``add_lazy_models`` (the package wires ditcache.models' table in); a module is imported on the first lookup of one of
# its classes, under a lock, so importing ditcache imports no model module and no diffusers model.
_LAZY: dict[str, str] = {}
_LOADED: set[str] = set()
_LOCK = threading.RLock()


def add_lazy_models(table: Mapping[str, str]) -> None:
    """Declare model classes whose extractor module is imported on first use: ``{class name: module path}``."""
    with _LOCK:
        _LAZY.update(table)


def _load_lazy(names: Iterable[str]) -> None:
    """Import the extractor modules declared for ``names`` (class names); each module is imported once."""
    modules = [_LAZY[name] for name in names if name in _LAZY and _LAZY[name] not in _LOADED]
    if not modules:
        return
    with _LOCK:
        for module in modules:
            if module not in _LOADED:
                importlib.import_module(module)
                _LOADED.add(module)


def register_extractor(
    key: type | str,
    extractor: Extractor | Callable[..., CacheContext],
    *,
    blocks: Callable[[nn.Module], Sequence[nn.Module]] | None = None,
    replace: bool = False,
) -> Extractor:
    """Register an extractor for a model class (subclasses match too) or a string key.

    ``extractor`` is an :class:`Extractor` or a function ``fn(module, *args, **kwargs) -> CacheContext``.
    Registering a taken key raises ValueError unless ``replace=True``.
    """
    if isinstance(extractor, Extractor):
        ext = extractor
    elif callable(extractor):
        ext = FunctionExtractor(extractor, blocks=blocks)
    else:
        raise TypeError(f"extractor: expected an Extractor or a callable, got {type(extractor).__name__}")
    if isinstance(key, type):
        table: dict[Any, Extractor] = _BY_CLASS
    elif isinstance(key, str) and key:
        table = _BY_KEY
    else:
        raise TypeError(f"key: expected a model class or a non-empty string, got {key!r}")
    if key in table and not replace and table[key] is not ext:
        raise ValueError(f"key: an extractor is already registered for {key!r}; pass replace=True to override it")
    table[key] = ext
    return ext


def unregister_extractor(key: type | str) -> None:
    """Remove a registration (a no-op if absent)."""
    (_BY_CLASS if isinstance(key, type) else _BY_KEY).pop(key, None)  # type: ignore[arg-type]


def registered_extractors() -> list[str]:
    """Names of every supported model: class names and string keys."""
    return sorted({cls.__name__ for cls in _BY_CLASS} | set(_BY_KEY) | set(_LAZY))


def get_extractor(target: nn.Module | type | str) -> Extractor:
    """The extractor for a module, a model class or a string key.

    Classes are matched exactly, then through their bases (a subclass of a supported model is supported), then by
    class name among the string keys. Raises :class:`ExtractorNotFoundError` listing what is supported.
    """
    if isinstance(target, str):
        _load_lazy([target])
        ext = _BY_KEY.get(target)
        if ext is None:
            for cls, cand in _BY_CLASS.items():
                if cls.__name__ == target:
                    return cand
            raise ExtractorNotFoundError(_not_found(repr(target)))
        return ext
    original = getattr(target, "_orig_mod", None)  # a torch.compile'd module is served as its original class
    if isinstance(target, nn.Module) and isinstance(original, nn.Module):
        target = original
    cls = target if isinstance(target, type) else type(target)
    _load_lazy([base.__name__ for base in cls.__mro__])
    for base in cls.__mro__:
        if base in _BY_CLASS:
            return _BY_CLASS[base]
    if cls.__name__ in _BY_KEY:
        return _BY_KEY[cls.__name__]
    raise ExtractorNotFoundError(_not_found(cls.__name__))


def resolve_extractor(module: nn.Module, extractor: Extractor | str | None) -> Extractor:
    """The extractor that serves ``module``: ``extractor`` itself, the one registered under that key, or (None) the
    one registered for the module's class; checked against the module (:meth:`Extractor.check`)."""
    if isinstance(extractor, Extractor):
        ext = extractor
    elif extractor is None or isinstance(extractor, str):
        ext = get_extractor(module if extractor is None else extractor)
    else:
        raise TypeError(f"extractor: expected an Extractor, a registered key or None, got {type(extractor).__name__}")
    ext.check(module)
    return ext


def _not_found(what: str) -> str:
    return (
        f"model: no extractor is registered for {what}. Supported: {', '.join(registered_extractors())}. "
        "Write one for your model and register it with ditcache.register_extractor (see docs: "
        "'Writing a model extractor'), or pass extractor=... to the apply function."
    )
