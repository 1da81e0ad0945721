"""The verdicts: per model and mode, our fastest configuration against the fastest peer at each quality level
(:func:`verdicts`); across models and modes, the one setting of ours that transfers best (:func:`transfer_verdicts`)
and how much each setting's quality moves from one model and mode to another (:func:`psnr_spreads`)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from ditcache.tools.evaluation import Evaluation, RunResult

__all__ = [
    "PSNR_CAP",
    "PSNR_TOLERANCE",
    "QUALITY_LEVELS",
    "TARGET_EFFICIENCY",
    "TARGET_RATIO",
    "TRANSFER_TARGET_RATIO",
    "PsnrSpread",
    "TransferCell",
    "TransferVerdict",
    "Verdict",
    "psnr_spreads",
    "transfer_verdicts",
    "verdicts",
]

QUALITY_LEVELS = (40.0, 35.0)
"""PSNR thresholds (dB, against the uncached samples) at which ours and the peers are compared."""
TARGET_RATIO = 1.15
"""The goal: our best speed-up at least this many times the best peer's, at each quality level and mode."""
TARGET_EFFICIENCY = 0.95
"""The goal: our best configuration's measured speed-up at least this fraction of its ideal one."""
TRANSFER_TARGET_RATIO = 1.3
"""The transfer goal: the one setting's speed-up at least this many times the best peer's, on every model and mode."""
PSNR_TOLERANCE = 3.0
"""The transfer goal: the setting's PSNR at most this many dB above the quality level, on every model and mode."""
PSNR_CAP = 99.0
"""PSNRs above this (identical samples: ``inf``) count as this much in spreads."""


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _brief(r: RunResult | None) -> dict[str, Any] | None:
    if r is None:
        return None
    return {
        "name": r.name,
        "family": r.method.family,
        "speedup": r.speedup,
        "psnr_db": _finite(r.psnr),
        "computed_fraction": r.computed_fraction,
        "ideal_speedup": _finite(r.ideal_speedup),
        "efficiency": r.efficiency,
    }


@attrs.frozen
class Verdict:
    """Our fastest configuration against the fastest peer at one quality level, in one mode of one model."""

    mode: str
    """``"no-cfg"`` or ``"cfg"``."""
    min_psnr: float
    """Quality level: configurations with at least this PSNR (dB) against the uncached samples compete."""
    ours: RunResult | None
    """Our fastest configuration at that level (None: none reached it)."""
    peer: RunResult | None
    """The fastest peer configuration at that level (None: none reached it)."""
    model: str = "digits"
    """The bundled model."""

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

        return {
            "model": self.model,
            "mode": self.mode,
            "min_psnr_db": self.min_psnr,
            "ours": _brief(self.ours),
            "peer": _brief(self.peer),
            "ratio": self.ratio if math.isfinite(self.ratio) else None,
            "target_ratio": TARGET_RATIO,
            "passed": self.passed,
            "target_efficiency": TARGET_EFFICIENCY,
            "efficiency_passed": self.efficiency_passed,
        }


def _best(results: Iterable[RunResult], origin: str, level: float) -> RunResult | None:
    pool = [r for r in results if r.method.origin == origin and r.ok and r.psnr >= level]
    return max(pool, key=lambda r: r.speedup, default=None)


def verdicts(
    mode: str, evaluation: Evaluation, levels: Sequence[float] = QUALITY_LEVELS, *, model: str = "digits"
) -> list[Verdict]:
    """One :class:`Verdict` per quality level for one mode's evaluation of ``model``."""
    return [
        Verdict(mode, level, _best(evaluation.results, "ours", level), _best(evaluation.results, "peer", level), model)
        for level in levels
    ]


# ---------------------------------------------------------------------------------------------- transfer
Cell = tuple[str, str]
"""``(model, mode)``: one evaluation of a bench run."""


