"""``ditcache bench``: threshold sweeps of ditcache's caches and of the peers on the bundled model, in one run.

Every configuration runs through :func:`ditcache.tools.evaluation.evaluate` on the bundled digits model, with the same
labels, seed, step count and (per mode) guidance: once without classifier-free guidance (``no-cfg``) and once with
it (``cfg``, a separate ``"uncond"`` call per step). The sweeps cover:

* **ours**: TeaCache (FLUX.1-dev coefficients borrowed, and the raw relative L1 distance), MagCache with curves
  calibrated in-process on another seed, DBCache, each with and without TaylorSeer forecasting, and stacks of a
  step-level cache over DBCache;
* **peers**: diffusers' FirstBlockCache, MagCache (``apply_mag_cache`` with the same calibrated ratios: diffusers
  takes one curve, so both branches use the ``cond`` one) and TaylorSeer (attention outputs, whole blocks, and its
  "lite" mode that forecasts the output projection), and cache-dit's DBCache with and without its TaylorSeer
  calibrator (``enable_separate_cfg`` set to match the sampler).

For every mode and quality level (PSNR >= 40 dB and >= 35 dB against the uncached samples) the verdict compares
the fastest configuration of ours with the fastest peer (:class:`Verdict`); the goal is a ratio of at least
:data:`TARGET_RATIO` and, for our configuration, a measured speed-up of at least :data:`TARGET_EFFICIENCY` of the
ideal one (:attr:`ditcache.tools.evaluation.RunResult.ideal_speedup`).

The results go to ``--out``: ``bench.json`` (every measurement), ``pareto.png`` (speed-up against PSNR),
``hook_overhead.json`` and ``hook_overhead.png`` (:mod:`ditcache.tools.hook_overhead`), and the calibrated MagCache
profiles.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import math
import platform
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import attrs
import torch
from rich.console import Console
from rich.table import Table

from ditcache.bundled import DigitsDiT, load_digits_dit
from ditcache.caches.dbcache import DBCacheConfig
from ditcache.caches.magcache import MagCacheConfig
from ditcache.caches.teacache import TeaCacheConfig
from ditcache.tools.argtypes import guidance_scale, int_in
from ditcache.tools.evaluation import (
    BeforeRun,
    EvalSettings,
    Evaluation,
    Method,
    RunResult,
    calibrate_magcache,
    evaluate,
    evaluation_units,
    ours,
)

__all__ = [
    "MODES",
    "QUALITY_LEVELS",
    "TARGET_EFFICIENCY",
    "TARGET_RATIO",
    "BenchReport",
    "Verdict",
    "add_parser",
    "cache_dit_dbcache",
    "diffusers_first_block_cache",
    "diffusers_magcache",
    "diffusers_taylorseer",
    "our_methods",
    "pareto_front",
    "peer_methods",
    "plot_hook_overhead",
    "plot_pareto",
    "print_verdicts",
    "run_bench",
    "verdict_lines",
    "verdicts",
]

MODES = ("no-cfg", "cfg")
"""The two sampling modes: without classifier-free guidance, and with it (a separate uncond call per step)."""
QUALITY_LEVELS = (40.0, 35.0)
"""PSNR thresholds (dB, against the uncached samples) at which ours and the peers are compared."""
TARGET_RATIO = 1.15
"""The goal: our best speed-up at least this many times the best peer's, at each quality level and mode."""
TARGET_EFFICIENCY = 0.95
"""The goal: our best configuration's measured speed-up at least this fraction of its ideal one."""
DEFAULT_GUIDANCE = 3.0
"""Guidance scale of the ``cfg`` mode."""

_FLUX = "flux.1-dev"
_RAW = (0.0, 0.0, 0.0, 1.0, 0.0)  # TeaCache's polynomial reduced to the identity: the raw relative L1 distance


# ---------------------------------------------------------------------------------------------- peers
def _quiet_cache_dit() -> None:
    """cache-dit logs several INFO lines per enable_cache; keep the bench output readable."""
    for name in list(logging.root.manager.loggerDict):
        if name.lower().startswith("cache_dit"):
            logging.getLogger(name).setLevel(logging.WARNING)


def _diffusers_reset(transformer: torch.nn.Module) -> BeforeRun:
    def reset() -> None:
        # What a diffusers pipeline does at the end of every call (maybe_free_model_hooks).
        transformer._reset_stateful_cache()  # type: ignore[operator]

    return reset


def diffusers_first_block_cache(threshold: float) -> Method:
    """diffusers' FirstBlockCache (``apply_first_block_cache``) at ``threshold``."""

    def install(model: DigitsDiT, settings: EvalSettings) -> BeforeRun:
        from diffusers.hooks import FirstBlockCacheConfig, apply_first_block_cache

        apply_first_block_cache(model.transformer, FirstBlockCacheConfig(threshold=threshold))
        return _diffusers_reset(model.transformer)

    return Method(f"diffusers FBC t={threshold:g}", "peer", "diffusers-fbc", {"threshold": threshold}, install)


