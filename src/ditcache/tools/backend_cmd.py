"""``ditcache backend``: run a bundled model through a serving backend, as an engine would.

The same pair of options a serving engine passes (``--cache-backend NAME --cache-config JSON``, vLLM-Omni's
``cache_backend`` / ``cache_config``) selects one of :func:`ditcache.backends.selector.get_cache_backend`'s backends.
The command enables it once on the bundled model (an object with a ``.transformer``, as a pipeline), then, for each
request, refreshes it with the request's step count and samples, and compares with the uncached samples of the same
seeds: transformer calls computed, speed-up (CPU time, measured in the same run) and PSNR.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch
from rich.console import Console

from ditcache.tools.argtypes import int_in
from ditcache.tools.calibrate_cmd import parse_json_object
from ditcache.tools.evaluation.counting import BlockCounter
from ditcache.tools.output import fmt_psnr, result_table

__all__ = ["add_parser", "run_backend"]


def _json_object(text: str) -> dict[str, Any]:
    try:
        return parse_json_object(text, expected="a JSON object such as '{\"rel_l1_thresh\": 0.2}'")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_parser(commands: Any) -> None:
    """Register the ``backend`` sub-command."""
    from ditcache.backends.selector import SUPPORTED_BACKENDS
    from ditcache.bundled import BUNDLED_MODELS

    p = commands.add_parser(
        "backend",
        help="run a bundled model through a serving backend (--cache-backend NAME --cache-config JSON)",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    p.add_argument("--cache-backend", required=True, choices=sorted(SUPPORTED_BACKENDS), help="the backend to use")
    p.add_argument(
        "--cache-config", type=_json_object, default={}, help="the backend's settings as a JSON object (default: {})"
    )
    p.add_argument("--model", choices=sorted(BUNDLED_MODELS), default="digits", help="bundled model (default: digits)")
    p.add_argument(
        "--steps", type=int_in(2, 1000), nargs="+", default=[30, 50], help="step count of each request (default: 30 50)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the first request (default: 0)")
    p.set_defaults(handler=_cmd_backend)


def run_backend(
    backend_name: str, cache_config: dict[str, Any], model_name: str, steps: list[int], seed: int = 0
) -> list[dict[str, Any]]:
    """Enable the backend once, then serve one request per entry of ``steps``; one result dict per request."""
    from ditcache.backends.selector import get_cache_backend
    from ditcache.bundled import get_bundled_model
    from ditcache.core.metrics import psnr

    entry = get_bundled_model(model_name)
    model = entry.load()
    labels = list(entry.default_labels)
    backend = get_cache_backend(backend_name, cache_config)
    transformer = model.transformer
    assert isinstance(transformer, torch.nn.Module)
    results: list[dict[str, Any]] = []
    uncached: list[tuple[torch.Tensor, float]] = []
    for i, n in enumerate(steps):  # the references first, before any cache exists
        t0 = time.thread_time()
        images = entry.sample(model, labels, n, entry.default_guidance, seed + i)
        uncached.append((images, time.thread_time() - t0))
    if backend is not None:
        backend.enable(model)
    try:
        for i, n in enumerate(steps):
            if backend is not None:
                backend.refresh(model, n, verbose=False)
            with BlockCounter(transformer) as counter:
                t0 = time.thread_time()
                images = entry.sample(model, labels, n, entry.default_guidance, seed + i, refresh_cache=False)
                elapsed = time.thread_time() - t0
            reference, reference_time = uncached[i]
            calls = len(counter.calls)
            blocks_run = sum(blocks for blocks, _ in counter.calls)
            results.append(
                {
                    "request": i,
                    "steps": n,
                    "calls": calls,
                    "blocks_run_fraction": blocks_run / max(1, calls * counter.num_blocks),
                    "speedup": reference_time / elapsed if elapsed > 0 else float("inf"),
                    "psnr_db": psnr(images, reference, entry.data_range, cap=99.0),
                }
            )
    finally:
        disable = getattr(backend, "disable", None)
        if callable(disable):
            disable(model)
    return results


def _cmd_backend(args: argparse.Namespace, console: Console) -> int:
    results = run_backend(args.cache_backend, args.cache_config, args.model, list(args.steps), args.seed)
    table = result_table(
        f"[bold]{args.model} through the {args.cache_backend} backend[/bold]",
        ("request", "steps", "transformer calls", "blocks run", "speed-up (CPU)", "PSNR vs uncached"),
    )
    for r in results:
        table.add_row(
            str(r["request"]),
            str(r["steps"]),
            str(r["calls"]),
            f"{r['blocks_run_fraction']:.0%}",
            f"{r['speedup']:.2f}x",
            fmt_psnr(r["psnr_db"], " dB"),
        )
    console.print(table)
    return 0
