"""One bench run: the sweeps of every model and mode, the verdicts (per model and mode, and the transfer verdict
across them), the hook-overhead microbenchmark (:func:`run_bench`), and what it measured (:class:`BenchReport`)."""

from __future__ import annotations

import datetime
import json
import logging
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import nn

from ditcache.bundled import BUNDLED_MODELS, get_bundled_model
from ditcache.tools.bench.sweeps import SweepRow, our_methods, peer_methods
from ditcache.tools.bench.verdicts import (
    PSNR_TOLERANCE,
    QUALITY_LEVELS,
    TARGET_EFFICIENCY,
    TARGET_RATIO,
    TRANSFER_TARGET_RATIO,
    Cell,
    PsnrSpread,
    TransferVerdict,
    Verdict,
    psnr_spreads,
    transfer_verdicts,
    verdicts,
)
from ditcache.tools.evaluation import (
    EvalSettings,
    Evaluation,
    Method,
    RunResult,
    calibrate_magcache,
    evaluate,
    evaluation_units,
)
from ditcache.tools.plots import plot_hook_overhead, plot_pareto, plot_spread

__all__ = ["DEFAULT_GUIDANCE", "JSON_LAYOUT", "MODELS", "MODES", "BenchReport", "run_bench"]

MODES = ("no-cfg", "cfg")
"""The two sampling modes: without classifier-free guidance, and with it (a separate uncond call per step)."""
MODELS = tuple(BUNDLED_MODELS)
"""The bundled models a bench run sweeps by default (``--model all``)."""
DEFAULT_GUIDANCE = 3.0
"""Guidance scale of the ``cfg`` mode of the digits model (its registry entry's ``default_guidance``; every model's
``cfg`` mode uses its own entry's unless a scale is given)."""
JSON_LAYOUT = 2
"""``bench.json``'s ``layout``: 2 has per-model sections (``models.<name>.modes.<mode>``); 1 (unversioned) had the
digits model's ``modes`` at the top level."""


@attrs.frozen
class BenchReport:
    """Everything one ``ditcache bench`` run measured."""

    evaluations: dict[str, dict[str, Evaluation]]
    """Per model (``"digits"``, ``"patches"``), per mode (``"no-cfg"``, ``"cfg"``)."""
    verdicts: tuple[Verdict, ...]
    """Per model, mode and quality level."""
    hook_overhead: dict[str, Any] | None
    """:func:`ditcache.tools.hook_overhead.run`'s result, or None when skipped."""
    settings: dict[str, Any]
    """The options of the run (quick, models, steps, repeats, timer, threads, ...)."""
    seconds: float
    """Wall time of the whole bench."""
    files: dict[str, str] = attrs.field(factory=dict)
    """What was written, by role (file names inside the output directory)."""
    transfer: tuple[TransferVerdict, ...] = ()
    """Per quality level: the one setting of ours across every model and mode (:func:`transfer_verdicts`)."""
    spreads: tuple[PsnrSpread, ...] = ()
    """Per setting of ours: its PSNR in every model and mode (:func:`psnr_spreads`)."""

    @property
    def cells(self) -> dict[Cell, tuple[RunResult, ...]]:
        """The results of every ``(model, mode)`` evaluation."""
        return {(m, d): ev.results for m, modes in self.evaluations.items() for d, ev in modes.items()}

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
            "layout": JSON_LAYOUT,
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
            "transfer": [t.as_dict() for t in self.transfer],
            "spread": [s.as_dict() for s in self.spreads],
            "models": {
                model: {
                    "transformer_class": get_bundled_model(model).transformer_class,
                    "verdicts": [v.as_dict() for v in self.verdicts if v.model == model],
                    "modes": {mode: ev.as_dict() for mode, ev in modes.items()},
                }
                for model, modes in self.evaluations.items()
            },
            "hook_overhead": self.hook_overhead,
            "files": self.files,
        }


def _prefixed(prefix: str, tick: Callable[[str], None]) -> Callable[[str], None]:
    return lambda desc: tick(prefix + desc)


def _mode_settings(
    model: str, mode: str, *, quick: bool, steps: int, guidance: float | None, repeats: int, timer: str
) -> EvalSettings:
    entry = get_bundled_model(model)
    if guidance is None:
        guidance = entry.default_guidance
    return EvalSettings(
        model=model,
        labels=entry.default_labels[:1] if quick else entry.default_labels,
        seed=0,
        num_steps=steps,
        guidance_scale=guidance if mode == "cfg" else None,
        repeats=repeats,
        timer=timer,
    )