def diffusers_magcache(curve: Sequence[float], threshold: float, max_skip_steps: int, retention_ratio: float) -> Method:
    """diffusers' MagCache (``apply_mag_cache``) with the magnitude-ratio ``curve`` (one curve for every branch)."""
    ratios = [float(v) for v in curve]

    def install(model: DigitsDiT, settings: EvalSettings) -> BeforeRun:
        from diffusers.hooks import MagCacheConfig as DiffusersMagCacheConfig
        from diffusers.hooks import apply_mag_cache

        cfg = DiffusersMagCacheConfig(
            threshold=threshold,
            max_skip_steps=max_skip_steps,
            retention_ratio=retention_ratio,
            num_inference_steps=settings.num_steps,
            mag_ratios=ratios,
        )
        apply_mag_cache(model.transformer, cfg)
        return _diffusers_reset(model.transformer)

    params = {"threshold": threshold, "max_skip_steps": max_skip_steps, "retention_ratio": retention_ratio}
    name = f"diffusers MagCache t={threshold:g} K={max_skip_steps} r={retention_ratio:g}"
    return Method(name, "peer", "diffusers-magcache", params, install)


_TS_BLOCKS = [r"transformer_blocks\.\d+", r"single_transformer_blocks\.\d+"]


def diffusers_taylorseer(
    cache_interval: int,
    *,
    max_order: int = 1,
    before: int = 3,
    last_step: bool = False,
    mode: str = "attention",
) -> Method:
    """diffusers' TaylorSeer (``apply_taylorseer_cache``), float32 factors.

    ``mode``: ``"attention"`` (the default hooks: attention outputs forecast, the rest of each block runs),
    ``"blocks"`` (whole block outputs forecast) or ``"lite"`` (blocks skipped, the output projection forecast).
    ``before`` is ``disable_cache_before_step``; ``last_step`` sets ``disable_cache_after_step`` to the last step,
    so that it is computed.
    """
    if mode not in ("attention", "blocks", "lite"):
        raise ValueError(f"mode: expected 'attention', 'blocks' or 'lite', got {mode!r}")

    def install(model: DigitsDiT, settings: EvalSettings) -> BeforeRun:
        from diffusers.hooks import TaylorSeerCacheConfig, apply_taylorseer_cache

        cfg = TaylorSeerCacheConfig(
            cache_interval=cache_interval,
            disable_cache_before_step=before,
            disable_cache_after_step=settings.num_steps - 1 if last_step else None,
            max_order=max_order,
            taylor_factors_dtype=torch.float32,
            cache_identifiers=_TS_BLOCKS if mode == "blocks" else None,
            use_lite_mode=mode == "lite",
        )
        apply_taylorseer_cache(model.transformer, cfg)
        return _diffusers_reset(model.transformer)

    params = {
        "cache_interval": cache_interval,
        "max_order": max_order,
        "disable_cache_before_step": before,
        "last_step_computed": last_step,
        "mode": mode,
    }
    name = f"diffusers TaylorSeer {mode} N={cache_interval} O={max_order} B={before}" + (" +last" if last_step else "")
    return Method(name, "peer", f"diffusers-taylorseer-{mode}", params, install)


def cache_dit_dbcache(
    threshold: float,
    *,
    fn: int = 1,
    bn: int = 0,
    warmup: int = 4,
    max_continuous: int | None = None,
    taylorseer_order: int = 0,
) -> Method:
    """cache-dit's DBCache (``cache_dit.enable_cache`` on the transformer; ``refresh_context`` before every run),
    with its TaylorSeer calibrator when ``taylorseer_order > 0``."""

    def install(model: DigitsDiT, settings: EvalSettings) -> BeforeRun:
        import cache_dit
        from cache_dit import DBCacheConfig as CacheDitDBCacheConfig
        from cache_dit import TaylorSeerCalibratorConfig

        _quiet_cache_dit()
        cfg = CacheDitDBCacheConfig(
            Fn_compute_blocks=fn,
            Bn_compute_blocks=bn,
            max_warmup_steps=warmup,
            residual_diff_threshold=threshold,
            max_continuous_cached_steps=-1 if max_continuous is None else max_continuous,
            # The sampler calls cond and uncond separately: without this every call is one step and nothing caches.
            enable_separate_cfg=settings.guided,
            num_inference_steps=settings.num_steps,
        )
        calibrator = TaylorSeerCalibratorConfig(taylorseer_order=taylorseer_order) if taylorseer_order else None
        transformer = model.transformer
        cache_dit.enable_cache(transformer, cache_config=cfg, calibrator_config=calibrator)
        _quiet_cache_dit()

        def refresh() -> None:
            cache_dit.refresh_context(transformer, num_inference_steps=settings.num_steps)

        return refresh

    params = {
        "Fn_compute_blocks": fn,
        "Bn_compute_blocks": bn,
        "max_warmup_steps": warmup,
        "residual_diff_threshold": threshold,
        "max_continuous_cached_steps": max_continuous,
        "taylorseer_order": taylorseer_order,
    }
    name = f"cache-dit DBCache F{fn}B{bn} W{warmup} R={threshold:g}"
    if max_continuous is not None:
        name += f" MC={max_continuous}"
    if taylorseer_order:
        name += f" +TaylorSeer O{taylorseer_order}"
    return Method(name, "peer", "cache-dit-dbcache" + ("-taylorseer" if taylorseer_order else ""), params, install)


