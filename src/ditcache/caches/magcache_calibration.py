"""MagCache's calibration mode: measure a model's magnitude-ratio curves instead of skipping.

With ``MagCacheConfig(calibrate=True)`` the cache computes every step and, per branch, records the ratio
``mean_tokens(||r_t||_2 / ||r_{t-1}||_2)`` of consecutive block-stack residuals (padding ``1.0`` first), with
its standard deviation and the cosine distance (MagCache's calibration metrics,
:func:`ditcache.core.metrics.residual_metrics`).
:class:`MagCacheCalibration` keeps those records and turns the last run into a ``"magcache"`` profile.
"""

from __future__ import annotations

import datetime
from collections.abc import Hashable, Mapping
from typing import Any

import attrs
import torch

from ditcache.core.distributed import LOCAL, Reducer
from ditcache.core.metrics import residual_metrics
from ditcache.profiles import Profile

__all__ = ["CalibrationRecord", "MagCacheCalibration"]


@attrs.define
class CalibrationRecord:
    """What one branch measured in a calibration run."""

    branch: str
    role: str
    ratios: list[float] = attrs.field(factory=list)
    std: list[float] = attrs.field(factory=list)
    cosine_distance: list[float] = attrs.field(factory=list)


class MagCacheCalibration:
    """The per-branch records of MagCache's calibration runs."""

    def __init__(self) -> None:
        self.records: dict[Hashable, CalibrationRecord] = {}

    def start(self, branch: Hashable, role: str) -> None:
        """A branch starts a generation; a branch seen before (or a finished run) starts a new calibration run."""
        records = self.records
        if branch in records or any(len(r.ratios) > 1 for r in records.values()):
            records.clear()  # a new calibration run
        records[branch] = CalibrationRecord(branch=str(branch), role=role)

    def measure(
        self, branch: Hashable, residual: torch.Tensor, previous: torch.Tensor | None, reducer: Reducer = LOCAL
    ) -> tuple[float, float, float]:
        """Record the metrics of ``residual`` against the branch's previous one; returns ``(ratio, std, cos)``
        (the padding ``(1.0, 0.0, 0.0)`` when there is no previous residual of that shape). One host sync.
        ``reducer`` sums the per-token sums over the ranks sharing the sequence (``ctx.reducer``), so every rank
        records the full-sequence metrics."""
        if previous is None or previous.shape != residual.shape:
            ratio, std, cos = 1.0, 0.0, 0.0  # the padding entry: no ratio for the first step
        else:
            ratio, std, cos = residual_metrics(residual, previous, reducer)
        record = self.records.get(branch)
        if record is not None:
            record.ratios.append(ratio)
            record.std.append(std)
            record.cosine_distance.append(cos)
        return ratio, std, cos

    def profile(
        self, model: str | None, module_class: str | None, metadata: Mapping[str, Any] | None = None
    ) -> Profile:
        """The last run as a ``"magcache"`` profile named ``model`` (see :meth:`MagCache.calibration_profile`)."""
        records = list(self.records.values())
        if not records:
            raise ValueError(
                "calibrate: no calibration data; apply MagCache with MagCacheConfig(calibrate=True) and run one "
                "complete generation first"
            )
        by_role: dict[str, CalibrationRecord] = {}
        branches = []
        for rec in records:
            used = rec.role not in by_role
            if used:
                by_role[rec.role] = rec
            branches.append({"branch": rec.branch, "role": rec.role, "steps": len(rec.ratios), "used": used})
        if "cond" not in by_role:  # only uncond-named branches ran: their curve is the only one there is
            by_role = {"cond": by_role.pop("uncond"), **by_role}
        lengths = {role: len(rec.ratios) for role, rec in by_role.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(
                f"calibrate: the branches recorded different step counts {lengths}; run one complete generation "
                "(every branch, every step) before reading the profile"
            )
        num_steps = next(iter(lengths.values()))
        if num_steps < 2:
            raise ValueError(f"calibrate: {num_steps} step recorded; a profile needs a run of at least 2 steps")
        data = {
            "num_steps": num_steps,
            "curves": {role: list(rec.ratios) for role, rec in by_role.items()},
            "std": {role: list(rec.std) for role, rec in by_role.items()},
            "cosine_distance": {role: list(rec.cosine_distance) for role, rec in by_role.items()},
            "branches": branches,
        }
        from ditcache.core.version import VERSION as __version__

        meta: dict[str, Any] = {
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "module_class": module_class,
            "ditcache_version": __version__,
            "torch_version": torch.__version__,
            "metric": "mean_tokens(||r_t||_2 / ||r_{t-1}||_2) of the block-stack residual, float32",
        }
        meta.update(metadata or {})
        return Profile(kind="magcache", model=model, data=data, metadata=meta)
