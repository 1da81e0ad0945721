"""Published coefficient and ratio tables, each entry with its source: data only.

Layer rule: ``presets`` imports attrs and nothing else of ditcache.
"""

from __future__ import annotations

from ditcache.presets.magcache import MAG_RATIO_PRESETS, MagRatioPreset
from ditcache.presets.teacache import TEACACHE_PRESETS, TeaCachePreset

__all__ = ["MAG_RATIO_PRESETS", "TEACACHE_PRESETS", "MagRatioPreset", "TeaCachePreset"]