# ---------------------------------------------------------------------------------------------- sweeps
def _tea_cfg(
    threshold: float, *, raw: bool = False, ts: int = 0, mc: int | None = None, out: bool = False
) -> TeaCacheConfig:
    return TeaCacheConfig(
        rel_l1_thresh=threshold,
        model=None if raw else _FLUX,
        coefficients=_RAW if raw else None,
        taylorseer=ts > 0,
        taylorseer_order=max(ts, 1),
        taylorseer_target="output" if out else "residual",
        max_consecutive_skips=mc,
    )


def _tea_name(cfg: TeaCacheConfig) -> str:
    name = f"TeaCache{' raw' if cfg.model is None else ''} t={cfg.rel_l1_thresh:g}"
    if cfg.taylorseer:
        name += f" +TaylorSeer O{cfg.taylorseer_order}"
        name += " output" if cfg.taylorseer_target == "output" else ""
    name += f" max-skips={cfg.max_consecutive_skips}" if cfg.max_consecutive_skips is not None else ""
    return name


def _tea(threshold: float, *, raw: bool = False, ts: int = 0, mc: int | None = None, out: bool = False) -> Method:
    """TeaCache (FLUX.1-dev coefficients, or ``raw``), TaylorSeer of order ``ts`` (0: none) forecasting the block
    residual or, with ``out``, the model output; at most ``mc`` consecutive skips."""
    cfg = _tea_cfg(threshold, raw=raw, ts=ts, mc=mc, out=out)
    family = "teacache-raw" if raw else "teacache"
    family += ("+taylorseer" + ("-output" if out else "")) if ts else ""
    return ours(_tea_name(cfg), cfg, family=family)


def _mag(profile: str, threshold: float, k: int, r: float, *, ts: int = 0) -> Method:
    cfg = MagCacheConfig(
        threshold=threshold,
        max_skip_steps=k,
        retention_ratio=r,
        profile=profile,
        taylorseer=ts > 0,
        taylorseer_order=max(ts, 1),
    )
    name = f"MagCache t={threshold:g} K={k} r={r:g}" + (f" +TaylorSeer O{ts}" if ts else "")
    return ours(name, cfg, family="magcache" + ("+taylorseer" if ts else ""))


def _db(threshold: float, *, ts: int = 0, mc: int | None = None, warmup: int = 4) -> DBCacheConfig:
    return DBCacheConfig(
        fn_compute_blocks=1,
        bn_compute_blocks=0,
        max_warmup_steps=warmup,
        residual_diff_threshold=threshold,
        max_continuous_cached_steps=mc,
        taylorseer=ts > 0,
        taylorseer_order=max(ts, 1),
    )


def _db_name(cfg: DBCacheConfig) -> str:
    name = f"DBCache F{cfg.fn_compute_blocks}B{cfg.bn_compute_blocks} W{cfg.max_warmup_steps} "
    name += f"R={cfg.residual_diff_threshold:g}"
    if cfg.max_continuous_cached_steps is not None:
        name += f" MC={cfg.max_continuous_cached_steps}"
    if cfg.taylorseer:
        name += f" +TaylorSeer O{cfg.taylorseer_order}"
    return name


def _dbm(threshold: float, *, ts: int = 0, mc: int | None = None) -> Method:
    cfg = _db(threshold, ts=ts, mc=mc)
    return ours(_db_name(cfg), cfg, family="dbcache" + ("+taylorseer" if ts else ""))


