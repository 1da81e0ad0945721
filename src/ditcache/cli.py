"""The ``ditcache`` command line.

Commands (``ditcache COMMAND --help`` for their options)::

    ditcache demo [--steps N] [--threshold X] [--seed S] [--repeats R]
    ditcache info

``demo`` accelerates a small random-weight diffusers ``FluxTransformer2DModel`` with TeaCache over a
flow-matching Euler loop: it runs the loop uncached, then cached, in the same process, and prints the steps
skipped, the measured speed-up and the error of the final latent against the uncached run. ``info`` lists the
models with a registered extractor and the TeaCache coefficient presets with their sources.

:func:`main` returns the exit status (0: success, 2: bad arguments) instead of exiting, so it can be called
from Python; the ``ditcache`` script and ``python -m ditcache`` exit with it.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import torch
from rich.console import Console
from rich.table import Table
from torch import nn

__all__ = ["DemoResult", "build_parser", "main", "run_demo"]

_LOG_LEVELS = ("debug", "info", "warning", "error")

# The demo model: a diffusers FluxTransformer2DModel with random weights, small enough for a few seconds on a
# CPU and large enough that the transformer blocks, not the hooks, dominate the time of a step.
_DEMO_MODEL: dict[str, Any] = {
    "patch_size": 1,
    "in_channels": 16,
    "num_layers": 2,
    "num_single_layers": 4,
    "attention_head_dim": 32,
    "num_attention_heads": 2,
    "joint_attention_dim": 32,
    "pooled_projection_dim": 32,
    "axes_dims_rope": (8, 12, 12),
}
_DEMO_LATENT_SIDE = 16  # 16 x 16 = 256 image tokens
_DEMO_TEXT_LEN = 16


# ------------------------------------------------------------------------------------------ argument types
def _int_at_least(low: int, high: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            allowed = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
            raise argparse.ArgumentTypeError(f"expected {allowed}, got {text!r}")
        return value

    return parse


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser: one sub-command per action (``demo``, ``info``)."""
    from . import __version__

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

    demo = commands.add_parser(
        "demo",
        help="accelerate a small random-weight Flux transformer with TeaCache and report speed-up and error",
        description=(
            "Run a flow-matching Euler loop on a small diffusers FluxTransformer2DModel with RANDOM weights "
            "(FLUX.1-dev TeaCache coefficients borrowed), uncached and then with TeaCache, in this process, "
            "and print the steps skipped, the measured speed-up and the error of the final latent."
        ),
    )
    demo.add_argument(
        "--steps",
        type=_int_at_least(2, 1000),
        default=28,
        help="denoising steps (2-1000, default: 28)",
    )
    demo.add_argument(
        "--threshold",
        type=_positive_float,
        default=0.6,
        help="TeaCache rel_l1_thresh: larger skips more (default: 0.6)",
    )
    demo.add_argument(
        "--seed",
        type=_int_at_least(0),
        default=0,
        help="seed of the weights and the inputs (default: 0)",
    )
    demo.add_argument(
        "--repeats",
        type=_int_at_least(1, 100),
        default=2,
        help="timed runs of each loop; the fastest counts (default: 2)",
    )
    demo.set_defaults(handler=_cmd_demo)

    info = commands.add_parser(
        "info",
        help="list the models with a registered extractor and the TeaCache presets",
        description="List the models with a registered extractor and the TeaCache coefficient presets.",
    )
    info.set_defaults(handler=_cmd_info)
    return parser


# ------------------------------------------------------------------------------------------ the demo
@attrs.frozen
class DemoResult:
    """What :func:`run_demo` measured."""

    steps: int
    threshold: float
    computed_steps: list[int]
    skipped_steps: list[int]
    uncached_seconds: float
    cached_seconds: float
    max_abs_error: float
    rel_l1_error: float

    @property
    def speedup(self) -> float:
        """Uncached time over cached time (the fastest of the repetitions of each)."""
        return self.uncached_seconds / self.cached_seconds if self.cached_seconds > 0 else math.inf


def _demo_model(seed: int) -> nn.Module:
    from diffusers import FluxTransformer2DModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model: nn.Module = FluxTransformer2DModel(**_DEMO_MODEL)
    model.eval()
    return model


def _demo_inputs(seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed + 1)
    side, text_len = _DEMO_LATENT_SIDE, _DEMO_TEXT_LEN
    ids = torch.zeros(side, side, 3)
    ids[..., 1] = torch.arange(side)[:, None]
    ids[..., 2] = torch.arange(side)[None, :]
    return {
        "latents": torch.randn(1, side * side, _DEMO_MODEL["in_channels"], generator=gen),
        "encoder_hidden_states": torch.randn(1, text_len, _DEMO_MODEL["joint_attention_dim"], generator=gen),
        "pooled_projections": torch.randn(1, _DEMO_MODEL["pooled_projection_dim"], generator=gen),
        "img_ids": ids.reshape(side * side, 3),
        "txt_ids": torch.zeros(text_len, 3),
    }


