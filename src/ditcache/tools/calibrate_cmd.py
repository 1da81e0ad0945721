"""``ditcache calibrate``: the command line of :mod:`ditcache.calibration` (argparse options, rich tables and
progress, exit statuses).

Run a model uncached for a few generations, fit TeaCache's rescaling polynomial per CFG branch and measure MagCache's
magnitude ratios, then write ``NAME.teacache.json`` and ``NAME.magcache.json``. ``--model package.module:factory``
is imported with the current directory first on the module path (as ``python -m`` does), so a module of the project
one works in is found. Without ``--name`` and ``--out`` the profiles go to the profile directory under the target's
name; a name that a profile shipped with ditcache has (``digits-dit``) is refused there, since the new files would
hide the shipped ones: pass ``--name`` (the same name, deliberately, or another) or ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from ditcache.calibration import (
    DEFAULT_TARGET,
    METHODS,
    BorrowedComparison,
    CalibrationError,
    CalibrationResult,
    CalibrationTarget,
    CoefficientSearch,
    SearchCandidate,
    SearchSettings,
    TradeoffPoint,
    calibrate,
    evaluate_teacache,
    load_target,
)
from ditcache.calibration.run import shipped_profiles_hidden
from ditcache.profiles import ProfileError, profile_dir, profile_path
from ditcache.tools.argtypes import float_list, int_in, number_at_least
from ditcache.tools.output import check_output_dir, result_table

__all__ = ["add_parser", "parse_json_object"]

_steps_arg = int_in(2, 10000)
_count_arg = int_in(1, 10000)
_seed_arg = int_in(0, 2**63 - 1)
_cfg_arg = number_at_least(0.0)
_thresholds_arg = float_list(lambda v: v > 0, "> 0")
_fractions_arg = float_list(lambda v: 0 < v < 1, "in (0, 1)")


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Add the ``calibrate`` sub-command to the ``ditcache`` sub-parsers ``commands``; returns its parser."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "calibrate",
        help="fit TeaCache coefficients and MagCache ratios for a model and write them as profiles",
        description=(
            "Run a model uncached for a few generations, fit TeaCache's rescaling polynomial per CFG branch "
            "(x: relative L1 change of the modulated input between steps, y: the model output's) and measure "
            "MagCache's magnitude ratios, then write NAME.teacache.json and NAME.magcache.json. With --method "
            "search, TeaCache's polynomial is instead chosen among a few candidates by running TeaCache with each "
            "and measuring quality against the uncached outputs. Load them with TeaCacheConfig(profile=NAME) / "
            "MagCacheConfig(profile=NAME). Without --model: the bundled digits model."
        ),
    )
    parser.add_argument(
        "--model",
        metavar="IMPORT_PATH",
        default=None,
        help=f"'package.module:factory' returning a CalibrationTarget (default: {DEFAULT_TARGET})",
    )
    parser.add_argument(
        "--config",
        metavar="JSON",
        default=None,
        help="keyword arguments of the factory as a JSON object, or @FILE to read them from a file",
    )
    parser.add_argument("--steps", type=_steps_arg, default=50, help="denoising steps per generation (default: 50)")
    parser.add_argument("--samples", type=_count_arg, default=4, help="generations to record (default: 4)")
    parser.add_argument(
        "--cfg",
        metavar="SCALE",
        type=_cfg_arg,
        default=None,
        help="classifier-free guidance scale, passed to the factory as guidance_scale (bundled model default: 3.0)",
    )
    parser.add_argument("--seed", type=_seed_arg, default=0, help="seed of the first generation (default: 0)")
    parser.add_argument(
        "--name",
        default=None,
        help="profile name (default: the target's, 'digits-dit' for the bundled model; a default name that a "
        "shipped profile has is refused in the profile directory, where it would hide the shipped one: give the "
        "name explicitly to replace it there)",
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        default=None,
        help="directory to write the profiles to (default: the profile directory, $DITCACHE_PROFILE_DIR or "
        "~/.cache/ditcache/profiles, where names are looked up)",
    )
    parser.add_argument(
        "--method",
        choices=METHODS,
        default="regression",
        help="how TeaCache's coefficients are chosen: 'regression' fits the output change on the indicator change "
        "(numpy.polyfit, per branch); 'search' runs TeaCache with candidate polynomials and keeps the one with the "
        "best quality at equal work (default: regression)",
    )
    parser.add_argument(
        "--search-budget",
        metavar="N",
        type=_count_arg,
        default=SearchSettings().budget,
        help=f"--method search: candidate polynomials evaluated (default: {SearchSettings().budget})",
    )
    parser.add_argument(
        "--search-samples",
        metavar="K",
        type=_count_arg,
        default=SearchSettings().samples,
        help="--method search: how many calibration seeds (the first ones) the candidates are judged on, at most "
        f"--samples (default: {SearchSettings().samples})",
    )
    parser.add_argument(
        "--search-fractions",
        metavar="FRACTIONS",
        type=_fractions_arg,
        default=list(SearchSettings().fractions),
        help="--method search: computed fractions the objective averages the PSNR over (default: "
        f"{','.join(f'{f:g}' for f in SearchSettings().fractions)})",
    )
    parser.add_argument(
        "--no-compare",
        action="store_true",
        help="--method regression: skip measuring the fit against the preset coefficients the model would borrow "
        "(by default both run on the first --search-samples seeds at --search-fractions, with a warning when the "
        "fit caches worse)",
    )
    parser.add_argument(
        "--evaluate",
        metavar="THRESHOLDS",
        type=_thresholds_arg,
        default=None,
        help="after calibrating, compare the calibrated coefficients with the preset the model would borrow: "
        "computed-step fraction and PSNR against uncached outputs at these comma-separated thresholds (with "
        "--method search the calibrated profile runs at the thresholds of its own threshold table)",
    )
    parser.add_argument(
        "--eval-samples",
        type=_count_arg,
        default=4,
        help="generations per threshold for --evaluate, seeds after the calibration ones (default: 4)",
    )
    parser.set_defaults(handler=_cmd_calibrate, calibrate_parser=parser)
    return parser


def parse_json_object(text: str, source: str = "", expected: str = "a JSON object") -> dict[str, Any]:
    """``text`` parsed as a JSON object; ValueError naming ``source`` (default: the text itself) and ``expected``
    when it is not valid JSON or not an object."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{source or repr(text)} is not valid JSON: {exc}; expected {expected}") from None
    if not isinstance(value, dict):
        raise ValueError(f"expected {expected}, got {type(value).__name__} {text!r}")
    return value


