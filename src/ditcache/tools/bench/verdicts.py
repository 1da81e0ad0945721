"""The verdicts: our fastest configuration against the fastest peer at each quality level, and the goals."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from ditcache.tools.evaluation import Evaluation, RunResult

__all__ = ["QUALITY_LEVELS", "TARGET_EFFICIENCY", "TARGET_RATIO", "Verdict", "verdicts"]

QUALITY_LEVELS = (40.0, 35.0)
"""PSNR thresholds (dB, against the uncached samples) at which ours and the peers are compared."""
TARGET_RATIO = 1.15
"""The goal: our best speed-up at least this many times the best peer's, at each quality level and mode."""
TARGET_EFFICIENCY = 0.95
"""The goal: our best configuration's measured speed-up at least this fraction of its ideal one."""


@attrs.frozen
class Verdict:
    """Our fastest configuration against the fastest peer at one quality level, in one mode."""

    mode: str
    """``"no-cfg"`` or ``"cfg"``."""
    min_psnr: float
    """Quality level: configurations with at least this PSNR (dB) against the uncached samples compete."""
    ours: RunResult | None
    """Our fastest configuration at that level (None: none reached it)."""
    peer: RunResult | None
    """The fastest peer configuration at that level (None: none reached it)."""

    @property
    def ratio(self) -> float:
        """Our speed-up over the peer's (``inf`` when no peer reached the level, 0 when we did not)."""
        if self.ours is None:
            return 0.0
        if self.peer is None:
            return math.inf
        return self.ours.speedup / self.peer.speedup

    @property
    def passed(self) -> bool:
        """Whether the ratio reaches :data:`TARGET_RATIO`."""
        return self.ratio >= TARGET_RATIO

    @property
    def efficiency_passed(self) -> bool:
        """Whether our configuration's measured speed-up reaches :data:`TARGET_EFFICIENCY` of its ideal one."""
        return self.ours is not None and self.ours.efficiency >= TARGET_EFFICIENCY

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready values."""

        def brief(r: RunResult | None) -> dict[str, Any] | None:
            if r is None:
                return None
            return {
                "name": r.name,
                "family": r.method.family,
                "speedup": r.speedup,
                "psnr_db": r.psnr if math.isfinite(r.psnr) else None,
                "computed_fraction": r.computed_fraction,
                "ideal_speedup": r.ideal_speedup,
                "efficiency": r.efficiency,
            }

        return {
            "mode": self.mode,
            "min_psnr_db": self.min_psnr,
            "ours": brief(self.ours),
            "peer": brief(self.peer),
            "ratio": self.ratio if math.isfinite(self.ratio) else None,
            "target_ratio": TARGET_RATIO,
            "passed": self.passed,
            "target_efficiency": TARGET_EFFICIENCY,
            "efficiency_passed": self.efficiency_passed,
        }


def _best(results: Iterable[RunResult], origin: str, level: float) -> RunResult | None:
    pool = [r for r in results if r.method.origin == origin and r.ok and r.psnr >= level]
    return max(pool, key=lambda r: r.speedup, default=None)


def verdicts(mode: str, evaluation: Evaluation, levels: Sequence[float] = QUALITY_LEVELS) -> list[Verdict]:
    """One :class:`Verdict` per quality level for one mode's evaluation."""
    return [
        Verdict(mode, level, _best(evaluation.results, "ours", level), _best(evaluation.results, "peer", level))
        for level in levels
    ]
