"""Run cache configurations on a bundled model and measure them the same way: the evaluation layer shared
by ``ditcache demo`` and ``ditcache bench``.

Every configuration (a :class:`Method`) is installed on its own fresh copy of the bundled model named by
:attr:`EvalSettings.model` (``"digits"`` or ``"patches"``, :data:`ditcache.bundled.BUNDLED_MODELS`: its loader,
sampler and data range come from the registry entry) and sampled with the same labels, seed, step count and
guidance (:class:`EvalSettings`). For each one :func:`evaluate` measures:

* **work**: the transformer blocks whose body actually ran, per call, counted with forward pre-hooks on a
  submodule only the block's own forward calls (a norm or MLP projection), and the attention computations,
  counted on each attention's query projection (so a hook that replaces a block or an attention without running
  it is not counted). From these follow the per-step
  decisions of each CFG branch (:class:`BranchDecisions`): a step is *computed* when every block ran, *skipped*
  when none did, *partial* otherwise (DBCache's cached steps run only the first ``Fn`` blocks);
* **time**: the wall-clock (or CPU) time of a whole sampling run, the fastest of ``repeats`` runs; the runs of all
  configurations are interleaved in a shuffled order, so a slow phase of a shared machine does not land on one
  configuration only. The uncached model and a copy *without blocks* are timed the same way: the second gives the
  fixed cost of a run (embeddings, output head, sampler), from which :attr:`RunResult.ideal_speedup` follows;
* **quality** against the uncached samples: PSNR over the data range of the images (the entry's ``data_range``; the
  bundled models' images are in [0, 1], so ``PSNR = 10 log10(1 / MSE)``) and the largest absolute pixel error.

Results are attrs classes with ``as_dict()`` for JSON. Modules: :mod:`.settings` (what is run), :mod:`.counting`
(what ran), :mod:`.results` (what was measured) and :mod:`.run` (:func:`evaluate`, :func:`calibrate_magcache`); the
PSNR is :func:`ditcache.core.metrics.psnr`.
"""

from __future__ import annotations

from ditcache.tools.evaluation.counting import BlockCounter, BranchDecisions
from ditcache.tools.evaluation.results import Evaluation, RunResult, max_abs_error
from ditcache.tools.evaluation.run import (
    PROFILE_MODEL,
    calibrate_magcache,
    evaluate,
    evaluation_units,
    profile_model_name,
)
from ditcache.tools.evaluation.settings import (
    TIMERS,
    BeforeRun,
    EvalSettings,
    InstallFn,
    Method,
    config_params,
    ours,
)

__all__ = [
    "PROFILE_MODEL",
    "TIMERS",
    "BeforeRun",
    "BlockCounter",
    "BranchDecisions",
    "EvalSettings",
    "Evaluation",
    "InstallFn",
    "Method",
    "RunResult",
    "calibrate_magcache",
    "config_params",
    "evaluate",
    "evaluation_units",
    "max_abs_error",
    "ours",
    "profile_model_name",
]
