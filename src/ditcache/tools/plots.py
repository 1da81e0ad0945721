"""The plots of ``ditcache demo`` (samples, per-step decisions) and ``ditcache bench`` (speed-up against PSNR with
the Pareto fronts, the PSNR spread of each setting across models and modes, hook overhead), written as PNG files
with matplotlib's Agg backend (imported on first use)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ditcache.tools.evaluation import Evaluation, RunResult

if TYPE_CHECKING:  # the bench imports this module; only its type is needed here
    from ditcache.tools.bench.report import BenchReport

__all__ = ["pareto_front", "plot_decisions", "plot_hook_overhead", "plot_pareto", "plot_samples", "plot_spread"]


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points ``(speedup, psnr)`` no other point beats on both, sorted by speed-up."""
    front: list[tuple[float, float]] = []
    for x, y in sorted(points, key=lambda p: (-p[0], -p[1])):
        if not front or y > front[-1][1]:
            front.append((x, y))
    return sorted(front)


# ---------------------------------------------------------------------------------------------- bench
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
    """Speed-up against PSNR, one panel per model (rows) and mode (columns): ours filled, peers hollow, one colour
    and marker per family; the Pareto front of each side, the quality levels of the verdicts, the per-model
    verdicts' picks as stars and the transfer verdicts' setting (the same configuration in every panel) as a red
    ring. PSNRs outside ``psnr_range`` are drawn at its edges (identical samples at the top)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lo, hi = psnr_range
    models = list(report.evaluations)
    modes = list(dict.fromkeys(mode for per_mode in report.evaluations.values() for mode in per_mode))
    fig, axes = plt.subplots(
        len(models), len(modes), figsize=(7.5 * len(modes), 0.9 + 5.6 * len(models)), squeeze=False
    )
    handles: dict[str, Any] = {}
    transfer_names = {t.name for t in report.transfer if t.name is not None}
    for row, model in enumerate(models):
        for col, mode in enumerate(modes):
            ax = axes[row][col]
            ev = report.evaluations[model].get(mode)
            if ev is None:
                ax.set_visible(False)
                continue
            _pareto_panel(ax, report, model, mode, ev, lo, hi, handles, transfer_names)
    order = [k for k in _FAMILY_STYLE if k in handles]
    order += [k for k in ("front ours", "front peer", "transfer") if k in handles]
    fig.legend(
        [handles[k] for k in order],
        [handles[k].get_label() for k in order],
        loc="lower center",
        ncol=4,
        fontsize=8,
        frameon=False,
    )
    fig.suptitle(
        "ditcache bench on the bundled models: ditcache filled, peers hollow; stars: the per-model verdicts' picks "
        "(black: ours, grey: peers); red rings: the transfer verdicts' setting",
        fontsize=10,
    )
    legend_height = 1.3 / (0.9 + 5.6 * len(models))
    fig.tight_layout(rect=(0, legend_height, 1, 0.98))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _pareto_panel(
    ax: Any,
    report: BenchReport,
    model: str,
    mode: str,
    ev: Evaluation,
    lo: float,
    hi: float,
    handles: dict[str, Any],
    transfer_names: set[str],
) -> None:
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
            if r.name in transfer_names:
                handles["transfer"] = ax.scatter(
                    r.speedup,
                    y,
                    s=160,
                    facecolors="none",
                    edgecolors="red",
                    linewidths=1.6,
                    zorder=6,
                    label="transfer verdicts' setting",
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
        if v.mode != mode or v.model != model:
            continue
        for best, color in ((v.ours, "black"), (v.peer, "grey")):
            if best is not None:
                ax.scatter(best.speedup, min(max(best.psnr, lo), hi), marker="*", s=200, color=color, zorder=5)
    ax.set_ylim(lo - 1, hi + 2)
    for level in sorted({v.min_psnr for v in report.verdicts}, reverse=True):
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
    ax.set_title(
        f"{model}: {title}, {settings.num_steps} steps, {len(settings.labels)} images, {settings.timer} time",
        fontsize=10,
    )
    ax.set_xlabel("measured speed-up over the uncached run (x)")
    ax.set_ylabel(f"PSNR vs uncached samples (dB; clipped to [{lo:g}, {hi:g}])")
    ax.grid(True, alpha=0.3)


def plot_spread(report: BenchReport, path: Path, psnr_range: tuple[float, float] = (20.0, 70.0)) -> None:
    """Per setting of ours (one row each, the same configuration on every model and mode): its PSNR in each model
    and mode (one marker per model and mode) joined by a bar from the smallest to the largest, the spread written
    at the right; the quality levels as dotted lines. PSNRs outside ``psnr_range`` are drawn at its edges."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lo, hi = psnr_range
    spreads = list(report.spreads)
    cells = list(dict.fromkeys(cell for s in spreads for cell in s.psnr))
    markers = ("o", "s", "^", "v", "D", "P", "X", "*")
    colors = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
    fig, ax = plt.subplots(figsize=(11, 1.6 + 0.22 * max(1, len(spreads))))
    for i, s in enumerate(spreads):
        ys = [min(max(v, lo), hi) for v in s.psnr.values()]
        ax.plot([min(ys), max(ys)], [i, i], color="#bbbbbb", linewidth=3, solid_capstyle="round", zorder=1)
        for k, cell in enumerate(cells):
            if cell in s.psnr:
                ax.scatter(
                    min(max(s.psnr[cell], lo), hi),
                    i,
                    marker=markers[k % len(markers)],
                    color=colors[k % len(colors)],
                    s=22,
                    zorder=2,
                    label=f"{cell[0]}, {cell[1]}" if i == 0 else None,
                )
        ax.annotate(
            f"{s.spread:.1f} dB", (1.0, i), xycoords=("axes fraction", "data"), ha="left", va="center", fontsize=7
        )
    for level in sorted({t.min_psnr for t in report.transfer}, reverse=True):
        ax.axvline(level, color="#999999", linewidth=0.8, linestyle=":")
    ax.set_yticks(range(len(spreads)), [s.name for s in spreads], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(lo - 1, hi + 1)
    ax.set_xlabel(f"PSNR vs uncached samples (dB; clipped to [{lo:g}, {hi:g}])")
    ax.set_title(
        "The same setting on every model and mode: PSNR per model and mode, spread (max - min) at the right",
        fontsize=9,
    )
    ax.grid(True, axis="x", alpha=0.3)
    if spreads:
        ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
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


# ---------------------------------------------------------------------------------------------- demo
def _rows(evaluation: Evaluation) -> list[RunResult]:
    return [evaluation.baseline, *(r for r in evaluation.results if r.ok)]


def _row_label(r: RunResult) -> str:
    if r.method.origin == "baseline":
        return "uncached"
    psnr = "identical" if math.isinf(r.psnr) else f"{r.psnr:.1f} dB"
    return f"{r.name}\n{r.speedup:.2f}x, {psnr}"


def _as_hwc(image: torch.Tensor) -> torch.Tensor:
    """One image as ``(H, W, C)``: grey ``(H, W)`` gets one channel, ``(C, H, W)`` is moved channel-last."""
    image = image.detach().float().cpu()
    return image.unsqueeze(-1) if image.dim() == 2 else image.permute(1, 2, 0)


def plot_samples(evaluation: Evaluation, path: Path) -> None:
    """The samples of every configuration side by side: one row per configuration (uncached first), one column
    per label. Grey images (digits) are drawn dark on light, RGB ones (patches) as they are."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _rows(evaluation)
    labels = evaluation.settings.labels
    assert rows[0].images is not None
    sample = _as_hwc(rows[0].images[0])
    height, width, channels = sample.shape
    pad = 2
    grid = torch.full(
        (len(rows) * (height + pad) - pad, len(labels) * (width + pad) - pad, channels),
        0.12 if channels == 1 else 1.0,
    )
    for i, r in enumerate(rows):
        assert r.images is not None
        for j in range(len(labels)):
            y, x = i * (height + pad), j * (width + pad)
            grid[y : y + height, x : x + width] = _as_hwc(r.images[j]).clamp(0.0, 1.0)
    fig, ax = plt.subplots(figsize=(2.4 + 0.6 * len(labels), 0.7 + 0.6 * len(rows)))
    if channels == 1:
        ax.imshow(grid[..., 0].numpy(), cmap="gray_r", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(grid.numpy(), interpolation="nearest")
    ax.set_xticks([j * (width + pad) + width / 2 - 0.5 for j in range(len(labels))], [str(d) for d in labels])
    ax.set_yticks([i * (height + pad) + height / 2 - 0.5 for i in range(len(rows))], [_row_label(r) for r in rows])
    ax.tick_params(length=0, labelsize=8)
    for spine in ax.spines.values():
        spine.set_visible(False)
    s = evaluation.settings
    cfg = f"CFG {s.guidance_scale:g}" if s.guided else "no CFG"
    ax.set_title(f"bundled {s.model} DiT, {s.num_steps} Euler steps, {cfg}, seed {s.seed}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_decisions(evaluation: Evaluation, path: Path) -> None:
    """What every configuration ran at each step, per CFG branch: the fraction of the transformer blocks run
    (white: step skipped, black: computed, grey: some blocks run)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = [r for r in evaluation.results if r.ok]
    strips: list[list[float]] = []
    names: list[str] = []
    for r in results:
        for d in r.decisions:
            strips.append([b / d.num_blocks for b in d.blocks])
            computed, partial = len(d.computed_steps), len(d.partial_steps)
            extra = f", {partial} partial" if partial else ""
            names.append(f"{r.name} [{d.branch}]: {computed}/{len(d.blocks)} computed{extra}")
    steps = evaluation.settings.num_steps
    fig, ax = plt.subplots(figsize=(2.5 + 0.16 * steps + 3.0, 0.8 + 0.32 * max(1, len(strips))))
    if strips:
        image = ax.imshow(
            torch.tensor(strips).numpy(), cmap="Greys", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest"
        )
        bar = fig.colorbar(image, ax=ax, fraction=0.03, pad=0.01)
        bar.set_label("blocks run / all blocks", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xticks(range(0, steps, max(1, steps // 10)))
    ax.set_xticks([x - 0.5 for x in range(steps + 1)], minor=True)
    ax.set_yticks([y - 0.5 for y in range(len(names) + 1)], minor=True)
    ax.grid(which="minor", color="#cccccc", linewidth=0.4)
    ax.tick_params(which="minor", length=0)
    ax.set_xlabel("denoising step")
    ax.set_title("per-step decisions (white: skipped, black: computed, grey: partly computed)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
