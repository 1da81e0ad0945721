"""The TeaCache trade-off of a calibration target: work (the computed fraction of transformer calls) and quality
(PSNR against the uncached outputs of the same seeds) of TeaCache configurations."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np
import torch

from ditcache.calibration.target import CalibrationTarget
from ditcache.core.metrics import psnr
from ditcache.core.runtime import refresh, remove_cache
from ditcache.core.validators import int_ge

__all__ = ["PSNR_CAP", "TradeoffPoint", "check_output", "evaluate_configs", "evaluate_teacache", "reference_output"]

PSNR_CAP = 120.0
"""PSNR (dB) reported for identical outputs, and the largest one reported."""


@attrs.frozen
class TradeoffPoint:
    """Quality and work of one TeaCache setting against the uncached outputs (:func:`evaluate_teacache`)."""

    label: str
    """Which coefficients (e.g. ``"borrowed flux.1-dev"``, ``"calibrated"``)."""
    threshold: float
    """``rel_l1_thresh``."""
    computed_fraction: float
    """Transformer calls that ran the blocks, over all calls (every branch and seed)."""
    psnr: float
    """Mean PSNR (dB) of the outputs against the uncached ones, per batch item; capped at 120 (identical)."""
    psnr_min: float
    """Worst item's PSNR."""

    def as_dict(self) -> dict[str, float]:
        """The JSON-ready form stored in a profile (without the label)."""
        return {
            "threshold": self.threshold,
            "computed_fraction": self.computed_fraction,
            "psnr": self.psnr,
            "psnr_min": self.psnr_min,
        }


def check_output(value: Any) -> torch.Tensor:
    """``value`` if it is the output tensor ``target.run`` must return for evaluation; TypeError otherwise."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"target.run: must return the output tensor for evaluation, got {type(value).__name__}")
    return value


def reference_output(target: CalibrationTarget, num_steps: int, seed: int) -> torch.Tensor:
    """One uncached generation's output (the transformer must have no cache applied)."""
    with torch.no_grad():
        ref = target.run(num_steps, seed)
    return check_output(ref)


def _item_psnr(out: torch.Tensor, ref: torch.Tensor, data_range: float | None) -> list[float]:
    if out.shape != ref.shape or out.ndim == 0:
        raise ValueError(f"target.run: outputs differ in shape between runs ({tuple(out.shape)} vs {tuple(ref.shape)})")
    return psnr(out, ref, data_range, per_item=True, cap=PSNR_CAP)


def evaluate_teacache(
    target: CalibrationTarget,
    configs: Sequence[tuple[str, Any]],
    *,
    num_steps: int,
    seeds: Sequence[int],
) -> list[TradeoffPoint]:
    """Computed-step fraction and PSNR against the uncached outputs for each ``(label, TeaCacheConfig)``.

    Every config runs the same seeds and steps as the uncached reference; ``target.run`` must return the output
    tensor. A fresh TeaCache is applied per generation and removed afterwards.
    """
    int_ge(1).check(num_steps, "num_steps")
    if not seeds:
        raise ValueError("seeds: expected at least one seed")
    references = [reference_output(target, num_steps, s) for s in seeds]
    return evaluate_configs(target, configs, num_steps, seeds, references)


def evaluate_configs(
    target: CalibrationTarget,
    configs: Sequence[tuple[str, Any]],
    num_steps: int,
    seeds: Sequence[int],
    references: Sequence[torch.Tensor],
) -> list[TradeoffPoint]:
    """:func:`evaluate_teacache` against already computed uncached outputs (one per seed)."""
    from ditcache.caches.teacache import TeaCache, TeaCacheConfig, apply_teacache_hook

    module = target.transformer
    points = []
    for label, config in configs:
        if not isinstance(config, TeaCacheConfig):
            raise TypeError(f"configs: expected (label, TeaCacheConfig) pairs, got {type(config).__name__}")
        if config.rel_l1_thresh is None:
            raise ValueError(f"configs: {label!r} sets rtol; a trade-off curve is swept over rel_l1_thresh")
        psnrs: list[float] = []
        computed = total = 0
        for s, ref in zip(seeds, references):
            cache: TeaCache = apply_teacache_hook(module, config, extractor=target.extractor)
            try:
                refresh(module, num_steps)
                with torch.no_grad():
                    out = target.run(num_steps, s)
                for gen in cache.stats():
                    computed += len(gen.computed_steps)
                    total += len(gen.decisions)
            finally:
                remove_cache(module, "teacache")
            psnrs.extend(_item_psnr(check_output(out), ref, target.data_range))
        points.append(
            TradeoffPoint(
                label=label,
                threshold=config.rel_l1_thresh,
                computed_fraction=computed / total if total else 1.0,
                psnr=float(np.mean(psnrs)),
                psnr_min=float(np.min(psnrs)),
            )
        )
    return points
