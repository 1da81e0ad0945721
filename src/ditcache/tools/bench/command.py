"""The ``ditcache bench`` sub-command: its options, the progress display and the printed tables and verdicts (per
model and mode, and the transfer verdict across them)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from ditcache.tools.argtypes import guidance_scale, int_in
from ditcache.tools.bench.report import MODELS, MODES, BenchReport, run_bench
from ditcache.tools.bench.verdicts import (
    PSNR_TOLERANCE,
    QUALITY_LEVELS,
    TARGET_EFFICIENCY,
    TARGET_RATIO,
    TRANSFER_TARGET_RATIO,
)
from ditcache.tools.evaluation import TIMERS, Evaluation
from ditcache.tools.output import check_output_dir, fmt_psnr, progress_bar, result_table

__all__ = ["add_parser", "print_spread", "print_transfer", "print_verdicts", "transfer_lines", "verdict_lines"]


def _ratio(value: float) -> str:
    return "inf" if math.isinf(value) else f"{value:.2f}x"


def verdict_lines(report: BenchReport) -> list[str]:
    """The verdicts as rich-markup lines: best ours against best peer per model, mode and quality level."""
    lines: list[str] = []
    for v in report.verdicts:
        head = f"[bold]{v.model}, {v.mode}, PSNR >= {v.min_psnr:g} dB[/bold]"
        if v.ours is None:
            lines.append(f"{head}: no configuration of ours reaches this quality [red](goal missed)[/red]")
            continue
        lines.append(f"{head}:")
        lines.append(f"  ours {v.ours.speedup:5.2f}x  {v.ours.name} ({fmt_psnr(v.ours.psnr)} dB)")
        if v.peer is None:
            lines.append("  peer   none reaches this quality")
        else:
            lines.append(f"  peer {v.peer.speedup:5.2f}x  {v.peer.name} ({fmt_psnr(v.peer.psnr)} dB)")
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
    _print_titled(
        console,
        "[bold]Verdicts[/bold]: per model and mode, fastest configuration of each side at equal quality, measured "
        "in this run",
        verdict_lines(report),
    )


def _print_titled(console: Console, title: str, lines: list[str]) -> None:
    console.print(title)
    for line in lines:
        console.print(line, highlight=False)


def transfer_lines(report: BenchReport) -> list[str]:
    """The transfer verdicts as rich-markup lines: per quality level, the one setting of ours across every model
    and mode, its numbers in each, and the goals."""
    lines: list[str] = []
    for t in report.transfer:
        head = f"[bold]PSNR >= {t.min_psnr:g} dB on every model and mode[/bold]"
        if t.name is None:
            lines.append(f"{head}: no setting of ours meets it everywhere [red](goal missed)[/red]")
            continue
        lines.append(f"{head}: {t.name} ({t.candidates} settings meet it everywhere)")
        for c in t.cells:
            peer = "no peer meets it" if c.peer is None else f"best peer {c.peer.speedup:.2f}x {c.peer.name}"
            margin = "" if math.isinf(c.psnr_margin) else f" (+{c.psnr_margin:.1f})"
            lines.append(
                f"  {c.model}, {c.mode}: {c.ours.speedup:5.2f}x, {fmt_psnr(c.ours.psnr, ' dB')}{margin}, "
                f"{c.ours.computed_fraction:.0%} of blocks; {peer}; ratio {_ratio(c.ratio)}"
            )
        ratio = "[green]met[/green]" if t.ratio_passed else "[red]missed[/red]"
        band = "[green]met[/green]" if t.psnr_passed else "[red]missed[/red]"
        worst_margin = max(c.psnr_margin for c in t.cells)
        lines.append(
            f"  worst-case speed-up {t.worst_speedup:.2f}x; worst ratio {_ratio(t.worst_ratio)}: goal >= "
            f"{TRANSFER_TARGET_RATIO:.2f}x everywhere {ratio}; largest PSNR margin {fmt_psnr(worst_margin, ' dB')}: "
            f"goal <= {PSNR_TOLERANCE:g} dB {band}"
        )
    return lines


def print_transfer(report: BenchReport, console: Console) -> None:
    """Print :func:`transfer_lines` under a title."""
    _print_titled(
        console,
        "[bold]Transfer verdicts[/bold]: the same setting of ours on every model and mode (best worst-case "
        "speed-up among those meeting the level everywhere) against each one's fastest peer",
        transfer_lines(report),
    )


def print_spread(report: BenchReport, console: Console, limit: int = 15) -> None:
    """The PSNR spread (max - min over models and modes) of the settings that meet the lowest quality level
    everywhere, fastest worst case first (at most ``limit`` rows; every setting is in bench.json and spread.png)."""
    level = min(QUALITY_LEVELS)
    rows = sorted((s for s in report.spreads if s.worst_psnr >= level), key=lambda s: -s.worst_speedup)
    cells = list(dict.fromkeys(cell for s in report.spreads for cell in s.psnr))
    table = result_table(
        f"PSNR of the same setting per model and mode (settings meeting {level:g} dB everywhere: {len(rows)} of "
        f"{len(report.spreads)}; fastest worst case first)",
        ("setting", *(f"{m} {d} dB" for m, d in cells), "spread dB", "worst speed-up"),
        fold=True,
    )
    for s in rows[:limit]:
        table.add_row(
            s.name,
            *(fmt_psnr(s.psnr[c]) if c in s.psnr else "" for c in cells),
            f"{s.spread:.1f}",
            f"{s.worst_speedup:.2f}x",
        )
    console.print(table)


def _print_mode_table(model: str, mode: str, ev: Evaluation, console: Console, limit: int) -> None:
    rows = sorted((r for r in ev.results if r.ok), key=lambda r: -r.speedup)
    table = result_table(
        f"{model}, {mode}: fastest configurations with PSNR >= {min(QUALITY_LEVELS):g} dB "
        f"(uncached {ev.baseline.seconds * 1e3:.0f} ms, {ev.settings.timer} time)",
        ("configuration", "origin", "speed-up", "ideal", "blocks run", "PSNR dB", "max abs err"),
        fold=True,
    )
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
            fmt_psnr(r.psnr),
            f"{r.max_abs_error:.3f}",
        )
        shown += 1
        if shown >= limit:
            break
    console.print(table)
    failed = [r for r in ev.results if not r.ok]
    for r in failed:
        console.print(f"[yellow]{model}, {mode}: {r.name} did not run: {r.error}[/yellow]", highlight=False)


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Register the ``bench`` sub-command on an argparse sub-parsers object."""
    bench: argparse.ArgumentParser = commands.add_parser(
        "bench",
        help="sweep ditcache's caches and the peers (diffusers, cache-dit) on the bundled models; write JSON and plots",
        description=(
            "Threshold sweeps of TeaCache, MagCache, DBCache, their stacks and TaylorSeer options, and of "
            "diffusers' FirstBlockCache, MagCache and TaylorSeer and cache-dit's DBCache, on the bundled models "
            "(the same sweep on each) with the same labels, seed and steps, with and without classifier-free "
            "guidance. Writes bench.json, pareto.png, spread.png, hook_overhead.json/png and the calibrated MagCache "
            "profiles to --out, and prints the verdicts (per model and mode: best ours vs best peer at PSNR >= 40 "
            "and >= 35 dB) and the transfer verdicts (the one setting of ours across every model and mode)."
        ),
    )
    bench.add_argument("--out", type=Path, required=True, help="output directory (created if missing)")
    bench.add_argument(
        "--quick",
        action="store_true",
        help="a few configurations, 1 image, 6 steps, 1 repetition, short hook benchmark: seconds, for tests",
    )
    bench.add_argument(
        "--model",
        choices=("all", *MODELS),
        default="all",
        help="bundled model(s) to sweep (default: all, one after the other, the same sweep on each)",
    )
    bench.add_argument("--mode", choices=("both", *MODES), default="both", help="sampling modes (default: both)")
    bench.add_argument("--steps", type=int_in(2, 1000), default=None, help="denoising steps (default: 50; quick: 6)")
    bench.add_argument(
        "--guidance",
        type=guidance_scale,
        default=None,
        help="guidance scale of the cfg mode (default: each model's own: digits 3, patches 2)",
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
    out: Path = args.out
    problem = check_output_dir(out)
    if problem is not None:
        console.print(f"[red]ditcache bench: error: argument --out: {problem}[/red]", highlight=False)
        return 2
    modes = MODES if args.mode == "both" else (args.mode,)
    models = MODELS if args.model == "all" else (args.model,)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    console.print(
        f"ditcache bench: {'quick ' if args.quick else ''}sweep on the bundled model(s) {', '.join(models)}, "
        f"modes {', '.join(modes)}, "
        f"{args.threads} torch thread(s), {args.timer} timer; results to {out}",
        highlight=False,
    )
    try:
        with progress_bar(console, "calibrating MagCache", width=70) as progress:
            report = run_bench(
                out,
                quick=args.quick,
                models=models,
                modes=modes,
                steps=args.steps,
                guidance=args.guidance,
                repeats=args.repeats,
                timer=args.timer,
                peers=not args.no_peers,
                hook_overhead=not args.no_hook_overhead,
                progress=progress,
                log=lambda line: console.print(line, highlight=False),
            )
    finally:
        torch.set_num_threads(threads)
    for model, per_mode in report.evaluations.items():
        for mode, ev in per_mode.items():
            _print_mode_table(model, mode, ev, console, limit=12)
    print_verdicts(report, console)
    print_spread(report, console)
    print_transfer(report, console)
    if report.hook_overhead is not None:
        from ditcache.tools.hook_overhead import print_table

        console.print("[bold]Hook overhead[/bold] (µs per call, nn.Linear(8, 8))")
        print_table(report.hook_overhead, lambda line: console.print(line, highlight=False, markup=False))
    console.print(
        f"Wrote {', '.join(sorted(report.files.values()))} to {out} in {report.seconds:.0f} s.", highlight=False
    )
    return 0
