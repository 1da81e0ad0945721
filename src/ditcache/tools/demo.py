"""``ditcache demo``: every cache on a bundled trained model, against the uncached run, in one process.

A bundled model (``--model``: ``digits``, a trained diffusers ``FluxTransformer2DModel`` drawing digits, the
default, or ``patches``, a trained ``QwenImageTransformer2DModel`` painting photo patches; see
:data:`ditcache.bundled.BUNDLED_MODELS`, where everything model-specific comes from: labels, guidance, image shape,
data range) generates one image per label, uncached and with each cache of :func:`demo_methods`: TeaCache,
MagCache, DBCache and MagCache stacked over DBCache, the same settings on every model (see
``docs/benchmarks.md``). MagCache's magnitude-ratio
curves are calibrated in-process first (one uncached generation on another seed) and written to the output
directory as a profile. The runs go through :func:`ditcache.tools.evaluation.evaluate`: same labels, seed, steps and
guidance for everyone, interleaved timed repetitions (the fastest counts), transformer blocks counted as they run,
quality against the uncached samples.

Written to ``--out``: ``samples.png`` (one row per configuration), ``decisions.png`` (what each configuration ran
at every step, per CFG branch), ``magcache_profile.json`` and ``demo.json`` (every number of the table).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import torch
from rich.console import Console
from torch import nn

from ditcache.bundled import BUNDLED_MODELS, get_bundled_model
from ditcache.caches.dbcache import DBCacheConfig
from ditcache.caches.magcache import MagCacheConfig
from ditcache.caches.teacache import TeaCacheConfig
from ditcache.tools.argtypes import guidance_scale, int_in
from ditcache.tools.evaluation import (
    EvalSettings,
    Evaluation,
    Method,
    calibrate_magcache,
    evaluate,
    evaluation_units,
    ours,
)
from ditcache.tools.output import check_output_dir, fmt_psnr, progress_bar, result_table
from ditcache.tools.plots import plot_decisions, plot_samples

__all__ = [
    "DEFAULT_OUT",
    "DemoReport",
    "add_parser",
    "demo_methods",
    "run_demo",
]

DEFAULT_OUT = Path("ditcache-demo")
"""Default output directory (relative to the working directory)."""


def demo_methods(magcache_profile: str | os.PathLike[str]) -> list[Method]:
    """The demo's configurations; ``magcache_profile`` is the calibrated MagCache profile (a path).

    The same configurations on every bundled model. Settings picked from a ``ditcache bench`` run on the digits
    model (50 steps, CFG 3; see ``docs/benchmarks.md``): each keeps the samples at about 40 dB PSNR against the
    uncached ones or better, with a clear speed-up. TeaCache takes the coefficients the library resolves for the
    transformer's class (FLUX.1-dev's for the digits model, Qwen-Image's for the patches model; a
    ``max_consecutive_skips`` cap makes its schedule regular) and its TaylorSeer forecasts the model output
    (``taylorseer_target="output"``): on the digits model, at the same decisions (t=1, at most 8 skips) that gives
    46.6 dB where forecasting the block residual gives 42.9 dB (CFG 3), so the demo spends the margin on a higher
    threshold (14% of the blocks run, about 43 dB with and without guidance).
    DBCache is cache-dit's recommended "F1B0 + TaylorSeer". The last row sets quality by an error tolerance
    instead of a threshold (``rtol=0.1``: at most 10% error in a reused step's output, measured by the cache), the
    setting whose meaning is the same on every model (``docs/tolerance.md``).
    """
    profile = os.fspath(magcache_profile)
    tea = TeaCacheConfig(
        rel_l1_thresh=2.0,
        taylorseer=True,
        taylorseer_target="output",
        max_consecutive_skips=8,
    )
    mag = MagCacheConfig(threshold=0.1, max_skip_steps=6, retention_ratio=0.1, profile=profile)
    db = DBCacheConfig(
        fn_compute_blocks=1,
        bn_compute_blocks=0,
        max_warmup_steps=4,
        residual_diff_threshold=0.3,
        max_continuous_cached_steps=3,
        taylorseer=True,
    )
    db_inner = DBCacheConfig(fn_compute_blocks=1, max_warmup_steps=4, residual_diff_threshold=0.1)
    return [
        ours("TeaCache + TaylorSeer", tea),
        ours("MagCache (calibrated)", mag),
        ours("DBCache + TaylorSeer", db),
        ours("MagCache over DBCache", mag, db_inner),
        ours("TeaCache rtol=0.1", TeaCacheConfig(rtol=0.1)),
    ]


# ---------------------------------------------------------------------------------------------- the run
@attrs.frozen
class DemoReport:
    """What :func:`run_demo` measured and wrote."""

    evaluation: Evaluation
    """The evaluation of every configuration."""
    files: dict[str, Path]
    """What was written, by role: ``samples``, ``decisions``, ``magcache_profile``, ``results``."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready values."""
        return {"evaluation": self.evaluation.as_dict(), "files": {k: v.name for k, v in self.files.items()}}


def run_demo(
    out: Path,
    settings: EvalSettings | None = None,
    *,
    model: nn.Module | None = None,
    methods: Callable[[str], list[Method]] | None = None,
    progress: Callable[[str, int], None] | None = None,
) -> DemoReport:
    """Calibrate MagCache, evaluate the demo's configurations and write the files to ``out`` (which must exist).

    The bundled model is ``settings.model`` (``model``, when given, is that model already loaded). ``methods``
    builds the configurations from the profile path (default: :func:`demo_methods`); ``progress(description,
    total)`` is called once per sampling run.
    """
    settings = settings if settings is not None else EvalSettings(repeats=2)
    base = model if model is not None else get_bundled_model(settings.model).load()
    build = methods if methods is not None else demo_methods
    profile_path = out / "magcache_profile.json"
    probe = build(str(profile_path))
    total = 1 + evaluation_units(len(probe), settings)
    calibrate_magcache(base, settings, path=profile_path)
    if progress is not None:
        progress("calibrated MagCache", total)
    evaluation = evaluate(
        build(str(profile_path)),
        settings,
        model=base,
        progress=None if progress is None else (lambda desc: progress(desc, total)),
    )
    files = {
        "samples": out / "samples.png",
        "decisions": out / "decisions.png",
        "magcache_profile": profile_path,
        "results": out / "demo.json",
    }
    plot_samples(evaluation, files["samples"])
    plot_decisions(evaluation, files["decisions"])
    report = DemoReport(evaluation, files)
    files["results"].write_text(json.dumps(report.as_dict(), indent=2, allow_nan=False) + "\n")
    return report


# ---------------------------------------------------------------------------------------------- command line
def _labels(text: str) -> tuple[int, ...]:
    try:
        out = tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        out = ()
    if not out or any(d < 0 for d in out):
        raise argparse.ArgumentTypeError(f"expected comma-separated labels (ints >= 0), got {text!r}")
    return out


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Register the ``demo`` sub-command on an argparse sub-parsers object."""
    demo: argparse.ArgumentParser = commands.add_parser(
        "demo",
        help="run every cache on a bundled trained model: speed-ups, errors, sample and decision plots",
        description=(
            "Generate one image per label with a bundled trained model (--model: digits, a diffusers "
            "FluxTransformer2DModel, or patches, a QwenImageTransformer2DModel), uncached and with TeaCache, "
            "MagCache (curve calibrated in-process), DBCache and MagCache over DBCache, in this process; print "
            "steps and blocks computed, the speed-up against the uncached run, PSNR and max abs error against the "
            "uncached samples; write samples.png, decisions.png, magcache_profile.json and demo.json to --out."
        ),
    )
    demo.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default: ./{DEFAULT_OUT}; created if missing)"
    )
    demo.add_argument(
        "--model",
        choices=sorted(BUNDLED_MODELS),
        default="digits",
        help="bundled model (default: digits; patches: photo patches on a QwenImageTransformer2DModel)",
    )
    demo.add_argument("--steps", type=int_in(2, 1000), default=50, help="denoising steps (2-1000, default: 50)")
    demo.add_argument(
        "--guidance",
        type=guidance_scale,
        default=None,
        help="classifier-free guidance scale, > 1 (default: the model's own: digits 3, patches 2)",
    )
    demo.add_argument("--no-cfg", action="store_true", help="sample without classifier-free guidance")
    demo.add_argument(
        "--labels",
        type=_labels,
        default=None,
        help="labels to draw, comma-separated (digits: the digits 0-9; patches: reference patches 0-103; "
        "default: the model's default labels, 0,1,...,9 for both)",
    )
    demo.add_argument("--seed", type=int_in(0, 2**31 - 1), default=0, help="seed of the noise (default: 0)")
    demo.add_argument(
        "--repeats", type=int_in(1, 100), default=2, help="timed runs of each configuration; the fastest counts"
    )
    demo.add_argument(
        "--threads",
        type=int_in(1, 256),
        default=1,
        help="torch CPU threads (default: 1; the model is too small to gain from more, and on a busy machine "
        "waiting threads make every run slower)",
    )
    demo.set_defaults(handler=_cmd_demo)
    return demo


def _cmd_demo(args: argparse.Namespace, console: Console) -> int:
    out: Path = args.out
    problem = check_output_dir(out)
    if problem is not None:
        console.print(f"[red]ditcache demo: error: argument --out: {problem}[/red]", highlight=False)
        return 2
    entry = get_bundled_model(args.model)
    labels = args.labels if args.labels is not None else entry.default_labels
    top = entry.null_label - 1
    if any(label > top for label in labels):
        print(
            f"ditcache demo: error: argument --labels: the {entry.name} model's labels are 0..{top}, got "
            f"{','.join(map(str, labels))!r}",
            file=sys.stderr,
        )
        return 2
    guidance = args.guidance if args.guidance is not None else entry.default_guidance
    settings = EvalSettings(
        model=entry.name,
        labels=labels,
        seed=args.seed,
        num_steps=args.steps,
        guidance_scale=None if args.no_cfg else guidance,
        repeats=args.repeats,
        timer="wall",
    )
    cfg = "no guidance" if args.no_cfg else f"classifier-free guidance {guidance:g}"
    console.print(
        f"ditcache demo: the bundled trained {entry.name} model (diffusers {entry.transformer_class}), "
        f"{len(settings.labels)} images, {settings.num_steps} Euler steps, {cfg}, "
        f"{args.threads} torch CPU thread(s).",
        highlight=False,
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        with progress_bar(console, "calibrating MagCache", width=60) as progress:
            report = run_demo(out, settings, progress=progress)
    finally:
        torch.set_num_threads(threads)
    ev = report.evaluation
    table = result_table(
        f"uncached: {ev.baseline.seconds * 1e3:.0f} ms per generation (fastest of {settings.repeats})",
        ("configuration", "steps computed", "blocks run", "time", "speed-up", "PSNR", "max abs error"),
    )
    for r in ev.results:
        if not r.ok:
            table.add_row(r.name, f"[red]failed: {r.error}[/red]", "", "", "", "", "")
            continue
        steps = f"{r.computed_steps}/{r.steps_total}"
        if r.partial_steps:
            steps += f" (+{r.partial_steps} partial)"
        table.add_row(
            r.name,
            steps,
            f"{r.blocks_executed}/{r.blocks_total}",
            f"{r.seconds * 1e3:.0f} ms",
            f"{r.speedup:.2f}x",
            fmt_psnr(r.psnr, " dB"),
            f"{r.max_abs_error:.4f}",
        )
    console.print(table)
    console.print(
        "Steps computed count transformer calls (steps x CFG branches) on which every block ran; partial ones ran "
        "only DBCache's first block. PSNR and max abs error are against the uncached samples (pixels in [0, 1]). "
        "Timings: wall clock, fastest of interleaved repetitions in this process. MagCache's curve was calibrated "
        f"in-process on seed {settings.seed + 1000}; TeaCache uses the coefficients ditcache resolves for "
        f"{entry.transformer_class}.",
        highlight=False,
    )
    console.print(f"Wrote {', '.join(p.name for p in report.files.values())} to {out}", highlight=False)
    return 0