def _parse_config(text: str | None) -> dict[str, Any]:
    if text is None:
        return {}
    source = "--config"
    if text.startswith("@"):
        path = Path(text[1:]).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise CalibrationError("config", f"cannot read {path}: {exc.strerror or exc}") from None
        source = str(path)
    try:
        return parse_json_object(text, source, "a JSON object of keyword arguments for the factory")
    except ValueError as exc:
        raise CalibrationError("config", str(exc)) from None


def _writable_dir(text: str | None) -> Path:
    directory = profile_dir() if text is None else Path(text).expanduser()
    problem = check_output_dir(directory)
    if problem is not None:
        raise CalibrationError("out", f"cannot write to {directory}: {problem}")
    return directory


def _check_name(name: str) -> str:
    if any(c in name for c in "/\\") or name.endswith(".json"):
        raise CalibrationError("name", f"expected a profile name, not a path, got {name!r}")
    try:
        profile_path(name)
    except ProfileError as exc:
        raise CalibrationError("name", str(exc).removeprefix("profile: ")) from None
    return name


def _fmt_coefficients(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:.6g}" for v in values) + "]"


def _print_summary(console: Any, result: CalibrationResult, paths: Mapping[str, Path], out: Path) -> None:
    kept = " (kept under data.regression)" if result.search is not None else ""
    tea = result_table(
        f"[bold]TeaCache fit[/bold] (y = poly(x), numpy.polyfit){kept}",
        ("branch", "points", "R^2", "x range", "coefficients [c4, c3, c2, c1, c0]"),
        fold=True,
    )
    for role, fit in result.fits.items():
        tea.add_row(
            role,
            str(fit.n),
            f"{fit.r2:.4f}",
            f"{fit.x_range[0]:.4g} - {fit.x_range[1]:.4g}",
            _fmt_coefficients(fit.teacache_coefficients),
        )
    console.print(tea, highlight=False)
    if result.fits["pooled"].r2 < 0.5 and result.search is None:
        console.print(
            f"note: R^2 {result.fits['pooled'].r2:.2f}: the indicator explains little of the output's change; "
            "compare the trade-off with --evaluate before relying on these coefficients",
            highlight=False,
        )
    if result.search is not None:
        _print_search(console, result.search)
    if result.magcache is not None:
        mag = result_table(
            "[bold]MagCache ratios[/bold] (mean over the samples)",
            ("branch", "ratios per step (padding 1.0 first)"),
            fold=True,
        )
        for role, curve in result.magcache.data["curves"].items():
            mag.add_row(role, ", ".join(f"{v:.4f}" for v in curve))
        console.print(mag, highlight=False)
    for kind, path in paths.items():
        console.print(f"wrote {kind} profile: {path}", highlight=False, soft_wrap=True)
    ref = result.name if out.resolve() == profile_dir().expanduser().resolve() else None
    tea_ref = repr(ref) if ref else repr(str(paths["teacache"]))
    thresh = "..."
    if result.search is not None:
        fraction = result.search.settings.fractions[len(result.search.settings.fractions) // 2]
        thresh = f"{result.search.threshold_for(fraction):g}"
    console.print(
        f"use it: ditcache.TeaCacheConfig(profile={tea_ref}, rel_l1_thresh={thresh})", highlight=False, soft_wrap=True
    )
    if "magcache" in paths:
        mag_ref = repr(ref) if ref else repr(str(paths["magcache"]))
        console.print(
            f"        ditcache.MagCacheConfig(profile={mag_ref}, threshold=...)", highlight=False, soft_wrap=True
        )


def _print_search(console: Any, found: CoefficientSearch) -> None:
    fractions = found.settings.fractions
    seeds = f"seeds {found.seeds[0]}-{found.seeds[-1]}" if len(found.seeds) > 1 else f"seed {found.seeds[0]}"
    table = result_table(
        f"[bold]TeaCache coefficient search[/bold] (PSNR in dB against uncached outputs, {seeds})",
        ("candidate", *(f"@ {f:g}" for f in fractions), "objective", "runs"),
        fold=True,
    )
    for c in sorted(found.candidates, key=lambda c: -c.objective):
        mark = " (chosen)" if c is found.chosen else ""
        table.add_row(
            f"{c.label}{mark}",
            *(f"{v:.2f}" for v in c.psnr_at),
            f"{c.objective:.3f}{' *' if c.extrapolated else ''}",
            str(len(c.runs)),
        )
    console.print(table, highlight=False)
    if any(c.extrapolated for c in found.candidates):
        console.print("* a target fraction lies outside the candidate's measured runs: extrapolated", highlight=False)
    console.print(
        f"chosen: {found.chosen.label}, coefficients {_fmt_coefficients(found.coefficients)}", highlight=False
    )
    thresholds = result_table(
        "[bold]Threshold table[/bold] of the chosen coefficients",
        ("threshold", "computed fraction", "PSNR (dB)", "worst PSNR (dB)"),
    )
    for p in found.thresholds:
        thresholds.add_row(f"{p.threshold:g}", f"{p.computed_fraction:.3f}", f"{p.psnr:.2f}", f"{p.psnr_min:.2f}")
    console.print(thresholds, highlight=False)


def _print_tradeoff(console: Any, points: Sequence[TradeoffPoint], title: str) -> None:
    table = result_table(title, ("coefficients", "threshold", "computed fraction", "PSNR (dB)", "worst PSNR (dB)"))
    for p in points:
        table.add_row(p.label, f"{p.threshold:g}", f"{p.computed_fraction:.3f}", f"{p.psnr:.2f}", f"{p.psnr_min:.2f}")
    console.print(table, highlight=False)


def _print_comparison(console: Any, found: BorrowedComparison) -> None:
    seeds = f"seeds {found.seeds[0]}-{found.seeds[-1]}" if len(found.seeds) > 1 else f"seed {found.seeds[0]}"
    fractions = ", ".join(f"{f:g}" for f in found.fractions)
    console.print(
        f"compared with the borrowed preset {found.preset} ({seeds}, mean PSNR at computed fractions {fractions}): "
        f"fitted {found.fitted.objective:.2f} dB, borrowed {found.borrowed.objective:.2f} dB",
        highlight=False,
        soft_wrap=True,
    )
    if found.worse:
        console.print(
            f"[yellow]warning: the fitted coefficients cache worse than those of the preset {found.preset} they "
            f"would replace ({-found.margin:.2f} dB lower); use --method search, or keep the preset "
            f"(TeaCacheConfig(model={found.preset!r}))[/yellow]",
            highlight=False,
            soft_wrap=True,
        )


def _error(args: argparse.Namespace, exc: CalibrationError) -> int:
    parser: argparse.ArgumentParser = args.calibrate_parser
    parser.print_usage(sys.stderr)
    print(f"{parser.prog}: error: --{exc.argument}: {exc.message}", file=sys.stderr)
    return 2


def _run_calibration(
    console: Any, target: CalibrationTarget, args: argparse.Namespace, settings: SearchSettings
) -> CalibrationResult:
    """:func:`calibrate` with a rich progress display: the uncached samples, then the search's candidates."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        sampling = progress.add_task("uncached samples", total=args.samples)
        searching = None
        if args.method == "search":
            searching = progress.add_task(f"search ({settings.samples} seed(s))", total=settings.budget, start=False)

        def on_sample(k: int, s: int, seconds: float) -> None:
            progress.console.print(f"  sample {k + 1}/{args.samples} (seed {s}): {seconds:.2f} s", highlight=False)
            progress.advance(sampling)
            if searching is not None and k + 1 == args.samples:
                progress.start_task(searching)

        def on_candidate(index: int, budget: int, candidate: SearchCandidate) -> None:
            at = ", ".join(f"{v:.2f}" for v in candidate.psnr_at)
            progress.console.print(
                f"  candidate {index}/{budget} {candidate.label}: PSNR {at} dB at computed fractions "
                f"{', '.join(f'{f:g}' for f in settings.fractions)} (objective {candidate.objective:.3f})",
                highlight=False,
            )
            if searching is not None:
                progress.advance(searching)

        return calibrate(
            target,
            num_steps=args.steps,
            samples=args.samples,
            seed=args.seed,
            on_sample=on_sample,
            method=args.method,
            search=settings,
            on_candidate=on_candidate,
            compare=not args.no_compare,
        )


def _cmd_calibrate(args: argparse.Namespace, console: Any) -> int:
    from ditcache.caches.teacache import TeaCacheConfig
    from ditcache.presets.teacache import infer_teacache_model

    try:
        config = _parse_config(args.config)
        if args.cfg is not None:
            if "guidance_scale" in config and config["guidance_scale"] != args.cfg:
                raise CalibrationError(
                    "cfg", f"{args.cfg:g} conflicts with guidance_scale={config['guidance_scale']!r} in --config"
                )
            config["guidance_scale"] = args.cfg
        name = _check_name(args.name) if args.name is not None else None
        out = _writable_dir(args.out)
        try:
            target = load_target(args.model, config, directory=Path.cwd())
        except CalibrationError as exc:
            if exc.argument == "config" and args.cfg is not None and "guidance_scale" in exc.message:
                raise CalibrationError("cfg", f"the factory does not accept guidance_scale ({exc.message})") from None
            raise
        if args.method == "search" and args.search_samples > args.samples:
            raise CalibrationError(
                "search-samples",
                f"{args.search_samples} exceeds --samples ({args.samples}): the candidates are judged on "
                "calibration seeds",
            )
    except CalibrationError as exc:
        return _error(args, exc)
    if name is not None:
        target = attrs.evolve(target, name=name)
    hidden = shipped_profiles_hidden(target.profile_name, out)
    if hidden and name is None:
        return _error(
            args,
            CalibrationError(
                "name",
                f"{target.profile_name!r} is the name of a profile shipped with ditcache; writing it to the profile "
                f"directory {out} would hide the shipped one from TeaCacheConfig(profile={target.profile_name!r}). "
                f"Pass --name NAME to write under another name (--name {target.profile_name} replaces the shipped "
                "one deliberately), or --out DIR to write elsewhere",
            ),
        )
    console.print(
        f"ditcache calibrate: {target.profile_name} ({type(target.transformer).__name__}), {args.steps} steps x "
        f"{args.samples} sample(s), seeds {args.seed}-{args.seed + args.samples - 1}, uncached",
        highlight=False,
    )

    settings = SearchSettings(budget=args.search_budget, samples=args.search_samples, fractions=args.search_fractions)
    try:
        result = _run_calibration(console, target, args, settings)
    except TypeError as exc:  # --method search: run() returned no tensor to compare
        if "target.run" not in str(exc):
            raise
        return _error(args, CalibrationError("method", str(exc)))
    paths = result.save(out)
    _print_summary(console, result, paths, out)
    if hidden:
        console.print(
            f"note: the profile directory now holds {target.profile_name!r}, which hides the shipped profile of that "
            f"name ({', '.join(str(p) for p in hidden.values())}); delete the written files to use it again",
            highlight=False,
            soft_wrap=True,
        )
    if result.comparison is not None:
        _print_comparison(console, result.comparison)
    if args.evaluate:
        configs: list[tuple[str, Any]] = []
        try:
            preset, _ = infer_teacache_model(target.transformer)
        except ValueError:
            preset = None
        for t in args.evaluate:
            if preset is not None:
                configs.append((f"borrowed {preset}", TeaCacheConfig(rel_l1_thresh=t, model=preset)))
        own = [p.threshold for p in result.search.thresholds] if result.search is not None else args.evaluate
        for t in own:
            configs.append(("calibrated", TeaCacheConfig(rel_l1_thresh=t, profile=paths["teacache"])))
        first = args.seed + args.samples
        seeds = list(range(first, first + args.eval_samples))
        console.print(f"evaluating on seeds {seeds[0]}-{seeds[-1]} (held out from calibration) ...", highlight=False)
        try:
            points = evaluate_teacache(target, configs, num_steps=args.steps, seeds=seeds)
        except TypeError as exc:  # run() returned no tensor: the profiles are written, the comparison impossible
            return _error(args, CalibrationError("evaluate", str(exc)))
        _print_tradeoff(
            console, points, f"[bold]TeaCache trade-off[/bold], {args.steps} steps, PSNR against uncached outputs"
        )
    return 0
