"""The backend interface every serving engine programs against, and how a backend finds a pipeline's DiTs.

:class:`CacheBackend` is vLLM-Omni's ``vllm_omni.diffusion.cache.base.CacheBackend``: built from a
:class:`~ditcache.backends.data.DiffusionCacheConfig` (or a dict of its keys), ``enable(pipeline)`` once after
loading, ``refresh(pipeline, num_inference_steps, verbose=True)`` before every request, ``is_enabled()``. ditcache
adds ``disable(pipeline)``, which removes the cache exactly.

Which modules of a pipeline are cached (:func:`dit_modules`): the names in ``pipeline._dit_modules`` when the
pipeline declares them (dotted paths allowed, vLLM-Omni's convention), else those of
:data:`PIPELINE_DIT_MODULES` for the pipeline's class, else ``transformer`` and, when present, ``transformer_2``
(Wan 2.2's low-noise expert). A two-expert pipeline with a ``boundary_ratio`` runs each request's steps partly on
one expert and partly on the other; :func:`split_inference_steps` splits the step count the way the pipeline will.
"""

from __future__ import annotations

import abc
import copy
import operator
from collections.abc import Mapping
from typing import Any

from torch import nn

from ditcache.backends.data import DiffusionCacheConfig
from ditcache.core.log import get_logger
from ditcache.core.validators import coerce_config, int_ge

__all__ = [
    "PIPELINE_DIT_MODULES",
    "CacheBackend",
    "coerce_cache_config",
    "dit_module_names",
    "dit_modules",
    "no_dit_module_error",
    "split_inference_steps",
]

_log = get_logger("ditcache.backends")

PIPELINE_DIT_MODULES: dict[str, tuple[str, ...]] = {
    "HunyuanImage3Pipeline": ("model",),
}
"""Pipeline class name -> the attributes holding its DiTs, for pipelines that do not name them ``transformer``."""

_DEFAULT_DIT_MODULES = ("transformer", "transformer_2")


def coerce_cache_config(config: DiffusionCacheConfig | Mapping[str, Any] | None) -> DiffusionCacheConfig:
    """``config`` as a validated :class:`DiffusionCacheConfig` (None: the defaults; a dict: strict ``from_dict``)."""
    out = coerce_config(DiffusionCacheConfig, config, name="cache_config", build=DiffusionCacheConfig.from_dict)
    out.validate()  # the config is a mutable dataclass: check a given instance again
    return out


def dit_module_names(pipeline: Any, default: tuple[str, ...] = _DEFAULT_DIT_MODULES) -> tuple[str, ...]:
    """The attribute paths of the DiTs to cache in ``pipeline`` (see the module docstring); unresolved ones dropped.

    ``default`` is used when the pipeline declares nothing (``_dit_modules``, :data:`PIPELINE_DIT_MODULES`).
    """
    declared = getattr(pipeline, "_dit_modules", None)
    if isinstance(declared, (list, tuple)):
        names = tuple(str(n) for n in declared)
    else:
        names = PIPELINE_DIT_MODULES.get(type(pipeline).__name__, default)
    out = []
    for name in names:
        try:
            module = operator.attrgetter(name)(pipeline)
        except AttributeError:
            continue
        if module is not None:
            out.append(name)
    return tuple(out)


def no_dit_module_error(pipeline: Any, backend: str = "cache") -> ValueError:
    """The error for a pipeline without a DiT to cache, naming the pipeline and how to declare its DiTs."""
    return ValueError(
        f"{backend}: pipeline {type(pipeline).__name__} has no DiT module to cache: it has no 'transformer' "
        "attribute; declare the attribute paths in pipeline._dit_modules (e.g. ['model']) or in "
        "ditcache.backends.base.PIPELINE_DIT_MODULES"
    )


def dit_modules(pipeline: Any, backend: str = "cache") -> dict[str, nn.Module]:
    """The DiTs to cache, by attribute path; a ValueError naming the pipeline when there is none."""
    names = dit_module_names(pipeline)
    if not names:
        raise no_dit_module_error(pipeline, backend)
    out: dict[str, nn.Module] = {}
    for name in names:
        module = operator.attrgetter(name)(pipeline)
        if not isinstance(module, nn.Module):
            raise TypeError(f"{backend}: pipeline.{name} is a {type(module).__name__}, not a torch.nn.Module")
        out[name] = module
    return out


def _boundary_ratio(pipeline: Any) -> float | None:
    config = getattr(pipeline, "config", None)
    value = config.get("boundary_ratio") if isinstance(config, Mapping) else getattr(config, "boundary_ratio", None)
    if value is None and "boundary_ratio" in getattr(pipeline, "__dict__", {}):
        value = pipeline.__dict__["boundary_ratio"]
    return None if value is None else float(value)


