"""The sweeps: every configuration of ours (:func:`our_methods`) and of the peers (:func:`peer_methods`) that a
bench run evaluates, in the full and the quick (test) size.

Ours are data: :data:`OUR_SWEEP` and :data:`OUR_QUICK_SWEEP` are tables of :class:`SweepRow` ``(family, name,
configs)``, and :func:`our_methods` turns rows into methods. A new knob is swept by adding rows (or by passing
``extra`` rows); nothing in a row is model-specific. The same rows run on every bundled model and mode:

* TeaCache rows leave ``model`` and ``coefficients`` unset, so the library resolves the coefficients from the
  transformer's class (:func:`ditcache.presets.teacache.infer_teacache_model`: FLUX.1-dev's for the digits model's
  ``FluxTransformer2DModel``, Qwen-Image's for the patches model's ``QwenImageTransformer2DModel``); the "raw" rows
  give the identity polynomial explicitly (the raw relative L1 distance);
* MagCache rows leave ``profile`` unset and get the profile calibrated in-process for the model and mode
  (:func:`fill_magcache_profile`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import attrs

from ditcache.caches.dbcache import DBCacheConfig
from ditcache.caches.magcache import MagCacheConfig
from ditcache.caches.teacache import TeaCacheConfig
from ditcache.tools.bench.peers import (
    cache_dit_dbcache,
    diffusers_first_block_cache,
    diffusers_magcache,
    diffusers_taylorseer,
)
from ditcache.tools.evaluation import Method, ours

__all__ = [
    "CONFIG_CLASSES",
    "OUR_QUICK_SWEEP",
    "OUR_SWEEP",
    "SweepRow",
    "fill_magcache_profile",
    "method_from_row",
    "our_methods",
    "peer_methods",
]

CacheConfig = TeaCacheConfig | MagCacheConfig | DBCacheConfig
CONFIG_CLASSES: dict[str, type[Any]] = {
    "teacache": TeaCacheConfig,
    "magcache": MagCacheConfig,
    "dbcache": DBCacheConfig,
}
"""The cache names a row's dict configs may use, and their config classes."""


class SweepRow(NamedTuple):
    """One configuration of ours in a sweep table."""

    family: str | None
    """Group for plots and tables (None: the cache names joined by ``+``, outermost first)."""
    name: str
    """Unique label (tables, JSON, plots, the transfer verdict)."""
    configs: Any
    """The caches to apply, outermost first: a config object (``TeaCacheConfig``, ``MagCacheConfig``,
    ``DBCacheConfig``), a mapping ``{cache name: fields}`` (``{"teacache": {"rel_l1_thresh": 0.4}}``; several keys
    stack, in order), or a sequence of either."""


def _as_configs(spec: Any) -> list[CacheConfig]:
    if isinstance(spec, (TeaCacheConfig, MagCacheConfig, DBCacheConfig)):
        return [spec]
    if isinstance(spec, Mapping):
        out: list[CacheConfig] = []
        for key, fields in spec.items():
            cls = CONFIG_CLASSES.get(key)
            if cls is None:
                raise ValueError(f"configs: unknown cache {key!r}; allowed values: {', '.join(CONFIG_CLASSES)}")
            out.append(fields if isinstance(fields, cls) else cls.from_dict(fields))
        return out
    if isinstance(spec, Sequence) and not isinstance(spec, (str, bytes)):
        return [cfg for item in spec for cfg in _as_configs(item)]
    raise TypeError(
        f"configs: expected a cache config, a mapping {{cache: fields}} or a sequence of them, got {spec!r}"
    )


def fill_magcache_profile(config: CacheConfig, magcache_profile: str) -> CacheConfig:
    """``config`` with ``profile=magcache_profile`` when it is a MagCache config with no ratios of its own (no
    profile, model, ``mag_ratios`` nor calibration); any other config unchanged."""
    if (
        isinstance(config, MagCacheConfig)
        and config.profile is None
        and config.model is None
        and config.mag_ratios is None
        and not config.calibrate
    ):
        return attrs.evolve(config, profile=magcache_profile)
    return config


def method_from_row(row: SweepRow | tuple[Any, ...], magcache_profile: str) -> Method:
    """The method of one sweep row; MagCache configs without ratios get ``magcache_profile``."""
    family, name, spec = row
    configs = [fill_magcache_profile(cfg, magcache_profile) for cfg in _as_configs(spec)]
    if not configs:
        raise ValueError(f"configs: row {name!r} names no cache")
    return ours(name, *configs, family=family)


