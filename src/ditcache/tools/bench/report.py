"""One bench run: the sweeps of every mode, the verdicts and the hook-overhead microbenchmark
(:func:`run_bench`), and what it measured (:class:`BenchReport`)."""

from __future__ import annotations

import datetime
import json
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import torch

from ditcache.bundled import DigitsDiT, load_digits_dit
from ditcache.tools.bench.sweeps import our_methods, peer_methods
from ditcache.tools.bench.verdicts import QUALITY_LEVELS, TARGET_EFFICIENCY, TARGET_RATIO, Verdict, verdicts
from ditcache.tools.evaluation import EvalSettings, Evaluation, Method, calibrate_magcache, evaluate, evaluation_units
from ditcache.tools.plots import plot_hook_overhead, plot_pareto

__all__ = ["DEFAULT_GUIDANCE", "MODES", "BenchReport", "run_bench"]

MODES = ("no-cfg", "cfg")
"""The two sampling modes: without classifier-free guidance, and with it (a separate uncond call per step)."""
DEFAULT_GUIDANCE = 3.0
"""Guidance scale of the ``cfg`` mode."""


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
