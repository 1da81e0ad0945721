"""Prompt-embedding cache: an LRU of a pipeline's ``encode_prompt`` results (vLLM-Omni's API and env variables).

Serving the same prompts again (RL rollouts, benchmarks, popular prompts) re-runs the text encoder for nothing.
:func:`install_prompt_embed_cache` wraps ``pipeline.encode_prompt`` so that a call with the same arguments
returns the stored result:

* the key is built from the call's arguments bound to ``encode_prompt``'s signature with the defaults applied, so
  positional and keyword calls, and a default passed explicitly, hit the same entry; the model tag (the pipeline's
  class name unless given) keeps pipelines apart;
* a call with precomputed embeddings (``prompt_embeds``, ``negative_prompt_embeds``, ``pooled_prompt_embeds``,
  ``negative_pooled_prompt_embeds``, ``prompt_embeds_mask``, ``negative_prompt_embeds_mask``) or with an argument
  that has no stable value (a tensor, an array, an image, an arbitrary object) bypasses the cache;
* results are stored detached (tensors inside tuples, named tuples, lists and dicts) and returned as stored, so
  consumers must not modify them in place;
* ``hits``, ``misses`` and ``bypassed`` count the calls; one lock guards the table and the counters.

:func:`uninstall_prompt_embed_cache` restores the original ``encode_prompt`` exactly. The environment variables
``OMNI_DIFFUSION_PROMPT_EMBED_CACHE`` (1/true/yes/on, 0/false/no/off) and ``OMNI_DIFFUSION_PROMPT_EMBED_CACHE_SIZE``
(a positive int) override the arguments of :func:`resolve_prompt_embed_cache_config`.
"""

from __future__ import annotations

import functools
import inspect
import os
import threading
from collections import OrderedDict
from typing import Any

import torch

from ditcache.core.log import get_logger

__all__ = [
    "ENV_ENABLE",
    "ENV_SIZE",
    "PromptEmbedCache",
    "install_prompt_embed_cache",
    "resolve_prompt_embed_cache_config",
    "uninstall_prompt_embed_cache",
]

_log = get_logger("ditcache.backends.prompt_embed_cache")

ENV_ENABLE = "OMNI_DIFFUSION_PROMPT_EMBED_CACHE"
"""Environment variable that turns the prompt-embedding cache on (``1``/``true``/``yes``/``on``) or off
(``0``/``false``/``no``/``off``), overriding the ``enable`` argument; any other value is ignored with a warning."""
ENV_SIZE = "OMNI_DIFFUSION_PROMPT_EMBED_CACHE_SIZE"
"""Environment variable giving the cache's maximum number of entries (a positive int), overriding ``max_size``; a
non-int is ignored with a warning, an int <= 0 is ignored."""
DEFAULT_MAX_SIZE = 32

_EMBED_ARGS = (
    "prompt_embeds",
    "negative_prompt_embeds",
    "pooled_prompt_embeds",
    "negative_pooled_prompt_embeds",
    "prompt_embeds_mask",
    "negative_prompt_embeds_mask",
)


class _Sentinel:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


_CACHE_MISS: Any = _Sentinel("_CACHE_MISS")
_NOT_HASHABLE: Any = _Sentinel("_NOT_HASHABLE")


class PromptEmbedCache:
    """Thread-safe LRU cache of ``encode_prompt`` results (any value, ``None`` included)."""

    def __init__(self, max_size: int = DEFAULT_MAX_SIZE, enabled: bool = True) -> None:
        if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size <= 0:
            raise ValueError(f"max_size: expected a positive int, got {max_size!r}")
        self.max_size = max_size
        self.enabled = bool(enabled)
        self.hits = 0
        self.misses = 0
        self.bypassed = 0
        self._store: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        """The stored value (now the most recently used) or the ``_CACHE_MISS`` sentinel, counting a hit or miss."""
        with self._lock:
            if key in self._store:
                self._store.move_to_end(key)
                self.hits += 1
                return self._store[key]
            self.misses += 1
            return _CACHE_MISS

    def put(self, key: Any, value: Any) -> None:
        """Store ``value`` as the most recently used entry, evicting the least recently used beyond ``max_size``."""
        with self._lock:
            self._store[key] = value
            self._store.move_to_end(key)
            while len(self._store) > self.max_size:
                self._store.popitem(last=False)

    def record_bypass(self) -> None:
        """Count a call that could not use the cache."""
        with self._lock:
            self.bypassed += 1

    def clear(self) -> None:
        """Drop every entry (the counters are kept)."""
        with self._lock:
            self._store.clear()

    def stats(self) -> dict[str, int]:
        """``{size, max_size, hits, misses, bypassed}``."""
        with self._lock:
            return {
                "size": len(self._store),
                "max_size": self.max_size,
                "hits": self.hits,
                "misses": self.misses,
                "bypassed": self.bypassed,
            }

    def __len__(self) -> int:
        with self._lock:
            return len(self._store)


def _hashable(value: Any) -> Any:
    """A hashable stand-in for an argument value, or ``_NOT_HASHABLE``."""
    if value is None or isinstance(value, (str, int, float, bool, bytes)):
        return value
    if isinstance(value, torch.device):
        return ("__torch_device__", str(value))
    if isinstance(value, torch.dtype):
        return ("__torch_dtype__", str(value))
    if type(value).__module__.startswith("numpy") and hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return _hashable(value.item())
    if isinstance(value, (list, tuple)):
        items = tuple(_hashable(v) for v in value)
        return _NOT_HASHABLE if any(i is _NOT_HASHABLE for i in items) else ("__seq__", items)
    if isinstance(value, dict):
        pairs = tuple(sorted(((repr(k), _hashable(v)) for k, v in value.items()), key=lambda kv: kv[0]))
        return _NOT_HASHABLE if any(v is _NOT_HASHABLE for _, v in pairs) else ("__dict__", pairs)
    return _NOT_HASHABLE


