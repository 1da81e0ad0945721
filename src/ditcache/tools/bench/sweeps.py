"""The sweeps: every configuration of ours (:func:`our_methods`) and of the peers (:func:`peer_methods`) that a
bench run evaluates, in the full and the quick (test) size."""

from __future__ import annotations

from collections.abc import Sequence

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

__all__ = ["our_methods", "peer_methods"]

_FLUX = "flux.1-dev"
_RAW = (0.0, 0.0, 0.0, 1.0, 0.0)  # TeaCache's polynomial reduced to the identity: the raw relative L1 distance


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
