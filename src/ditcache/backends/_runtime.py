"""Shared machinery of the backends that run on ditcache's own cache runtime (TeaCache, MagCache, ditcache).

Each cached DiT of the pipeline gets the backend's caches through ditcache's public API; ``refresh`` calls
``ditcache.refresh(module, n)`` on each with the request's step count, and ``disable`` removes exactly the caches
the backend applied. Both experts of a Wan 2.2 pipeline get the *total* step count: diffusers' Wan pipelines pass
the loop's ``step_index`` through ``cache_context``, so each expert's calls carry their global step index (the
low-noise expert starts at the boundary step), which is what ditcache's step clock uses. The ditcache
functions are looked up on the ``ditcache`` module at call time, so they can be patched.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any

from torch import nn

import ditcache
from ditcache.backends.base import CacheBackend, dit_modules
from ditcache.backends.data import DiffusionCacheConfig
from ditcache.core.cache import GenerationStats
from ditcache.core.log import get_logger

__all__ = ["RuntimeBackend"]

_log = get_logger("ditcache.backends")


class RuntimeBackend(CacheBackend):
    """A backend whose caches are ditcache middlewares on each DiT module of the pipeline."""

    cache_names: tuple[str, ...] = ()
    """The middleware names this backend applies (removed by :meth:`disable`)."""

    def __init__(self, config: DiffusionCacheConfig | Mapping[str, Any] | None = None) -> None:
        super().__init__(config)
        self._modules: dict[str, nn.Module] = {}

    # ------------------------------------------------------------------ for subclasses
    @abc.abstractmethod
    def _apply(self, name: str, module: nn.Module) -> None:
        """Apply this backend's caches to one DiT (raise ValueError/TypeError for an impossible setup)."""

    def _refresh_module(self, name: str, module: nn.Module, num_steps: int) -> None:
        ditcache.refresh(module, num_steps)

    def _prepare(self, pipeline: Any) -> None:
        """Checks of the whole config before anything is applied."""

    # ------------------------------------------------------------------ lifecycle
    @property
    def modules(self) -> dict[str, nn.Module]:
        """The cached DiTs, by attribute path."""
        return dict(self._modules)

    def enable(self, pipeline: Any) -> None:
        if self.enabled:
            self.disable(pipeline)
        self.config.validate()
        self._prepare(pipeline)
        modules = dit_modules(pipeline, self.name)
        applied: list[nn.Module] = []
        try:
            for name, module in modules.items():
                self._remove_from(module)  # start from a clean module (enable twice, or a leftover)
                applied.append(module)
                try:
                    self._apply(name, module)
                except (ValueError, TypeError, LookupError) as exc:
                    raise type(exc)(
                        f"{self.name}: cannot cache {type(pipeline).__name__}.{name} ({type(module).__name__}): {exc}"
                    ) from exc
        except BaseException:
            for module in applied:
                self._remove_from(module)
            raise
        self._modules = modules
        self.enabled = True
        _log.info("backend.enabled", backend=self.name, pipeline=type(pipeline).__name__, modules=list(modules))

    def _refresh(self, pipeline: Any, num_inference_steps: int, verbose: bool) -> None:
        steps = num_inference_steps
        current = dit_modules(pipeline, self.name)
        if {n: id(m) for n, m in current.items()} != {n: id(m) for n, m in self._modules.items()}:
            # The pipeline's DiTs were replaced (a reload): cache the new ones.
            for module in self._modules.values():
                self._remove_from(module)
            self.enabled = False
            self.enable(pipeline)
        for name, module in self._modules.items():
            self._refresh_module(name, module, steps)
        if verbose:
            _log.info("backend.refreshed", backend=self.name, num_inference_steps=steps, modules=list(self._modules))

    def disable(self, pipeline: Any) -> None:
        try:
            for module in self._modules.values():
                self._remove_from(module)
        finally:
            self._modules = {}
            self.enabled = False

    def _remove_from(self, module: nn.Module) -> None:
        for cache in self.cache_names:
            ditcache.remove_cache(module, cache)

    def stats(self) -> dict[str, dict[str, list[GenerationStats]]]:
        """Per cached DiT, per cache, the decisions of recent requests (see ``ditcache.cache_stats``)."""
        return {name: ditcache.cache_stats(module) for name, module in self._modules.items()}
