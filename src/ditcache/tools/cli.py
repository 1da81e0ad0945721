"""The ``ditcache`` command line.

Commands (``ditcache COMMAND --help`` for their options)::

    ditcache demo [--out DIR] [--steps N] [--guidance G | --no-cfg] [--labels 0,1,...] [--seed S] [--repeats R]
    ditcache bench --out DIR [--quick] [--mode both|no-cfg|cfg] [--steps N] [--repeats R] [--no-peers]
    ditcache info

``demo`` (:mod:`ditcache.tools.demo`) runs the bundled trained digits model uncached and with each cache, prints steps
and blocks computed, speed-ups and errors against the uncached samples, and writes sample and decision plots.
``bench`` (:mod:`ditcache.tools.bench`) sweeps ditcache's caches and the peers' (diffusers, cache-dit) on that model and
writes JSON results and plots. ``info`` lists the models with a registered extractor and the TeaCache coefficient
presets and the MagCache ratio presets with their sources.

:func:`main` returns the exit status (0: success, 2: bad arguments) instead of exiting, so it can be called
from Python; the ``ditcache`` script and ``python -m ditcache`` exit with it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from rich.console import Console
from rich.table import Table

__all__ = ["build_parser", "main"]

_LOG_LEVELS = ("debug", "info", "warning", "error")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser: one sub-command per action (``demo``, ``bench``, ``info``, ...)."""
    from ditcache.core.version import VERSION as __version__

    parser = argparse.ArgumentParser(
        prog="ditcache",
        description="Step caching for diffusion transformers (TeaCache), added with one line.",
    )
    parser.add_argument("--version", action="version", version=f"ditcache {__version__}")
    parser.add_argument(
        "--log-level",
        default="warning",
        type=str.lower,
        choices=_LOG_LEVELS,
        help="level of ditcache's log events on stderr (default: warning; info: a summary per generation)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    from ditcache.tools.bench.command import add_parser as add_bench_parser
    from ditcache.tools.demo import add_parser as add_demo_parser

    add_demo_parser(commands)
    add_bench_parser(commands)

    info = commands.add_parser(
        "info",
        help="list the models with a registered extractor and the TeaCache and MagCache presets",
        description=(
            "List the models with a registered extractor, the TeaCache coefficient presets and the MagCache "
            "magnitude-ratio presets, with their sources."
        ),
    )
    info.set_defaults(handler=_cmd_info)

    from ditcache.tools.calibrate_cmd import add_parser as add_calibrate_parser

    add_calibrate_parser(commands)

    from ditcache.tools.backend_cmd import add_parser as add_backend_parser

    add_backend_parser(commands)
    return parser


# ------------------------------------------------------------------------------------------ info
def _cmd_info(args: argparse.Namespace, console: Console) -> int:
    from ditcache.core.extractor import registered_extractors
    from ditcache.core.version import VERSION as __version__
    from ditcache.presets.teacache import TEACACHE_PRESETS

    console.print(f"ditcache {__version__}", highlight=False)
    console.print()
    console.print("[bold]Models with a registered extractor[/bold]")
    for name in registered_extractors():
        console.print(f"  {name}", highlight=False)
    console.print()

    presets = Table(title="[bold]TeaCache coefficient presets[/bold]", title_justify="left", show_lines=True)
    presets.add_column("preset", no_wrap=True)
    presets.add_column("settings and source")
    for key, preset in TEACACHE_PRESETS.items():
        settings = (
            f"indicator: {preset.indicator or 'modulated input'}; warm-up steps: {preset.warmup_steps}; "
            f"last step forced: {'yes' if preset.force_last_step else 'no'}"
        )
        thresholds = ", ".join(f"{t:g}" for t in preset.recommended_thresholds) or "none published"
        presets.add_row(key, f"{settings}\nrecommended thresholds: {thresholds}\nsource: {preset.source}")
    console.print(presets, highlight=False)
    console.print()
    _print_magcache_presets(console)
    return 0


def _print_magcache_presets(console: Console) -> None:
    from ditcache.presets.magcache import MAG_RATIO_PRESETS

    console.print("[bold]MagCache magnitude-ratio presets[/bold]")
    for key, preset in MAG_RATIO_PRESETS.items():
        curves = "cond and uncond (interleaved)" if preset.interleaved else "one curve"
        console.print(f"  {key}", highlight=False)
        console.print(
            f"    {preset.num_steps} steps, {curves}; threshold {preset.threshold:g}, at most "
            f"{preset.max_skip_steps} skips in a row, retention {preset.retention_ratio:g}",
            highlight=False,
            soft_wrap=True,
        )
        console.print(f"    source: {preset.source}", highlight=False, soft_wrap=True)


# ------------------------------------------------------------------------------------------ entry point
def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); return the exit status.

    0 on success, 2 for bad arguments (argparse prints the usage and a message naming the argument).
    """
    from ditcache.core.log import configure_logging

    parser = build_parser()
    try:
        args = parser.parse_args(None if argv is None else list(argv))
    except SystemExit as exc:  # --help and --version exit 0; usage errors exit 2
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    configure_logging(args.log_level)
    # Piped output (logs, CI) gets room for the result tables; a terminal keeps its own width.
    console = Console(soft_wrap=False, width=None if sys.stdout.isatty() else 120)
    handler: Callable[[argparse.Namespace, Console], int] = args.handler
    return handler(args, console)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