def _build_key(signature: inspect.Signature, tag: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The cache key of a call, or None when the call must bypass the cache."""
    try:
        bound = signature.bind_partial(*args, **kwargs)
    except TypeError:
        return None
    bound.apply_defaults()
    arguments = dict(bound.arguments)
    for name, param in signature.parameters.items():  # flatten **kwargs so keyword order does not matter
        if param.kind is inspect.Parameter.VAR_KEYWORD and name in arguments:
            arguments.update(arguments.pop(name))
    if any(arguments.get(name) is not None for name in _EMBED_ARGS):
        return None
    items = []
    for name, value in arguments.items():
        h = _hashable(value)
        if h is _NOT_HASHABLE:
            return None
        items.append((name, h))
    return (tag, tuple(sorted(items, key=lambda kv: kv[0])))


def _detach_output(value: Any) -> Any:
    """``value`` with every tensor detached (tuples, named tuples, lists and dicts walked)."""
    if isinstance(value, torch.Tensor):
        return value.detach()
    if isinstance(value, tuple):
        items = [_detach_output(v) for v in value]
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
    if isinstance(value, list):
        return [_detach_output(v) for v in value]
    if isinstance(value, dict):
        return {k: _detach_output(v) for k, v in value.items()}
    return value


def install_prompt_embed_cache(
    pipeline: Any, *, max_size: int = DEFAULT_MAX_SIZE, enabled: bool = True, model_tag: str | None = None
) -> PromptEmbedCache | None:
    """Wrap ``pipeline.encode_prompt`` with a :class:`PromptEmbedCache`; returns it.

    Idempotent: a second call returns the cache already installed. Returns None (and changes nothing) when the
    pipeline has no callable ``encode_prompt`` or its signature cannot be read.
    """
    existing = getattr(pipeline, "_prompt_embed_cache", None)
    if isinstance(existing, PromptEmbedCache):
        return existing
    original = getattr(pipeline, "encode_prompt", None)
    if original is None or not callable(original):
        return None
    try:
        signature = inspect.signature(original)
    except (TypeError, ValueError):
        return None
    cache = PromptEmbedCache(max_size=max_size, enabled=enabled)
    tag = model_tag or type(pipeline).__name__

    @functools.wraps(original)
    def encode_prompt(*args: Any, **kwargs: Any) -> Any:
        if not cache.enabled:
            return original(*args, **kwargs)
        key = _build_key(signature, tag, args, kwargs)
        if key is None:
            cache.record_bypass()
            return original(*args, **kwargs)
        found = cache.get(key)
        if found is not _CACHE_MISS:
            return found
        out = original(*args, **kwargs)
        cache.put(key, _detach_output(out))
        return out

    _set(pipeline, "encode_prompt", encode_prompt)
    _set(pipeline, "_prompt_embed_cache", cache)
    _set(pipeline, "_prompt_embed_cache_original_fn", original)
    _log.info("prompt_embed_cache.installed", pipeline=type(pipeline).__name__, max_size=max_size, tag=tag)
    return cache


def uninstall_prompt_embed_cache(pipeline: Any) -> None:
    """Restore the original ``encode_prompt`` (no-op when no cache is installed)."""
    if not isinstance(getattr(pipeline, "_prompt_embed_cache", None), PromptEmbedCache):
        return
    original = getattr(pipeline, "_prompt_embed_cache_original_fn", None)
    for name in ("encode_prompt", "_prompt_embed_cache", "_prompt_embed_cache_original_fn"):
        _del(pipeline, name)
    # The class's method comes back by deleting the wrapper; anything else that was there is put back.
    is_class_method = getattr(original, "__self__", None) is pipeline and getattr(
        original, "__func__", None
    ) is getattr(type(pipeline), "encode_prompt", None)
    if original is not None and not is_class_method:
        _set(pipeline, "encode_prompt", original)


def _set(obj: Any, name: str, value: Any) -> None:
    try:
        setattr(obj, name, value)
    except AttributeError:
        object.__setattr__(obj, name, value)


def _del(obj: Any, name: str) -> None:
    try:
        delattr(obj, name)
    except AttributeError:
        obj.__dict__.pop(name, None)


def _env_bool(name: str) -> bool | None:
    raw = os.environ.get(name)
    if raw is None:
        return None
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    _log.warning("prompt_embed_cache.env_ignored", variable=name, value=raw, allowed="1/true/yes/on, 0/false/no/off")
    return None


def _env_size(name: str) -> int | None:
    raw = os.environ.get(name)
    if raw is None:
        return None
    try:
        value = int(raw.strip())
    except ValueError:
        _log.warning("prompt_embed_cache.env_ignored", variable=name, value=raw, allowed="a positive int")
        return None
    return value if value > 0 else None


def resolve_prompt_embed_cache_config(enable: bool | None = None, max_size: int | None = None) -> tuple[bool, int]:
    """``(enabled, max_size)`` from the arguments, overridden by ``OMNI_DIFFUSION_PROMPT_EMBED_CACHE`` and
    ``OMNI_DIFFUSION_PROMPT_EMBED_CACHE_SIZE`` when set to a valid value (invalid values are ignored)."""
    env_enable = _env_bool(ENV_ENABLE)
    env_size = _env_size(ENV_SIZE)
    resolved_enable = env_enable if env_enable is not None else bool(enable)
    resolved_size = env_size if env_size is not None else int(max_size or DEFAULT_MAX_SIZE)
    return resolved_enable, resolved_size
