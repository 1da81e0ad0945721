"""Published coefficient and ratio tables, each entry with its source, and the rules that pick one for a model.

``teacache`` and ``magcache`` are data; ``rules`` holds the preset-key rules the model files declare
(:func:`~ditcache.presets.rules.declare_presets`) and the lookup the caches use.

Layer rule: ``presets`` imports attrs and, lazily, the core's extractor lookup (which loads a model's declaration).
"""

from __future__ import annotations

from ditcache.presets.magcache import MAG_RATIO_PRESETS, MagRatioPreset
from ditcache.presets.rules import ModelPresets, PresetRule, declared_presets
from ditcache.presets.teacache import TEACACHE_PRESETS, TeaCachePreset

__all__ = [
    "MAG_RATIO_PRESETS",
    "TEACACHE_PRESETS",
    "MagRatioPreset",
    "ModelPresets",
    "PresetRule",
    "TeaCachePreset",
    "declared_presets",
]