class _OncePerMessage(logging.Filter):
    """Lets each distinct log message through once (the same TeaCache warning comes with every configuration)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message in self.seen:
            return False
        self.seen.add(message)
        return True


def run_bench(
    out: Path,
    *,
    quick: bool = False,
    models: Sequence[str] = MODELS,
    modes: Sequence[str] = MODES,
    steps: int | None = None,
    guidance: float | None = None,
    repeats: int | None = None,
    timer: str = "cpu",
    peers: bool = True,
    hook_overhead: bool = True,
    hook_rounds: int | None = None,
    hook_calls: int | None = None,
    loaded: Mapping[str, nn.Module] | None = None,
    extra: Sequence[SweepRow] = (),
    progress: Callable[[str, int], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> BenchReport:
    """Run the sweeps of every model and mode, the verdicts and the hook-overhead microbenchmark; write the files
    to ``out``.

    Every model gets the same sweep of ours (:func:`~ditcache.tools.bench.sweeps.our_methods`, plus the ``extra``
    rows) and of the peers; its ``cfg`` mode uses ``guidance``, or the model's own ``default_guidance`` when None.
    ``quick`` shrinks everything (1 label, 6 steps, a few configurations per family, 1 timed repetition, a short
    hook benchmark) so that a test can run it in seconds; explicit ``steps`` / ``repeats`` / ``hook_*`` win.
    ``loaded`` maps model names to already loaded models (copied, never modified). ``progress(description,
    total)`` is called once per unit of work with the total number of units.
    """
    for mode in modes:
        if mode not in MODES:
            raise ValueError(f"modes: allowed values are {list(MODES)}, got {mode!r}")
    if not modes:
        raise ValueError(f"modes: give at least one of {list(MODES)}")
    if not models:
        raise ValueError(f"models: give at least one of {list(MODELS)}")
    for model in models:
        get_bundled_model(model)
    steps = steps if steps is not None else (6 if quick else 50)
    repeats = repeats if repeats is not None else (1 if quick else 3)
    hook_rounds = hook_rounds if hook_rounds is not None else (2 if quick else 15)
    hook_calls = hook_calls if hook_calls is not None else (200 if quick else 10_000)
    say = log if log is not None else (lambda _: None)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    once = _OncePerMessage()
    logger = logging.getLogger("ditcache")
    handlers = [*logger.handlers, *logging.getLogger().handlers]
    logger.addFilter(once)
    for handler in handlers:
        handler.addFilter(once)
    try:
        files: dict[str, str] = {}
        # Sizes are known once the sweeps are built; build them first (after calibration, which needs one run each).
        sweeps: list[tuple[str, str, nn.Module, EvalSettings, list[Method]]] = []
        for model in models:
            base = loaded[model] if loaded is not None and model in loaded else get_bundled_model(model).load()
            for mode in modes:
                settings = _mode_settings(
                    model, mode, quick=quick, steps=steps, guidance=guidance, repeats=repeats, timer=timer
                )
                name = f"magcache_profile_{model}_{mode}.json"
                profile = calibrate_magcache(base, settings, path=out / name)
                files[f"magcache_profile_{model}_{mode}"] = name
                methods = our_methods(str(out / name), quick=quick, extra=extra)
                if peers:
                    methods += peer_methods(profile.data["curves"]["cond"], quick=quick)
                sweeps.append((model, mode, base, settings, methods))
        total = sum(evaluation_units(len(ms), s) for *_, s, ms in sweeps) + (1 if hook_overhead else 0)
        done = [0]

        def tick(desc: str) -> None:
            done[0] += 1
            if progress is not None:
                progress(desc, total)

        evaluations: dict[str, dict[str, Evaluation]] = {}
        for model, mode, base, settings, methods in sweeps:
            say(
                f"{model}, {mode}: {len(methods)} configurations, {settings.num_steps} steps, "
                f"{len(settings.labels)} images"
            )
            evaluations.setdefault(model, {})[mode] = evaluate(
                methods, settings, model=base, progress=_prefixed(f"{model}, {mode}: ", tick)
            )
    finally:
        logger.removeFilter(once)
        for handler in handlers:
            handler.removeFilter(once)
    all_verdicts = tuple(
        v
        for model, per_mode in evaluations.items()
        for mode, ev in per_mode.items()
        for v in verdicts(mode, ev, model=model)
    )
    cells: dict[Cell, Sequence[RunResult]] = {
        (m, d): ev.results for m, per_mode in evaluations.items() for d, ev in per_mode.items()
    }

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
        "models": list(models),
        "modes": list(modes),
        "steps": steps,
        "guidance_scale": guidance,
        "guidance_scales": {
            m: ev.settings.guidance_scale
            for m, per_mode in evaluations.items()
            for d, ev in per_mode.items()
            if d == "cfg"
        },
        "repeats": repeats,
        "timer": timer,
        "torch_threads": torch.get_num_threads(),
        "peers": peers,
        "extra_rows": [row[1] for row in extra],
        "hook_rounds": hook_rounds if hook_overhead else None,
        "hook_calls": hook_calls if hook_overhead else None,
        "quality_levels_db": list(QUALITY_LEVELS),
        "target_ratio": TARGET_RATIO,
        "target_efficiency": TARGET_EFFICIENCY,
        "transfer_target_ratio": TRANSFER_TARGET_RATIO,
        "psnr_tolerance_db": PSNR_TOLERANCE,
    }
    files["results"] = "bench.json"
    files["pareto_plot"] = "pareto.png"
    files["spread_plot"] = "spread.png"
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
        transfer=tuple(transfer_verdicts(cells)),
        spreads=tuple(psnr_spreads(cells)),
    )
    plot_pareto(report, out / "pareto.png")
    plot_spread(report, out / "spread.png")
    if hook_result is not None:
        (out / "hook_overhead.json").write_text(json.dumps(hook_result, indent=2) + "\n")
        plot_hook_overhead(hook_result, out / "hook_overhead.png")
    (out / "bench.json").write_text(json.dumps(report.as_dict(), indent=2, allow_nan=False) + "\n")
    return report
