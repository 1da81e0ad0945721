"""Extractor for diffusers ``QwenImageTransformer2DModel`` (placeholder; being written)."""

from __future__ import annotations


def register() -> None:
    """Register this extractor."""