def our_methods(magcache_profile: str, *, quick: bool = False) -> list[Method]:
    """ditcache's sweep; ``magcache_profile`` is the calibrated MagCache profile (path) of the mode."""
    p = magcache_profile
    if quick:
        return [
            _tea(0.6),
            _tea(1.0, ts=1, mc=4),
            _tea(1.0, ts=1, mc=4, out=True),
            _mag(p, 0.2, 3, 0.2),
            _mag(p, 0.3, 4, 0.1, ts=1),
            _dbm(0.2, mc=None),
            _dbm(0.3, ts=1, mc=3),
            ours(
                "MagCache t=0.2 K=3 r=0.2 over " + _db_name(_db(0.2, warmup=1)),
                MagCacheConfig(threshold=0.2, profile=p),
                _db(0.2, warmup=1),
            ),
        ]
    out: list[Method] = []
    out += [_tea(t) for t in (0.2, 0.4, 0.6, 0.8)]
    # TaylorSeer forecasting the block residual (the head runs on skipped steps)
    out += [_tea(t, ts=1, mc=mc) for t in (1.0, 2.0, 3.0) for mc in (6, 8, 10, 13)]
    out += [_tea(1.0, ts=2, mc=8)]
    out += [_tea(t, raw=True, ts=1, mc=mc) for t in (0.2, 0.3) for mc in (6, 8)]
    # TaylorSeer forecasting the model output (skipped steps skip the head too): the 35-40 dB frontier
    out += [_tea(t, ts=1, mc=mc, out=True) for t in (1.0, 1.5, 2.0, 3.0) for mc in (8, 10, 12, 14, None)]
    out += [_tea(3.0, ts=1, mc=mc, out=True) for mc in (9, 11, 13)]
    out += [_tea(t, ts=2, mc=mc, out=True) for t, mc in ((1.0, 10), (2.0, 10), (3.0, 12))]
    out += [_tea(t, raw=True, ts=1, mc=mc, out=True) for t in (0.2, 0.3, 0.5) for mc in (8, 10, 12)]
    out += [_mag(p, t, 3, 0.2) for t in (0.06, 0.1, 0.2, 0.4)]
    out += [_mag(p, t, 6, 0.1) for t in (0.1, 0.3)]
    out += [_mag(p, t, k, r, ts=1) for t in (0.1, 0.3, 1.0) for k in (4, 6) for r in (0.04, 0.1)]
    out += [_dbm(t) for t in (0.05, 0.1, 0.2, 0.3)]
    out += [_dbm(t, ts=1, mc=3) for t in (0.2, 0.3, 0.5)]
    stacks: list[tuple[MagCacheConfig | TeaCacheConfig, DBCacheConfig]] = [
        (MagCacheConfig(threshold=0.2, profile=p), _db(0.1)),
        (MagCacheConfig(threshold=0.1, max_skip_steps=4, retention_ratio=0.1, profile=p, taylorseer=True), _db(0.1)),
        (_tea_cfg(1.0, ts=1, mc=8), _db(0.1)),
        (_tea_cfg(2.0, ts=1, mc=10), _db(0.1, ts=1)),
        (_tea_cfg(2.0, ts=1, mc=10, out=True), _db(0.1)),
    ]
    for outer, inner in stacks:
        if isinstance(outer, MagCacheConfig):
            head = f"MagCache t={outer.threshold:g} K={outer.max_skip_steps} r={outer.retention_ratio:g}"
            head += " +TaylorSeer O1" if outer.taylorseer else ""
        else:
            head = _tea_name(outer)
        out.append(ours(f"{head} over {_db_name(inner)}", outer, inner))
    return out


def peer_methods(curve: Sequence[float], *, quick: bool = False) -> list[Method]:
    """The peers' sweep; ``curve`` is the calibrated ``cond`` magnitude-ratio curve for diffusers' MagCache."""
    if quick:
        return [
            diffusers_first_block_cache(0.2),
            diffusers_magcache(curve, 0.2, 3, 0.2),
            diffusers_taylorseer(2, before=2),
            diffusers_taylorseer(3, before=1, mode="lite", last_step=True),
            cache_dit_dbcache(0.2, warmup=1),
            cache_dit_dbcache(0.3, warmup=1, max_continuous=3, taylorseer_order=1),
        ]
    out: list[Method] = []
    out += [diffusers_first_block_cache(t) for t in (0.05, 0.1, 0.15, 0.2, 0.3, 0.4)]
    # the schedules of every MagCache configuration of ours (diffusers' MagCache has no forecasting)
    out += [diffusers_magcache(curve, t, 3, 0.2) for t in (0.06, 0.1, 0.2, 0.4)]
    out += [diffusers_magcache(curve, t, k, r) for t in (0.1, 0.3, 1.0) for k in (4, 6) for r in (0.04, 0.1)]
    out += [diffusers_taylorseer(n) for n in (3, 5, 8)]
    out += [
        diffusers_taylorseer(n, before=b, last_step=last, mode="lite")
        for n in (4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14)
        for b in (1, 2, 3)
        for last in (False, True)
    ]
    out += [diffusers_taylorseer(n, max_order=2, before=2, mode="lite") for n in (4, 6)]
    out += [diffusers_taylorseer(n, before=2, last_step=True, mode="blocks") for n in (4, 6, 8)]
    out += [cache_dit_dbcache(t) for t in (0.05, 0.1, 0.2, 0.3)]
    out += [cache_dit_dbcache(t, max_continuous=3, taylorseer_order=1) for t in (0.2, 0.3, 0.5)]
    out += [cache_dit_dbcache(0.3, max_continuous=3, taylorseer_order=2)]
    return out


