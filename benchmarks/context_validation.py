"""Cost of ditcache's per-call bookkeeping against one forward of a small Flux transformer.

What ditcache adds to every transformer call, besides the cache decision itself:

* ``validate``: :meth:`CacheContext.validate` (types, batch sizes, devices);
* ``stamp``: the runtime's stamping of the context (CFG branch, :class:`StepClock` step / generation, ``evolve``);
* ``bookkeeping``: both, as the runtime runs them for one call.

They are compared with one ``forward`` of a small random ``FluxTransformer2DModel`` (plain, unhooked). For
reference the benchmark also times the extractor's preprocessing (which replaces the model's own, it is not extra
work) and a full forward through the runtime with a pass-through cache that always computes (everything ditcache
adds: registry, extractor split, bookkeeping, middleware chain).

Timing as in ``hook_overhead.py``: ``time.thread_time_ns``, interleaved rounds in shuffled order, the garbage
collector off, min and median over rounds. Run::

    python benchmarks/context_validation.py --out results/

It writes ``context_validation.json`` into the directory and prints a table.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import diffusers
import torch
from diffusers import FluxTransformer2DModel

from ditcache import CacheContext, apply_cache
from ditcache.core import CacheMiddleware
from ditcache.core.cache import CallNextBlocks
from ditcache.core.context import BlockOutput
from ditcache.core.extractor import get_extractor
from ditcache.core.runtime import CacheRuntime

FLUX_SMALL: dict[str, Any] = {
    "patch_size": 1,
    "in_channels": 16,
    "num_layers": 2,
    "num_single_layers": 2,
    "attention_head_dim": 16,
    "num_attention_heads": 2,
    "joint_attention_dim": 32,
    "pooled_projection_dim": 32,
    "axes_dims_rope": (4, 6, 6),
}


class PassThrough(CacheMiddleware[None]):
    """A cache that always computes: isolates what the runtime costs."""

    name = "passthrough"

    def new_state(self) -> None:
        return None

    def process(self, ctx: CacheContext, call_next: CallNextBlocks) -> BlockOutput:
        return call_next(ctx)


def make_model(seed: int) -> FluxTransformer2DModel:
    """A small random Flux transformer in eval mode."""
    torch.manual_seed(seed)
    return FluxTransformer2DModel(**FLUX_SMALL).eval()


def make_calls(model: FluxTransformer2DModel, size: int, text_len: int, steps: int, seed: int) -> list[dict[str, Any]]:
    """The keyword arguments of ``steps`` denoising calls (decreasing timestep, the same prompt tensors)."""
    cfg = model.config
    gen = torch.Generator().manual_seed(seed)
    ids = torch.zeros(size, size, 3)
    ids[..., 1] = torch.arange(size)[:, None]
    ids[..., 2] = torch.arange(size)[None, :]
    base = {
        "hidden_states": torch.randn(1, size * size, cfg.in_channels, generator=gen),
        "encoder_hidden_states": torch.randn(1, text_len, cfg.joint_attention_dim, generator=gen),
        "pooled_projections": torch.randn(1, cfg.pooled_projection_dim, generator=gen),
        "img_ids": ids.reshape(size * size, 3),
        "txt_ids": torch.zeros(text_len, 3),
        "return_dict": False,
    }
    return [{**base, "timestep": torch.tensor([1.0 - i / steps])} for i in range(steps)]


def _timer(fn: Callable[[int], Any], calls: int) -> float:
    """CPU time of this thread per call of ``fn(i)``, in microseconds."""
    t0 = time.thread_time_ns()
    for i in range(calls):
        fn(i)
    return (time.thread_time_ns() - t0) / calls / 1000.0


def run(rounds: int, micro_calls: int, forward_calls: int, size: int, text_len: int, seed: int) -> dict[str, Any]:
    """Measure every item; return the JSON-ready result."""
    torch.set_num_threads(1)
    model = make_model(seed)
    hooked = copy.deepcopy(model)
    steps = 20
    calls = make_calls(model, size, text_len, steps, seed)
    extractor = get_extractor(model)
    runtime = CacheRuntime(model, extractor)  # not installed: only its stamping is timed here
    apply_cache(hooked, PassThrough(None))

    with torch.no_grad():
        contexts = [extractor.extract(model, (), dict(kw)) for kw in calls]
        ref = model(**calls[0])[0]
        out = hooked(**calls[0])[0]
        torch.testing.assert_close(out, ref)  # the runtime path computes the same thing

        def validate(i: int) -> None:
            contexts[i % steps].validate()

        def stamp(i: int) -> None:
            runtime._stamp(contexts[i % steps], None, runtime.effective_reducer())

        def bookkeeping(i: int) -> None:
            ctx = contexts[i % steps]
            ctx.validate()
            runtime._stamp(ctx, None, runtime.effective_reducer())

        def extract(i: int) -> None:
            extractor.extract(model, (), dict(calls[i % steps]))

        def forward(i: int) -> None:
            model(**calls[i % steps])

        def forward_hooked(i: int) -> None:
            hooked(**calls[i % steps])

        items: dict[str, tuple[Callable[[int], Any], int]] = {
            "validate": (validate, micro_calls),
            "stamp": (stamp, micro_calls),
            "bookkeeping": (bookkeeping, micro_calls),
            "extract": (extract, forward_calls),
            "forward": (forward, forward_calls),
            "forward_hooked_passthrough": (forward_hooked, forward_calls),
        }
        for fn, n in items.values():  # warm up
            _timer(fn, min(n, 50))
        samples: dict[str, list[float]] = {name: [] for name in items}
        rng = random.Random(seed)
        order = list(items)
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            for _ in range(rounds):
                rng.shuffle(order)
                for name in order:
                    fn, n = items[name]
                    samples[name].append(_timer(fn, n))
        finally:
            if gc_was_enabled:
                gc.enable()

    table = {
        name: {"min_us": round(min(s), 3), "median_us": round(statistics.median(s), 3)} for name, s in samples.items()
    }

    def ratio(a: str, b: str, key: str) -> float:
        return round(table[a][key] / table[b][key], 5)

    fwd_min, fwd_med = table["forward"]["min_us"], table["forward"]["median_us"]
    hooked_min, hooked_med = (
        table["forward_hooked_passthrough"]["min_us"],
        table["forward_hooked_passthrough"]["median_us"],
    )
    return {
        "benchmark": "context_validation",
        "unit": "microseconds per call",
        "timer": "time.thread_time_ns",
        "model": {
            "class": "FluxTransformer2DModel",
            "config": {k: list(v) if isinstance(v, tuple) else v for k, v in FLUX_SMALL.items()},
            "image_tokens": size * size,
            "text_tokens": text_len,
            "batch": 1,
            "dtype": "float32",
            "torch_threads": 1,
        },
        "rounds": rounds,
        "calls_per_round": {"micro": micro_calls, "forward": forward_calls},
        "seed": seed,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
        },
        "machine": {"platform": platform.platform(), "processor": platform.processor()},
        "items": table,
        "ratios": {
            "validate/forward_min": ratio("validate", "forward", "min_us"),
            "stamp/forward_min": ratio("stamp", "forward", "min_us"),
            "bookkeeping/forward_min": ratio("bookkeeping", "forward", "min_us"),
            "bookkeeping/forward_median": ratio("bookkeeping", "forward", "median_us"),
        },
        "passthrough_overhead": {
            "min_us": round(hooked_min - fwd_min, 3),
            "median_us": round(hooked_med - fwd_med, 3),
            "relative_min": round((hooked_min - fwd_min) / fwd_min, 5),
            "relative_median": round((hooked_med - fwd_med) / fwd_med, 5),
        },
    }


def print_table(result: dict[str, Any]) -> None:
    """A short human-readable summary."""
    print(f"{'item':<30}{'min µs':>12}{'median µs':>12}")
    for name, row in result["items"].items():
        print(f"{name:<30}{row['min_us']:12.2f}{row['median_us']:12.2f}")
    print()
    for key, value in result["ratios"].items():
        print(f"  {key:<32}{value:.5f}  ({value * 100:.3f} %)")
    po = result["passthrough_overhead"]
    print(
        f"  full runtime path, always computing: +{po['median_us']:.1f} µs median "
        f"({po['relative_median'] * 100:.2f} % of a forward), +{po['min_us']:.1f} µs min"
    )


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="directory for context_validation.json")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds (default 9)")
    parser.add_argument("--micro-calls", type=int, default=2000, help="calls per round of the bookkeeping items")
    parser.add_argument("--forward-calls", type=int, default=20, help="calls per round of the forwards")
    parser.add_argument("--size", type=int, default=16, help="latent height = width in tokens (default 16)")
    parser.add_argument("--text-len", type=int, default=16, help="text tokens (default 16)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if min(args.rounds, args.micro_calls, args.forward_calls, args.size, args.text_len) < 1:
        parser.error("--rounds, --micro-calls, --forward-calls, --size and --text-len must be >= 1")
    result = run(args.rounds, args.micro_calls, args.forward_calls, args.size, args.text_len, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "context_validation.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
