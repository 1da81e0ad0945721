"""Per-model extractors and their registry.

Built-in extractors for diffusers transformer classes are registered lazily (on the first lookup), so importing
ditcache does not import every diffusers model.
"""

from __future__ import annotations

from .base import (
    Extractor,
    ExtractorNotFoundError,
    FunctionExtractor,
    get_extractor,
    register_extractor,
    registered_extractors,
    unregister_extractor,
)

__all__ = [
    "Extractor",
    "ExtractorNotFoundError",
    "FunctionExtractor",
    "get_extractor",
    "register_extractor",
    "registered_extractors",
    "unregister_extractor",
]

_BUILTINS_LOADED = False


def _ensure_builtin_extractors() -> None:
    """Register the built-in diffusers extractors once."""
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    _BUILTINS_LOADED = True
    from . import flux, qwenimage, wan

    for mod in (flux, qwenimage, wan):
        mod.register()