# ---------------------------------------------------------------------------------------------- verdicts
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


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points ``(speedup, psnr)`` no other point beats on both, sorted by speed-up."""
    front: list[tuple[float, float]] = []
    for x, y in sorted(points, key=lambda p: (-p[0], -p[1])):
        if not front or y > front[-1][1]:
            front.append((x, y))
    return sorted(front)


# ---------------------------------------------------------------------------------------------- report
@attrs.frozen
class BenchReport:
    """Everything one ``ditcache bench`` run measured."""

    evaluations: dict[str, Evaluation]
    """Per mode (``"no-cfg"``, ``"cfg"``)."""
    verdicts: tuple[Verdict, ...]
    """Per mode and quality level."""
    hook_overhead: dict[str, Any] | None
    """:func:`ditcache.tools.hook_overhead.run`'s result, or None when skipped."""
    settings: dict[str, Any]
    """The options of the run (quick, steps, repeats, timer, threads, ...)."""
    seconds: float
    """Wall time of the whole bench."""
    files: dict[str, str] = attrs.field(factory=dict)
    """What was written, by role (file names inside the output directory)."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready values."""
        import diffusers

        try:
            import cache_dit

            cache_dit_version = getattr(cache_dit, "__version__", None)
        except ImportError:  # pragma: no cover - a dependency
            cache_dit_version = None
        from ditcache.core.version import VERSION as __version__

        return {
            "benchmark": "ditcache bench",
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "settings": self.settings,
            "seconds": self.seconds,
            "versions": {
                "ditcache": __version__,
                "python": platform.python_version(),
                "torch": torch.__version__,
                "diffusers": diffusers.__version__,
                "cache_dit": cache_dit_version,
            },
            "machine": {"platform": platform.platform(), "processor": platform.processor()},
            "verdicts": [v.as_dict() for v in self.verdicts],
            "modes": {mode: ev.as_dict() for mode, ev in self.evaluations.items()},
            "hook_overhead": self.hook_overhead,
            "files": self.files,
        }


# ---------------------------------------------------------------------------------------------- plots
_FAMILY_STYLE: dict[str, tuple[str, str]] = {
    # family: (colour, marker); ours filled, peers hollow
    "teacache": ("#1f77b4", "o"),
    "teacache+taylorseer": ("#1f77b4", "D"),
    "teacache-raw+taylorseer": ("#17becf", "D"),
    "teacache+taylorseer-output": ("#1f77b4", "*"),
    "teacache-raw+taylorseer-output": ("#17becf", "*"),
    "magcache": ("#2ca02c", "o"),
    "magcache+taylorseer": ("#2ca02c", "D"),
    "dbcache": ("#9467bd", "o"),
    "dbcache+taylorseer": ("#9467bd", "D"),
    "stack": ("#8c564b", "P"),
    "diffusers-fbc": ("#ff7f0e", "s"),
    "diffusers-magcache": ("#d62728", "s"),
    "diffusers-taylorseer-attention": ("#bcbd22", "^"),
    "diffusers-taylorseer-blocks": ("#7f7f7f", "^"),
    "diffusers-taylorseer-lite": ("#e377c2", "^"),
    "cache-dit-dbcache": ("#8c564b", "v"),
    "cache-dit-dbcache-taylorseer": ("#000000", "v"),
}


def _style_key(family: str) -> str:
    return family if family in _FAMILY_STYLE else "stack"


