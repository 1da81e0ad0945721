"""``ditcache bench``: threshold sweeps of ditcache's caches and of the peers on the bundled models, in one run.

Every configuration runs through :func:`ditcache.tools.evaluation.evaluate` on each bundled model
(:data:`ditcache.bundled.BUNDLED_MODELS`: ``digits``, a small ``FluxTransformer2DModel``, and ``patches``, a small
``QwenImageTransformer2DModel``; ``--model`` picks one), with the same labels, seed, step count and (per mode)
guidance: once without classifier-free guidance (``no-cfg``) and once with it (``cfg``, a separate ``"uncond"`` call
per step, at each model's own guidance scale unless ``--guidance`` is given). The sweep is the same on every model
(no per-model tuning; what is model-specific comes from the library's own defaults). It covers:

* **ours** (data: the rows of :data:`~ditcache.tools.bench.sweeps.OUR_SWEEP`): TeaCache (the coefficients the
  library resolves for the transformer's class, and the raw relative L1 distance), MagCache with curves calibrated
  in-process per model and mode on another seed, DBCache, each with and without TaylorSeer forecasting, and stacks
  of a step-level cache over DBCache;
* **peers**: diffusers' FirstBlockCache, MagCache (``apply_mag_cache`` with the same calibrated ratios: diffusers
  takes one curve, so both branches use the ``cond`` one) and TaylorSeer (attention outputs, whole blocks, and its
  "lite" mode that forecasts the output projection), and cache-dit's DBCache with and without its TaylorSeer
  calibrator (``enable_separate_cfg`` set to match the sampler).

For every model, mode and quality level (PSNR >= 40 dB and >= 35 dB against the uncached samples) the verdict
compares the fastest configuration of ours with the fastest peer (:class:`Verdict`); the goal is a ratio of at least
:data:`TARGET_RATIO` and, for our configuration, a measured speed-up of at least :data:`TARGET_EFFICIENCY` of the
ideal one (:attr:`ditcache.tools.evaluation.RunResult.ideal_speedup`). The transfer verdict
(:class:`TransferVerdict`, :func:`transfer_verdicts`) picks, per quality level, the one setting of ours that meets
it on every model and mode with the best worst-case speed-up; its goal is a ratio of at least
:data:`TRANSFER_TARGET_RATIO` to each model and mode's fastest peer and a PSNR at most :data:`PSNR_TOLERANCE` dB
above the level, everywhere. :func:`psnr_spreads` gives each setting's PSNR spread across models and modes.

The results go to ``--out``: ``bench.json`` (every measurement, per model and mode), ``pareto.png`` (speed-up
against PSNR, one panel per model and mode), ``spread.png`` (the PSNR of each setting on every model and mode),
``hook_overhead.json`` and ``hook_overhead.png`` (:mod:`ditcache.tools.hook_overhead`), and the calibrated MagCache
profiles (``magcache_profile_<model>_<mode>.json``).

Modules: :mod:`ditcache.tools.bench.peers` (the peers as methods), :mod:`ditcache.tools.bench.sweeps` (what is swept),
:mod:`ditcache.tools.bench.verdicts`, :mod:`ditcache.tools.bench.report` (:func:`run_bench`) and
:mod:`ditcache.tools.bench.command` (the sub-command); the plots are in :mod:`ditcache.tools.plots`.
"""

from __future__ import annotations

from ditcache.tools.bench.command import (
    add_parser,
    print_spread,
    print_transfer,
    print_verdicts,
    transfer_lines,
    verdict_lines,
)
from ditcache.tools.bench.peers import (
    cache_dit_dbcache,
    diffusers_first_block_cache,
    diffusers_magcache,
    diffusers_taylorseer,
)
from ditcache.tools.bench.report import DEFAULT_GUIDANCE, JSON_LAYOUT, MODELS, MODES, BenchReport, run_bench
from ditcache.tools.bench.sweeps import (
    OUR_QUICK_SWEEP,
    OUR_SWEEP,
    SweepRow,
    method_from_row,
    our_methods,
    peer_methods,
)
from ditcache.tools.bench.verdicts import (
    PSNR_TOLERANCE,
    QUALITY_LEVELS,
    TARGET_EFFICIENCY,
    TARGET_RATIO,
    TRANSFER_TARGET_RATIO,
    PsnrSpread,
    TransferCell,
    TransferVerdict,
    Verdict,
    psnr_spreads,
    transfer_verdicts,
    verdicts,
)
from ditcache.tools.plots import pareto_front, plot_hook_overhead, plot_pareto, plot_spread

__all__ = [
    "DEFAULT_GUIDANCE",
    "JSON_LAYOUT",
    "MODELS",
    "MODES",
    "OUR_QUICK_SWEEP",
    "OUR_SWEEP",
    "PSNR_TOLERANCE",
    "QUALITY_LEVELS",
    "TARGET_EFFICIENCY",
    "TARGET_RATIO",
    "TRANSFER_TARGET_RATIO",
    "BenchReport",
    "PsnrSpread",
    "SweepRow",
    "TransferCell",
    "TransferVerdict",
    "Verdict",
    "add_parser",
    "cache_dit_dbcache",
    "diffusers_first_block_cache",
    "diffusers_magcache",
    "diffusers_taylorseer",
    "method_from_row",
    "our_methods",
    "pareto_front",
    "peer_methods",
    "plot_hook_overhead",
    "plot_pareto",
    "plot_spread",
    "print_spread",
    "print_transfer",
    "print_verdicts",
    "psnr_spreads",
    "run_bench",
    "transfer_lines",
    "transfer_verdicts",
    "verdict_lines",
    "verdicts",
]
