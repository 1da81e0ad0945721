"""The record type of a published MagCache curve (shared by the preset tables)."""

from __future__ import annotations

import math

import attrs

__all__ = ["MagRatioPreset"]


@attrs.frozen
class MagRatioPreset:
    """One published magnitude-ratio curve and the settings its authors recommend with it."""

    ratios: tuple[float, ...]
    """The array as published, padding prefix included (interleaved cond/uncond when :attr:`interleaved`)."""
    source: str
    """Where the numbers come from (repository, file, line)."""
    num_steps: int
    """Denoising steps (per CFG branch) the curve was recorded for."""
    interleaved: bool
    """Whether cond and uncond entries alternate (``[0::2]`` cond, ``[1::2]`` uncond)."""
    threshold: float
    """Recommended accumulated-error threshold ``E`` (``magcache_thresh``)."""
    max_skip_steps: int
    """Recommended cap ``K`` on skips in a row."""
    retention_ratio: float
    """Recommended fraction ``R`` of leading steps always computed."""
    note: str = ""

    def __attrs_post_init__(self) -> None:
        per_call = 2 if self.interleaved else 1
        if len(self.ratios) != per_call * self.num_steps:
            raise ValueError(
                f"MagRatioPreset.ratios: expected {per_call * self.num_steps} values "
                f"({self.num_steps} steps{' x cond/uncond' if self.interleaved else ''}), got {len(self.ratios)}"
            )
        if self.ratios[: self.padding] != (1.0,) * self.padding:
            raise ValueError(f"MagRatioPreset.ratios: expected the padding prefix {[1.0] * self.padding}")
        if not all(math.isfinite(r) and r > 0 for r in self.ratios):
            raise ValueError("MagRatioPreset.ratios: every ratio must be a finite number > 0")

    @property
    def padding(self) -> int:
        """Number of leading ``1.0`` padding entries: 2 for interleaved curves, else 1."""
        return 2 if self.interleaved else 1

    def curves(self) -> dict[str, tuple[float, ...]]:
        """Per-branch curves, ``num_steps`` entries each: ``{"cond": ...}`` plus ``"uncond"`` when interleaved."""
        if self.interleaved:
            return {"cond": self.ratios[0::2], "uncond": self.ratios[1::2]}
        return {"cond": self.ratios}


def _padded(n: int, values: tuple[float, ...]) -> tuple[float, ...]:
    """``[1.0] * n + values``, as the published scripts write their arrays."""
    return (1.0,) * n + values
