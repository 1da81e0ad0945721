"""Model support: one file per model family, each a short declaration over the helpers in ``_diffusers``.

:data:`MODEL_TABLE` maps a model class name to the module that registers its extractor. Nothing here is imported
with ``import ditcache``: the core imports a model's module on the first lookup of its class (diffusers' lazy
block-registry pattern), so the diffusers model modules load only for the models in use.

Layer rule: a model file imports ``core`` (and diffusers, lazily) and never another model file or a cache.
"""

from __future__ import annotations

from typing import Final

__all__ = ["MODEL_TABLE"]

MODEL_TABLE: Final[dict[str, str]] = {
    "FluxTransformer2DModel": "ditcache.models.flux",
    "QwenImageTransformer2DModel": "ditcache.models.qwenimage",
    "WanTransformer3DModel": "ditcache.models.wan",
}
"""Model class name -> module path of its extractor (imported on first use)."""