def plot_pareto(report: BenchReport, path: Path, psnr_range: tuple[float, float] = (20.0, 70.0)) -> None:
    """Speed-up against PSNR, one panel per mode: ours filled, peers hollow, one colour and marker per family;
    the Pareto front of each side, the quality levels of the verdicts, and the verdicts' picks as stars. PSNRs
    outside ``psnr_range`` are drawn at its edges (identical samples at the top)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lo, hi = psnr_range
    modes = list(report.evaluations)
    fig, axes = plt.subplots(1, len(modes), figsize=(7.5 * len(modes), 6.4), squeeze=False)
    handles: dict[str, Any] = {}
    for ax, mode in zip(axes[0], modes):
        ev = report.evaluations[mode]
        for origin in ("peer", "ours"):
            pts: list[tuple[float, float]] = []
            for r in ev.results:
                if r.method.origin != origin or not r.ok:
                    continue
                y = min(max(r.psnr, lo), hi)
                pts.append((r.speedup, y))
                key = _style_key(r.method.family)
                color, marker = _FAMILY_STYLE[key]
                handles[key] = ax.scatter(
                    r.speedup,
                    y,
                    s=34,
                    marker=marker,
                    facecolors=color if origin == "ours" else "none",
                    edgecolors=color,
                    linewidths=1.1,
                    alpha=0.8,
                    label=f"{key} ({origin})",
                )
            front = pareto_front(pts)
            if front:
                xs, ys = zip(*front)
                line = ax.step(
                    xs,
                    ys,
                    where="pre",
                    color="black" if origin == "ours" else "grey",
                    linestyle="-" if origin == "ours" else "--",
                    linewidth=1.3,
                    label=f"Pareto front ({origin})",
                )
                handles[f"front {origin}"] = line[0]
        for v in report.verdicts:
            if v.mode != mode:
                continue
            for best, color in ((v.ours, "black"), (v.peer, "grey")):
                if best is not None:
                    ax.scatter(best.speedup, min(max(best.psnr, lo), hi), marker="*", s=200, color=color, zorder=5)
        ax.set_ylim(lo - 1, hi + 2)
        for level in QUALITY_LEVELS:
            ax.axhline(level, color="#999999", linewidth=0.8, linestyle=":")
            ax.annotate(
                f"{level:g} dB",
                (1.0, level),
                xycoords=("axes fraction", "data"),
                ha="right",
                va="bottom",
                fontsize=8,
                color="#666666",
            )
        settings = ev.settings
        title = "no classifier-free guidance" if mode == "no-cfg" else f"CFG scale {settings.guidance_scale:g}"
        ax.set_title(f"{title}: {settings.num_steps} steps, {len(settings.labels)} images, {settings.timer} time")
        ax.set_xlabel("measured speed-up over the uncached run (x)")
        ax.set_ylabel(f"PSNR vs uncached samples (dB; clipped to [{lo:g}, {hi:g}])")
        ax.grid(True, alpha=0.3)
    order = [k for k in _FAMILY_STYLE if k in handles] + [k for k in ("front ours", "front peer") if k in handles]
    fig.legend(
        [handles[k] for k in order],
        [handles[k].get_label() for k in order],
        loc="lower center",
        ncol=4,
        fontsize=8,
        frameon=False,
    )
    fig.suptitle(
        "ditcache bench on the bundled digits DiT: ditcache filled, peers hollow; stars: the verdicts' picks "
        "(black: ours, grey: peers)",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_hook_overhead(result: dict[str, Any], path: Path) -> None:
    """Per-hook cost of each hook family (median and min of the slope over 0-4 stacked hooks), and the per-call
    time of every variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_hook = result["per_hook_slope"]
    fams = list(per_hook)
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    med = [per_hook[f]["slope_median_us"] for f in fams]
    lo = [per_hook[f]["slope_min_us"] for f in fams]
    xs = range(len(fams))
    left.bar([x - 0.2 for x in xs], med, width=0.4, label="median over rounds", color="#1f77b4")
    left.bar([x + 0.2 for x in xs], lo, width=0.4, label="min over rounds", color="#aec7e8")
    left.set_xticks(list(xs), [f.replace("_", "\n", 1) for f in fams], fontsize=8)
    left.set_ylabel("µs per hook per call (slope over 0, 1, 2, 4 hooks)")
    left.set_title("cost of one more no-op hook")
    left.legend(fontsize=8)
    left.grid(True, axis="y", alpha=0.3)
    variants = result["variants"]
    names = list(variants)
    right.barh(range(len(names)), [variants[n]["median_us"] for n in names], color="#ff7f0e")
    right.set_yticks(range(len(names)), names, fontsize=7)
    right.invert_yaxis()
    right.set_xlabel("µs per call (median over rounds)")
    right.set_title(result.get("module", "nn.Linear(8, 8)"), fontsize=9)
    right.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------- the run
def _prefixed(prefix: str, tick: Callable[[str], None]) -> Callable[[str], None]:
    return lambda desc: tick(prefix + desc)


def _mode_settings(mode: str, *, quick: bool, steps: int, guidance: float, repeats: int, timer: str) -> EvalSettings:
    return EvalSettings(
        labels=(0,) if quick else tuple(range(10)),
        seed=0,
        num_steps=steps,
        guidance_scale=guidance if mode == "cfg" else None,
        repeats=repeats,
        timer=timer,
    )


