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

Modules: :mod:`ditcache.tools.bench.peers` (the peers as methods), :mod:`ditcache.tools.bench.sweeps` (what is swept),
:mod:`ditcache.tools.bench.verdicts`, :mod:`ditcache.tools.bench.report` (:func:`run_bench`) and
:mod:`ditcache.tools.bench.command` (the sub-command); the plots are in :mod:`ditcache.tools.plots`.
"""

from __future__ import annotations

from ditcache.tools.bench.command import add_parser, print_verdicts, verdict_lines
from ditcache.tools.bench.peers import (
    cache_dit_dbcache,
    diffusers_first_block_cache,
    diffusers_magcache,
    diffusers_taylorseer,
)
from ditcache.tools.bench.report import DEFAULT_GUIDANCE, MODES, BenchReport, run_bench
from ditcache.tools.bench.sweeps import our_methods, peer_methods
from ditcache.tools.bench.verdicts import QUALITY_LEVELS, TARGET_EFFICIENCY, TARGET_RATIO, Verdict, verdicts
from ditcache.tools.plots import pareto_front, plot_hook_overhead, plot_pareto

__all__ = [
    "DEFAULT_GUIDANCE",
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