_SPLIT_MEMO: dict[tuple[Any, ...], tuple[int, int]] = {}
_SPLIT_MEMO_SIZE = 256


def split_inference_steps(pipeline: Any, num_inference_steps: int) -> tuple[int, int]:
    """``(high, low)``: how many of ``num_inference_steps`` steps a two-expert pipeline (Wan 2.2) runs on
    ``transformer`` (timesteps ``>= boundary_ratio * num_train_timesteps``) and on ``transformer_2``.

    The timesteps come from a copy of the pipeline's scheduler, so the pipeline is not changed. Without a
    ``boundary_ratio`` every step is a high-noise step, as in the pipeline. The split is memoised per scheduler
    class and config, step count and boundary, so a serving loop copies the scheduler once per step count.
    """
    ratio = _boundary_ratio(pipeline)
    if ratio is None:
        return num_inference_steps, 0
    scheduler = pipeline.scheduler
    boundary = ratio * scheduler.config.num_train_timesteps
    key = (type(scheduler), repr(sorted(dict(scheduler.config).items())), num_inference_steps, boundary)
    split = _SPLIT_MEMO.get(key)
    if split is None:
        scheduler = copy.deepcopy(scheduler)
        scheduler.set_timesteps(num_inference_steps, device="cpu")
        high = sum(1 for t in scheduler.timesteps if float(t) >= boundary)
        split = (high, num_inference_steps - high)
        if len(_SPLIT_MEMO) >= _SPLIT_MEMO_SIZE:
            _SPLIT_MEMO.clear()
        _SPLIT_MEMO[key] = split
    return split


def check_steps(num_inference_steps: Any) -> int:
    """``num_inference_steps`` as an int >= 1, or a ValueError naming it."""
    int_ge(1).check(num_inference_steps, "num_inference_steps")
    return int(num_inference_steps)


class CacheBackend(abc.ABC):
    """Base class of the serving backends (vLLM-Omni's ``CacheBackend``).

    Attributes:
        config: the :class:`DiffusionCacheConfig` (a dict or None passed to the constructor is converted; unknown
            keys and bad values are refused here).
        enabled: True between a successful :meth:`enable` and :meth:`disable`.
    """

    name = "cache"
    reads_rtol = False
    """Whether the backend reads ``DiffusionCacheConfig.ditcache_rtol`` (the others refuse a set value)."""

    def __init__(self, config: DiffusionCacheConfig | Mapping[str, Any] | None = None) -> None:
        self.config: DiffusionCacheConfig = coerce_cache_config(config)
        if self.config.ditcache_rtol is not None and not self.reads_rtol:
            raise ValueError(
                f"DiffusionCacheConfig.ditcache_rtol: read only by cache_backend='ditcache'; the {self.name!r} "
                "backend would ignore it (unset it, or use the ditcache backend)"
            )
        self.enabled: bool = False
        self._last_num_inference_steps: int | None = None
        """The step count of the last refresh."""

    @abc.abstractmethod
    def enable(self, pipeline: Any) -> None:
        """Apply the cache to the pipeline's DiT(s); called once after loading. Raises on a bad config or an
        unsupported pipeline, leaving the pipeline unchanged."""

    def refresh(self, pipeline: Any, num_inference_steps: int, verbose: bool = True) -> None:
        """Reset the cache state for a new request of ``num_inference_steps`` steps; call before every request.

        ``num_inference_steps`` must be an int >= 1 (ValueError naming it otherwise). Before :meth:`enable` this
        only logs a warning; otherwise the backend's :meth:`_refresh` does the work and the step count is kept.
        """
        steps = check_steps(num_inference_steps)
        if not self._ready():
            _log.warning("backend.refresh_skipped", backend=self.name, reason="not enabled")
            return
        self._refresh(pipeline, steps, verbose)
        self._last_num_inference_steps = steps

    def _ready(self) -> bool:
        """Whether :meth:`refresh` has something to refresh (by default: the backend is enabled)."""
        return bool(self.enabled)

    @abc.abstractmethod
    def _refresh(self, pipeline: Any, num_inference_steps: int, verbose: bool) -> None:
        """The backend's refresh for a request of ``num_inference_steps`` steps (checked, and the backend ready)."""

    def disable(self, pipeline: Any) -> None:  # noqa: B027 - optional, not abstract: vLLM-Omni's backends lack it
        """Remove the cache from the pipeline, restoring its modules exactly."""

    def is_enabled(self) -> bool:
        """Whether the cache is enabled."""
        return bool(self.enabled)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(enabled={self.enabled})"