def _denoise(model: nn.Module, inputs: dict[str, torch.Tensor], steps: int) -> torch.Tensor:
    """Flow-matching Euler loop on a linear sigma schedule 1 -> 0, calling the model as Flux pipelines do."""
    sigmas = torch.linspace(1.0, 0.0, steps + 1)
    latents = inputs["latents"]
    with torch.inference_mode():
        for i in range(steps):
            velocity = model(
                hidden_states=latents,
                encoder_hidden_states=inputs["encoder_hidden_states"],
                pooled_projections=inputs["pooled_projections"],
                timestep=sigmas[i].expand(latents.shape[0]),
                img_ids=inputs["img_ids"],
                txt_ids=inputs["txt_ids"],
                return_dict=False,
            )[0]
            latents = latents + (sigmas[i + 1] - sigmas[i]) * velocity
    return latents


def _timed(fn: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def run_demo(steps: int = 28, threshold: float = 0.6, seed: int = 0, repeats: int = 2) -> DemoResult:
    """Run the demo loop uncached and with TeaCache; return the decisions, timings and errors.

    The uncached and cached runs alternate ``repeats`` times and the fastest of each counts, so a slow phase
    of a busy machine does not land on one side only. Every cached run is a fresh generation with a fresh
    TeaCache.
    The model has random weights, so the FLUX.1-dev coefficients are borrowed (a trained model gives a
    representative skip pattern; these numbers only show the mechanism at work).
    """
    from .metrics import rel_l1
    from .runtime import refresh, remove_cache
    from .teacache import TeaCacheConfig, apply_teacache_hook

    for name, value, low in (("steps", steps, 2), ("repeats", repeats, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")
    model = _demo_model(seed)
    inputs = _demo_inputs(seed)
    config = TeaCacheConfig(rel_l1_thresh=threshold, model="flux.1-dev")
    # Warm-up: first-call allocations and lazy initialisation stay out of the timing.
    _denoise(model, inputs, 2)
    uncached_s = cached_s = math.inf
    for _ in range(repeats):
        reference, seconds = _timed(lambda: _denoise(model, inputs, steps))
        uncached_s = min(uncached_s, seconds)
        cache = apply_teacache_hook(model, config)
        try:
            refresh(model, steps)  # a generation of `steps` steps: its last step is always computed
            cached, seconds = _timed(lambda: _denoise(model, inputs, steps))
            cached_s = min(cached_s, seconds)
            last = cache.stats()[-1]
        finally:
            remove_cache(model)  # the model is exactly as before: the next uncached run is truly uncached
    return DemoResult(
        steps=steps,
        threshold=threshold,
        computed_steps=last.computed_steps,
        skipped_steps=last.skipped_steps,
        uncached_seconds=uncached_s,
        cached_seconds=cached_s,
        max_abs_error=float((cached - reference).abs().max()),
        rel_l1_error=rel_l1(cached, reference),
    )


def _cmd_demo(args: argparse.Namespace, console: Console) -> int:
    double, single = _DEMO_MODEL["num_layers"], _DEMO_MODEL["num_single_layers"]
    console.print(
        "ditcache demo: TeaCache on a small diffusers FluxTransformer2DModel, [bold]random weights[/bold] "
        f"({double} double + {single} single blocks, {_DEMO_LATENT_SIDE**2} image tokens), "
        f"{args.steps} flow-matching Euler steps on {torch.get_num_threads()} CPU thread(s).",
        highlight=False,
    )
    result = run_demo(steps=args.steps, threshold=args.threshold, seed=args.seed, repeats=args.repeats)
    table = Table(title=f"TeaCache, rel_l1_thresh={result.threshold:g}", title_justify="left")
    table.add_column("measure")
    table.add_column("value", overflow="fold")
    table.add_row("steps computed / skipped", f"{len(result.computed_steps)} / {len(result.skipped_steps)}")
    table.add_row("skipped step indices", ", ".join(map(str, result.skipped_steps)) or "none")
    table.add_row("uncached time", f"{result.uncached_seconds * 1e3:.1f} ms")
    table.add_row("cached time", f"{result.cached_seconds * 1e3:.1f} ms")
    table.add_row("measured speed-up", f"{result.speedup:.2f}x")
    bound = result.steps / len(result.computed_steps)
    table.add_row("skipped-step bound (steps / computed)", f"{bound:.2f}x")
    table.add_row("max abs error (final latent)", f"{result.max_abs_error:.3e}")
    table.add_row("relative L1 error (final latent)", f"{result.rel_l1_error:.3e}")
    console.print(table)
    console.print(
        f"Timings: fastest of {args.repeats} alternating run(s) of each loop, in this process. "
        "The embeddings and the output head run on every step, so the speed-up is expected to stay "
        "under the bound. The weights are random and the FLUX.1-dev coefficients borrowed: the skip "
        "pattern only illustrates the mechanism.",
        highlight=False,
    )
    return 0


# ------------------------------------------------------------------------------------------ info
def _cmd_info(args: argparse.Namespace, console: Console) -> int:
    from . import __version__
    from .coefficients import TEACACHE_PRESETS
    from .extractors import registered_extractors

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
    return 0


# ------------------------------------------------------------------------------------------ entry point
def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); return the exit status.

    0 on success, 2 for bad arguments (argparse prints the usage and a message naming the argument).
    """
    from .log import configure_logging

    parser = build_parser()
    try:
        args = parser.parse_args(None if argv is None else list(argv))
    except SystemExit as exc:  # --help and --version exit 0; usage errors exit 2
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    configure_logging(args.log_level)
    console = Console(soft_wrap=False)
    handler: Callable[[argparse.Namespace, Console], int] = args.handler
    return handler(args, console)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