_RAW = (0.0, 0.0, 0.0, 1.0, 0.0)  # TeaCache's polynomial reduced to the identity: the raw relative L1 distance


def _forecast_family(ts: int, out: bool) -> str:
    return ("+taylorseer" + ("-output" if out else "")) if ts else ""


def _tea_cfg(
    threshold: float | None = None,
    *,
    rtol: float | None = None,
    raw: bool = False,
    ts: int = 0,
    mc: int | None = None,
    out: bool = False,
) -> TeaCacheConfig:
    # No model and no coefficients (unless raw): the library picks the preset of the transformer's class.
    return TeaCacheConfig(
        rel_l1_thresh=threshold,
        rtol=rtol,
        coefficients=_RAW if raw else None,
        taylorseer=ts > 0,
        taylorseer_order=max(ts, 1),
        taylorseer_target="output" if out else "residual",
        max_consecutive_skips=mc,
    )


def _tea_name(cfg: TeaCacheConfig) -> str:
    setting = f"rtol={cfg.rtol:g}" if cfg.rtol is not None else f"t={cfg.rel_l1_thresh:g}"
    name = f"TeaCache{' raw' if cfg.coefficients is not None else ''} {setting}"
    if cfg.taylorseer:
        name += f" +TaylorSeer O{cfg.taylorseer_order}"
        name += " output" if cfg.taylorseer_target == "output" else ""
    name += f" max-skips={cfg.max_consecutive_skips}" if cfg.max_consecutive_skips is not None else ""
    return name


def _tea(
    threshold: float | None = None,
    *,
    rtol: float | None = None,
    raw: bool = False,
    ts: int = 0,
    mc: int | None = None,
    out: bool = False,
) -> SweepRow:
    """TeaCache with a ``threshold`` or an error tolerance ``rtol`` (the model's preset coefficients, or ``raw``),
    TaylorSeer of order ``ts`` (0: none) forecasting the block residual or, with ``out``, the model output; at most
    ``mc`` consecutive skips."""
    cfg = _tea_cfg(threshold, rtol=rtol, raw=raw, ts=ts, mc=mc, out=out)
    family = "teacache" + ("-raw" if raw else "-rtol" if rtol is not None else "") + _forecast_family(ts, out)
    return SweepRow(family, _tea_name(cfg), cfg)


def _mag_cfg(
    threshold: float | None = None,
    k: int = 3,
    r: float = 0.2,
    *,
    rtol: float | None = None,
    ts: int = 0,
    out: bool = False,
) -> MagCacheConfig:
    # No profile: the bench fills in the one calibrated for the model and mode.
    return MagCacheConfig(
        threshold=threshold,
        rtol=rtol,
        max_skip_steps=k,
        retention_ratio=r,
        taylorseer=ts > 0,
        taylorseer_order=max(ts, 1),
        taylorseer_target="output" if out else "residual",
    )


def _mag_name(cfg: MagCacheConfig) -> str:
    setting = f"rtol={cfg.rtol:g}" if cfg.rtol is not None else f"t={cfg.threshold:g}"
    name = f"MagCache {setting} K={cfg.max_skip_steps} r={cfg.retention_ratio:g}"
    if cfg.taylorseer:
        name += f" +TaylorSeer O{cfg.taylorseer_order}" + (" output" if cfg.taylorseer_target == "output" else "")
    return name


def _mag(
    threshold: float | None = None,
    k: int = 3,
    r: float = 0.2,
    *,
    rtol: float | None = None,
    ts: int = 0,
    out: bool = False,
) -> SweepRow:
    """MagCache with a ``threshold`` or an error tolerance ``rtol``, at most ``k`` skips in a row, retention ``r``,
    TaylorSeer of order ``ts`` (0: none) forecasting the residual or, with ``out``, the output."""
    cfg = _mag_cfg(threshold, k, r, rtol=rtol, ts=ts, out=out)
    family = "magcache" + ("-rtol" if rtol is not None else "") + _forecast_family(ts, out)
    return SweepRow(family, _mag_name(cfg), cfg)


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


def _dbm(threshold: float, *, ts: int = 0, mc: int | None = None) -> SweepRow:
    cfg = _db(threshold, ts=ts, mc=mc)
    return SweepRow("dbcache" + ("+taylorseer" if ts else ""), _db_name(cfg), cfg)


def _stack(outer: MagCacheConfig | TeaCacheConfig, inner: DBCacheConfig) -> SweepRow:
    head = _mag_name(outer) if isinstance(outer, MagCacheConfig) else _tea_name(outer)
    return SweepRow(None, f"{head} over {_db_name(inner)}", (outer, inner))


