"""Serving-engine backends (the vLLM-Omni diffusion-cache API on ditcache's runtime).

Layer rule: ``backends`` imports the public API, ``models`` and ``calibration``; nothing below imports it.
"""

from __future__ import annotations