def run_bench(
    out: Path,
    *,
    quick: bool = False,
    modes: Sequence[str] = MODES,
    steps: int | None = None,
    guidance: float = DEFAULT_GUIDANCE,
    repeats: int | None = None,
    timer: str = "cpu",
    peers: bool = True,
    hook_overhead: bool = True,
    hook_rounds: int | None = None,
    hook_calls: int | None = None,
    model: DigitsDiT | None = None,
    progress: Callable[[str, int], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> BenchReport:
    """Run the sweeps of every mode, the verdicts and the hook-overhead microbenchmark; write the files to ``out``.

    ``quick`` shrinks everything (1 label, 6 steps, a few configurations per family, 1 timed repetition, a short
    hook benchmark) so that a test can run it in seconds; explicit ``steps`` / ``repeats`` / ``hook_*`` win.
    ``progress(description, total)`` is called once per unit of work with the total number of units.
    """
    for mode in modes:
        if mode not in MODES:
            raise ValueError(f"modes: allowed values are {list(MODES)}, got {mode!r}")
    if not modes:
        raise ValueError(f"modes: give at least one of {list(MODES)}")
    steps = steps if steps is not None else (6 if quick else 50)
    repeats = repeats if repeats is not None else (1 if quick else 3)
    hook_rounds = hook_rounds if hook_rounds is not None else (2 if quick else 15)
    hook_calls = hook_calls if hook_calls is not None else (200 if quick else 10_000)
    say = log if log is not None else (lambda _: None)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    base = model if model is not None else load_digits_dit()

    plans: list[tuple[str, EvalSettings]] = [
        (m, _mode_settings(m, quick=quick, steps=steps, guidance=guidance, repeats=repeats, timer=timer)) for m in modes
    ]
    # Sizes are known once the sweeps are built; build them first (after calibration, which needs one run each).
    files: dict[str, str] = {}
    sweeps: list[tuple[str, EvalSettings, list[Method]]] = []
    for mode, settings in plans:
        name = f"magcache_profile_{mode}.json"
        profile = calibrate_magcache(base, settings, path=out / name)
        files[f"magcache_profile_{mode}"] = name
        methods = our_methods(str(out / name), quick=quick)
        if peers:
            methods += peer_methods(profile.data["curves"]["cond"], quick=quick)
        sweeps.append((mode, settings, methods))
    total = sum(evaluation_units(len(ms), s) for _, s, ms in sweeps) + (1 if hook_overhead else 0)
    done = [0]

    def tick(desc: str) -> None:
        done[0] += 1
        if progress is not None:
            progress(desc, total)

    evaluations: dict[str, Evaluation] = {}
    for mode, settings, methods in sweeps:
        say(f"{mode}: {len(methods)} configurations, {settings.num_steps} steps, {len(settings.labels)} images")
        evaluations[mode] = evaluate(methods, settings, model=base, progress=_prefixed(f"{mode}: ", tick))
    all_verdicts = tuple(v for mode in evaluations for v in verdicts(mode, evaluations[mode]))

    hook_result: dict[str, Any] | None = None
    if hook_overhead:
        from ditcache.tools.hook_overhead import run as run_hook_overhead

        threads = torch.get_num_threads()
        try:
            hook_result = run_hook_overhead(hook_rounds, hook_calls, 0)
        finally:
            torch.set_num_threads(threads)
        tick("hook overhead")

    report_settings = {
        "quick": quick,
        "modes": list(modes),
        "steps": steps,
        "guidance_scale": guidance,
        "repeats": repeats,
        "timer": timer,
        "torch_threads": torch.get_num_threads(),
        "peers": peers,
        "hook_rounds": hook_rounds if hook_overhead else None,
        "hook_calls": hook_calls if hook_overhead else None,
        "quality_levels_db": list(QUALITY_LEVELS),
        "target_ratio": TARGET_RATIO,
        "target_efficiency": TARGET_EFFICIENCY,
    }
    files["results"] = "bench.json"
    files["pareto_plot"] = "pareto.png"
    if hook_result is not None:
        files["hook_overhead"] = "hook_overhead.json"
        files["hook_overhead_plot"] = "hook_overhead.png"
    report = BenchReport(
        evaluations=evaluations,
        verdicts=all_verdicts,
        hook_overhead=hook_result,
        settings=report_settings,
        seconds=time.perf_counter() - start,
        files=files,
    )
    plot_pareto(report, out / "pareto.png")
    if hook_result is not None:
        (out / "hook_overhead.json").write_text(json.dumps(hook_result, indent=2) + "\n")
        plot_hook_overhead(hook_result, out / "hook_overhead.png")
    (out / "bench.json").write_text(json.dumps(report.as_dict(), indent=2, allow_nan=False) + "\n")
    return report


# ---------------------------------------------------------------------------------------------- command line
def _fmt_psnr(value: float) -> str:
    return "identical" if math.isinf(value) else f"{value:.1f}"


def verdict_lines(report: BenchReport) -> list[str]:
    """The verdicts as rich-markup lines: best ours against best peer per mode and quality level."""
    lines: list[str] = []
    for v in report.verdicts:
        head = f"[bold]{v.mode}, PSNR >= {v.min_psnr:g} dB[/bold]"
        if v.ours is None:
            lines.append(f"{head}: no configuration of ours reaches this quality [red](goal missed)[/red]")
            continue
        lines.append(f"{head}:")
        lines.append(f"  ours {v.ours.speedup:5.2f}x  {v.ours.name} ({_fmt_psnr(v.ours.psnr)} dB)")
        if v.peer is None:
            lines.append("  peer   none reaches this quality")
        else:
            lines.append(f"  peer {v.peer.speedup:5.2f}x  {v.peer.name} ({_fmt_psnr(v.peer.psnr)} dB)")
        ratio = v.ratio
        ratio_s = "inf" if math.isinf(ratio) else f"{ratio:.2f}x"
        met = "[green]met[/green]" if v.passed else "[red]missed[/red]"
        eff = "[green]met[/green]" if v.efficiency_passed else "[red]missed[/red]"
        lines.append(
            f"  ratio {ratio_s}: goal >= {TARGET_RATIO:.2f}x {met}; achieved/ideal {v.ours.efficiency:.1%} of "
            f"{v.ours.ideal_speedup:.2f}x: goal >= {TARGET_EFFICIENCY:.0%} {eff}"
        )
    return lines


def print_verdicts(report: BenchReport, console: Console) -> None:
    """Print :func:`verdict_lines` under a title."""
    console.print("[bold]Verdicts[/bold]: fastest configuration of each side at equal quality, measured in this run")
    for line in verdict_lines(report):
        console.print(line, highlight=False)


def _print_mode_table(mode: str, ev: Evaluation, console: Console, limit: int) -> None:
    rows = sorted((r for r in ev.results if r.ok), key=lambda r: -r.speedup)
    table = Table(
        title=f"{mode}: fastest configurations with PSNR >= {min(QUALITY_LEVELS):g} dB "
        f"(uncached {ev.baseline.seconds * 1e3:.0f} ms, {ev.settings.timer} time)",
        title_justify="left",
    )
    for col in ("configuration", "origin", "speed-up", "ideal", "blocks run", "PSNR dB", "max abs err"):
        table.add_column(col, overflow="fold")
    shown = 0
    for r in rows:
        if r.psnr < min(QUALITY_LEVELS):
            continue
        table.add_row(
            r.name,
            r.method.origin,
            f"{r.speedup:.2f}x",
            f"{r.ideal_speedup:.2f}x",
            f"{r.computed_fraction:.0%}",
            _fmt_psnr(r.psnr),
            f"{r.max_abs_error:.3f}",
        )
        shown += 1
        if shown >= limit:
            break
    console.print(table)
    failed = [r for r in ev.results if not r.ok]
    for r in failed:
        console.print(f"[yellow]{mode}: {r.name} did not run: {r.error}[/yellow]", highlight=False)


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Register the ``bench`` sub-command on an argparse sub-parsers object."""
    from ditcache.tools.evaluation import TIMERS

    bench: argparse.ArgumentParser = commands.add_parser(
        "bench",
        help="sweep ditcache's caches and the peers (diffusers, cache-dit) on the bundled model; write JSON and plots",
        description=(
            "Threshold sweeps of TeaCache, MagCache, DBCache, their stacks and TaylorSeer options, and of "
            "diffusers' FirstBlockCache, MagCache and TaylorSeer and cache-dit's DBCache, on the bundled digits "
            "model with the same labels, seed and steps, with and without classifier-free guidance. Writes "
            "bench.json, pareto.png, hook_overhead.json/png and the calibrated MagCache profiles to --out, and "
            "prints the verdicts (best ours vs best peer at PSNR >= 40 and >= 35 dB)."
        ),
    )
    bench.add_argument("--out", type=Path, required=True, help="output directory (created if missing)")
    bench.add_argument(
        "--quick",
        action="store_true",
        help="a few configurations, 1 image, 6 steps, 1 repetition, short hook benchmark: seconds, for tests",
    )
    bench.add_argument("--mode", choices=("both", *MODES), default="both", help="sampling modes (default: both)")
    bench.add_argument("--steps", type=int_in(2, 1000), default=None, help="denoising steps (default: 50; quick: 6)")
    bench.add_argument(
        "--guidance", type=guidance_scale, default=DEFAULT_GUIDANCE, help="guidance scale of the cfg mode (default: 3)"
    )
    bench.add_argument(
        "--repeats", type=int_in(1, 50), default=None, help="timed runs per configuration (default: 3; quick: 1)"
    )
    bench.add_argument(
        "--timer",
        choices=TIMERS,
        default="cpu",
        help="cpu: process CPU time (steadier on a shared machine; default); wall: wall-clock time",
    )
    bench.add_argument(
        "--threads",
        type=int_in(1, 256),
        default=1,
        help="torch CPU threads while measuring (default: 1, which keeps the CPU timer meaningful)",
    )
    bench.add_argument("--no-peers", action="store_true", help="sweep ditcache's caches only")
    bench.add_argument("--no-hook-overhead", action="store_true", help="skip the hook-overhead microbenchmark")
    bench.set_defaults(handler=_cmd_bench)
    return bench


def _cmd_bench(args: argparse.Namespace, console: Console) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ditcache.tools.demo import check_output_dir

    out: Path = args.out
    problem = check_output_dir(out)
    if problem is not None:
        console.print(f"[red]ditcache bench: error: argument --out: {problem}[/red]", highlight=False)
        return 2
    modes = MODES if args.mode == "both" else (args.mode,)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    console.print(
        f"ditcache bench: {'quick ' if args.quick else ''}sweep on the bundled digits model, modes {', '.join(modes)}, "
        f"{args.threads} torch thread(s), {args.timer} timer; results to {out}",
        highlight=False,
    )
    try:
        with Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as bar:
            task = bar.add_task("calibrating MagCache", total=None)

            def progress(desc: str, total: int) -> None:
                bar.update(task, total=total, advance=1, description=desc[:70])

            report = run_bench(
                out,
                quick=args.quick,
                modes=modes,
                steps=args.steps,
                guidance=args.guidance,
                repeats=args.repeats,
                timer=args.timer,
                peers=not args.no_peers,
                hook_overhead=not args.no_hook_overhead,
                progress=progress,
                log=lambda line: bar.console.print(line, highlight=False),
            )
    finally:
        torch.set_num_threads(threads)
    for mode, ev in report.evaluations.items():
        _print_mode_table(mode, ev, console, limit=12)
    print_verdicts(report, console)
    if report.hook_overhead is not None:
        from ditcache.tools.hook_overhead import print_table

        console.print("[bold]Hook overhead[/bold] (µs per call, nn.Linear(8, 8))")
        print_table(report.hook_overhead, lambda line: console.print(line, highlight=False, markup=False))
    console.print(
        f"Wrote {', '.join(sorted(report.files.values()))} to {out} in {report.seconds:.0f} s.", highlight=False
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    from ditcache.tools.cli import main

    raise SystemExit(main(["bench", *sys.argv[1:]]))