OUR_QUICK_SWEEP: tuple[SweepRow, ...] = (
    _tea(0.6),
    _tea(1.0, ts=1, mc=4),
    _tea(1.0, ts=1, mc=4, out=True),
    _mag(0.2, 3, 0.2),
    _mag(0.3, 4, 0.1, ts=1),
    _dbm(0.2, mc=None),
    _dbm(0.3, ts=1, mc=3),
    _stack(_mag_cfg(0.2), _db(0.2, warmup=1)),
    _tea(rtol=0.1, ts=1, out=True),
    _mag(k=6, r=0.1, rtol=0.1),
)
"""The quick (test) sweep of ours: one or two rows per family."""

OUR_SWEEP: tuple[SweepRow, ...] = (
    *(_tea(t) for t in (0.2, 0.4, 0.6, 0.8)),
    # TaylorSeer forecasting the block residual (the head runs on skipped steps)
    *(_tea(t, ts=1, mc=mc) for t in (1.0, 2.0, 3.0) for mc in (6, 8, 10, 13)),
    _tea(1.0, ts=2, mc=8),
    *(_tea(t, raw=True, ts=1, mc=mc) for t in (0.2, 0.3) for mc in (6, 8)),
    # TaylorSeer forecasting the model output (skipped steps skip the head too): the 35-40 dB frontier
    *(_tea(t, ts=1, mc=mc, out=True) for t in (1.0, 1.5, 2.0, 3.0) for mc in (8, 10, 12, 14, None)),
    *(_tea(3.0, ts=1, mc=mc, out=True) for mc in (9, 11, 13)),
    *(_tea(t, ts=2, mc=mc, out=True) for t, mc in ((1.0, 10), (2.0, 10), (3.0, 12))),
    *(_tea(t, raw=True, ts=1, mc=mc, out=True) for t in (0.2, 0.3, 0.5) for mc in (8, 10, 12)),
    *(_mag(t, 3, 0.2) for t in (0.06, 0.1, 0.2, 0.4)),
    *(_mag(t, 6, 0.1) for t in (0.1, 0.3)),
    *(_mag(t, k, r, ts=1) for t in (0.1, 0.3, 1.0) for k in (4, 6) for r in (0.04, 0.1)),
    *(_dbm(t) for t in (0.05, 0.1, 0.2, 0.3)),
    *(_dbm(t, ts=1, mc=3) for t in (0.2, 0.3, 0.5)),
    _stack(_mag_cfg(0.2), _db(0.1)),
    _stack(_mag_cfg(0.1, 4, 0.1, ts=1), _db(0.1)),
    _stack(_tea_cfg(1.0, ts=1, mc=8), _db(0.1)),
    _stack(_tea_cfg(2.0, ts=1, mc=10), _db(0.1, ts=1)),
    _stack(_tea_cfg(2.0, ts=1, mc=10, out=True), _db(0.1)),
    # The error tolerance (one setting meant to transfer across models, ditcache.caches.tolerance)
    *(_tea(rtol=r) for r in (0.05, 0.08, 0.1, 0.15, 0.2)),
    *(_tea(rtol=r, ts=1) for r in (0.1, 0.2)),
    *(_tea(rtol=r, ts=1, out=True) for r in (0.02, 0.03, 0.05, 0.07, 0.1, 0.13)),
    *(_tea(rtol=r, ts=2, out=True) for r in (0.05, 0.1)),
    *(_mag(k=6, r=0.1, rtol=t) for t in (0.05, 0.1, 0.2)),
    _mag(k=6, r=0.1, rtol=0.2, ts=1),
    *(_mag(k=6, r=0.1, rtol=t, ts=1, out=True) for t in (0.05, 0.1, 0.15)),
)
"""The full sweep of ours, identical on every model and mode (no per-model tuning)."""


def our_methods(magcache_profile: str, *, quick: bool = False, extra: Iterable[SweepRow] = ()) -> list[Method]:
    """ditcache's sweep: the rows of :data:`OUR_SWEEP` (or :data:`OUR_QUICK_SWEEP`) and ``extra``, as methods;
    ``magcache_profile`` is the calibrated MagCache profile (path) of the model and mode, given to every MagCache
    config without ratios of its own."""
    rows = [*(OUR_QUICK_SWEEP if quick else OUR_SWEEP), *extra]
    return [method_from_row(row, magcache_profile) for row in rows]


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