@attrs.frozen
class TransferCell:
    """The transfer verdict's setting in one model and mode, against the fastest peer there."""

    model: str
    mode: str
    ours: RunResult
    """The setting's result in this model and mode."""
    peer: RunResult | None
    """The fastest peer configuration meeting the level here (None: none does)."""
    min_psnr: float
    """The quality level."""

    @property
    def ratio(self) -> float:
        """The setting's speed-up over the peer's (``inf`` when no peer meets the level here)."""
        return math.inf if self.peer is None else self.ours.speedup / self.peer.speedup

    @property
    def psnr_margin(self) -> float:
        """PSNR above the level (dB; >= 0, since the setting meets it)."""
        return self.ours.psnr - self.min_psnr

    @property
    def ratio_passed(self) -> bool:
        """Whether the ratio reaches :data:`TRANSFER_TARGET_RATIO`."""
        return self.ratio >= TRANSFER_TARGET_RATIO

    @property
    def psnr_passed(self) -> bool:
        """Whether the PSNR is at most :data:`PSNR_TOLERANCE` dB above the level."""
        return self.psnr_margin <= PSNR_TOLERANCE

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready values."""
        return {
            "model": self.model,
            "mode": self.mode,
            "speedup": self.ours.speedup,
            "psnr_db": _finite(self.ours.psnr),
            "psnr_margin_db": _finite(self.psnr_margin),
            "computed_fraction": self.ours.computed_fraction,
            "peer": _brief(self.peer),
            "ratio": _finite(self.ratio),
            "ratio_passed": self.ratio_passed,
            "psnr_passed": self.psnr_passed,
        }


@attrs.frozen
class TransferVerdict:
    """At one quality level: the one setting of ours that meets it on every model and mode with the best worst-case
    speed-up, and how it compares with the fastest peer of each model and mode."""

    min_psnr: float
    """Quality level (dB)."""
    name: str | None
    """The setting (None: no setting of ours meets the level on every model and mode)."""
    cells: tuple[TransferCell, ...]
    """The setting in each model and mode, in the order of the evaluations (empty when ``name`` is None)."""
    candidates: int
    """How many settings met the level on every model and mode."""

    @property
    def worst_speedup(self) -> float:
        """The setting's smallest speed-up over the models and modes (0 when there is no setting)."""
        return min((c.ours.speedup for c in self.cells), default=0.0)

    @property
    def worst_ratio(self) -> float:
        """The smallest ratio to the best peer (0 when there is no setting)."""
        return min((c.ratio for c in self.cells), default=0.0)

    @property
    def ratio_passed(self) -> bool:
        """Whether every ratio reaches :data:`TRANSFER_TARGET_RATIO`."""
        return bool(self.cells) and all(c.ratio_passed for c in self.cells)

    @property
    def psnr_passed(self) -> bool:
        """Whether every PSNR is within :data:`PSNR_TOLERANCE` dB above the level."""
        return bool(self.cells) and all(c.psnr_passed for c in self.cells)

    @property
    def passed(self) -> bool:
        """The transfer goal: both :attr:`ratio_passed` and :attr:`psnr_passed`."""
        return self.ratio_passed and self.psnr_passed

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready values."""
        return {
            "min_psnr_db": self.min_psnr,
            "setting": self.name,
            "family": self.cells[0].ours.method.family if self.cells else None,
            "params": self.cells[0].ours.method.params if self.cells else None,
            "candidates": self.candidates,
            "worst_speedup": self.worst_speedup,
            "worst_ratio": _finite(self.worst_ratio),
            "cells": [c.as_dict() for c in self.cells],
            "target_ratio": TRANSFER_TARGET_RATIO,
            "psnr_tolerance_db": PSNR_TOLERANCE,
            "ratio_passed": self.ratio_passed,
            "psnr_passed": self.psnr_passed,
            "passed": self.passed,
        }


def _ours_by_name(results: Iterable[RunResult]) -> dict[str, RunResult]:
    return {r.name: r for r in results if r.method.origin == "ours" and r.ok}


def transfer_verdicts(
    cells: Mapping[Cell, Sequence[RunResult]], levels: Sequence[float] = QUALITY_LEVELS
) -> list[TransferVerdict]:
    """One :class:`TransferVerdict` per quality level, from the results of every ``(model, mode)`` cell.

    A setting of ours (a configuration name: the same configuration runs in every cell) is a candidate at a level
    when it ran in every cell with a PSNR of at least the level in each. The pick is the candidate with the largest
    worst-case (smallest over the cells) speed-up; ties go to the larger mean speed-up, then the larger worst-case
    PSNR, then the first name in alphabetical order. In each cell it is compared with the fastest peer
    configuration meeting the level there (none: the ratio is ``inf``).
    """
    keys = list(cells)
    by_cell = {key: _ours_by_name(cells[key]) for key in keys}
    names = sorted(set.intersection(*(set(v) for v in by_cell.values()))) if keys else []
    out: list[TransferVerdict] = []
    for level in levels:
        pool = [n for n in names if all(by_cell[k][n].psnr >= level for k in keys)]

        def rank(n: str) -> tuple[float, float, float]:
            speeds = [by_cell[k][n].speedup for k in keys]
            return (min(speeds), sum(speeds) / len(speeds), min(by_cell[k][n].psnr for k in keys))

        best = max(pool, key=rank, default=None)  # max keeps the first of equals: names are sorted
        picked: tuple[TransferCell, ...] = ()
        if best is not None:
            picked = tuple(
                TransferCell(k[0], k[1], by_cell[k][best], _best(cells[k], "peer", level), level) for k in keys
            )
        out.append(TransferVerdict(level, best, picked, len(pool)))
    return out


@attrs.frozen
class PsnrSpread:
    """One setting of ours: its PSNR in every model and mode, and the spread."""

    name: str
    family: str
    psnr: dict[Cell, float]
    """PSNR (dB) per ``(model, mode)``."""
    speedup: dict[Cell, float]
    """Speed-up per ``(model, mode)``."""

    @property
    def spread(self) -> float:
        """Largest minus smallest PSNR over the cells, PSNRs capped at :data:`PSNR_CAP` (identical samples)."""
        capped = [min(v, PSNR_CAP) for v in self.psnr.values()]
        return max(capped) - min(capped) if capped else 0.0

    @property
    def worst_psnr(self) -> float:
        """The smallest PSNR over the cells."""
        return min(self.psnr.values(), default=math.nan)

    @property
    def worst_speedup(self) -> float:
        """The smallest speed-up over the cells."""
        return min(self.speedup.values(), default=0.0)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready values (cells as ``"model/mode"`` keys; a PSNR of null: identical samples)."""
        return {
            "name": self.name,
            "family": self.family,
            "psnr_db": {f"{m}/{d}": _finite(v) for (m, d), v in self.psnr.items()},
            "speedup": {f"{m}/{d}": v for (m, d), v in self.speedup.items()},
            "spread_db": self.spread,
            "worst_psnr_db": _finite(self.worst_psnr),
            "worst_speedup": self.worst_speedup,
        }


def psnr_spreads(cells: Mapping[Cell, Sequence[RunResult]]) -> list[PsnrSpread]:
    """For each setting of ours that ran in every cell, its PSNR in each and the spread (largest minus smallest),
    in the order of the first cell's results."""
    keys = list(cells)
    if not keys:
        return []
    by_cell = {key: _ours_by_name(cells[key]) for key in keys}
    common = set.intersection(*(set(v) for v in by_cell.values()))
    return [
        PsnrSpread(
            name,
            r.method.family,
            {k: by_cell[k][name].psnr for k in keys},
            {k: by_cell[k][name].speedup for k in keys},
        )
        for name, r in by_cell[keys[0]].items()
        if name in common
    ]
