"""Per-call cost of forward hooks: ditcache's HookRegistry against diffusers' HookRegistry and torch's own hooks.

Every variant wraps its own ``nn.Linear(8, 8)`` (same weights) and is called on one ``(1, 8)`` input under
``torch.no_grad()``. A *round* times ``calls`` consecutive calls of every variant, in a shuffled order, with
``time.thread_time_ns`` (CPU time of this thread, so other processes on a shared machine add little noise) and the
garbage collector off. The per-call time of a variant is summarised by the min and the median over ``rounds``
rounds; its overhead is that minus the plain module's, and the per-hook overhead is the least-squares slope of the
time against the number of stacked hooks (0, 1, 2, 4); the cost of each hook after the first is
``(t[4 hooks] - t[1 hook]) / 3`` and the first hook's is ``t[1 hook] - t[plain]`` (it includes any fixed cost of
entering the hooked forward).

:func:`run` measures and returns a JSON-ready dict; :func:`print_table` prints it. ``ditcache bench`` and the script
``benchmarks/hook_overhead.py`` both use them.
"""

from __future__ import annotations

import gc
import platform
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ditcache.core.hooks import CallNext, ForwardCall, ForwardHook, HookRegistry

try:
    import diffusers
    from diffusers.hooks.hooks import HookRegistry as DiffusersRegistry
    from diffusers.hooks.hooks import ModelHook
except ImportError:  # pragma: no cover - diffusers is a dependency, but keep the benchmark usable without it
    diffusers = None

__all__ = ["HOOK_COUNTS", "NoopForwardHook", "build_variants", "noop_middleware", "print_table", "run"]

HOOK_COUNTS = (1, 2, 4)


# ---------------------------------------------------------------------------------------------- no-op hooks
def noop_middleware(call: ForwardCall, call_next: CallNext) -> Any:
    """A plain-function middleware that does nothing but call the rest of the stack."""
    return call_next(call)


class NoopForwardHook(ForwardHook):
    """A ForwardHook whose pre_forward and post_forward run and change nothing."""

    def pre_forward(
        self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Pass the arguments through unchanged."""
        return args, kwargs

    def post_forward(self, module: nn.Module, output: Any) -> Any:
        """Pass the output through unchanged."""
        return output


if diffusers is not None:

    class NoopPrePostHook(ModelHook):  # type: ignore[misc]
        """A diffusers ModelHook with no-op pre_forward / post_forward."""

        def pre_forward(self, module: nn.Module, *args: Any, **kwargs: Any) -> Any:
            """Pass the arguments through unchanged."""
            return args, kwargs

        def post_forward(self, module: nn.Module, output: Any) -> Any:
            """Pass the output through unchanged."""
            return output

    class NoopNewForwardHook(ModelHook):  # type: ignore[misc]
        """A diffusers ModelHook that replaces the call (``new_forward``), as diffusers' cache hooks do."""

        def new_forward(self, module: nn.Module, *args: Any, **kwargs: Any) -> Any:
            """Call the wrapped forward."""
            return self.fn_ref.original_forward(*args, **kwargs)


def _torch_pre_hook(module: nn.Module, args: tuple[Any, ...]) -> None:
    return None


def _torch_post_hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
    return None


# ---------------------------------------------------------------------------------------------- variants
def build_variants(seed: int = 0) -> dict[str, tuple[str, int, nn.Module]]:
    """Name -> (family, number of hooks, module). Every module has the same weights."""
    torch.manual_seed(seed)
    base = nn.Linear(8, 8)

    def fresh() -> nn.Linear:
        m = nn.Linear(8, 8)
        m.load_state_dict(base.state_dict())
        return m

    variants: dict[str, tuple[str, int, nn.Module]] = {"plain": ("plain", 0, fresh())}
    for k in HOOK_COUNTS:
        m = fresh()
        reg = HookRegistry.get_or_create(m)
        for i in range(k):
            reg.register(f"noop{i}", noop_middleware)
        variants[f"ours_function_x{k}"] = ("ours_function", k, m)

        m = fresh()
        reg = HookRegistry.get_or_create(m)
        for i in range(k):
            reg.register(f"noop{i}", NoopForwardHook())
        variants[f"ours_forwardhook_x{k}"] = ("ours_forwardhook", k, m)

        if diffusers is not None:
            m = fresh()
            dreg = DiffusersRegistry.check_if_exists_or_initialize(m)
            for i in range(k):
                dreg.register_hook(NoopPrePostHook(), f"noop{i}")
            variants[f"diffusers_prepost_x{k}"] = ("diffusers_prepost", k, m)

            m = fresh()
            dreg = DiffusersRegistry.check_if_exists_or_initialize(m)
            for i in range(k):
                dreg.register_hook(NoopNewForwardHook(), f"noop{i}")
            variants[f"diffusers_new_forward_x{k}"] = ("diffusers_new_forward", k, m)

    m = fresh()
    m.register_forward_pre_hook(_torch_pre_hook)
    m.register_forward_hook(_torch_post_hook)
    variants["torch_pre_post_hooks"] = ("torch_hooks", 1, m)
    return variants


def _time_calls(fn: Callable[[torch.Tensor], Any], x: torch.Tensor, calls: int) -> float:
    """CPU time of this thread per call, in microseconds."""
    t0 = time.thread_time_ns()
    for _ in range(calls):
        fn(x)
    return (time.thread_time_ns() - t0) / calls / 1000.0


def _slope(points: list[tuple[int, float]]) -> float:
    """Least-squares slope of y against x."""
    n = len(points)
    mx = sum(p[0] for p in points) / n
    my = sum(p[1] for p in points) / n
    sxx = sum((p[0] - mx) ** 2 for p in points)
    return sum((p[0] - mx) * (p[1] - my) for p in points) / sxx


def run(rounds: int, calls: int, seed: int) -> dict[str, Any]:
    """Measure every variant; return the JSON-ready result."""
    torch.set_num_threads(1)
    variants = build_variants(seed)
    x = torch.randn(1, 8)
    samples: dict[str, list[float]] = {name: [] for name in variants}
    rng = random.Random(seed)
    order = list(variants)
    with torch.no_grad():
        ref = variants["plain"][2](x)
        for name, (family, _, module) in variants.items():  # warm up and check every variant is a no-op
            out = module(x)
            if not torch.equal(out, ref):
                raise RuntimeError(f"variant {name!r} ({family}) changed the output")
            _time_calls(module, x, min(calls, 1000))
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            for _ in range(rounds):
                rng.shuffle(order)
                for name in order:
                    samples[name].append(_time_calls(variants[name][2], x, calls))
        finally:
            if gc_was_enabled:
                gc.enable()

    plain_min = min(samples["plain"])
    plain_med = statistics.median(samples["plain"])
    table: dict[str, Any] = {}
    for name, (family, k, _) in variants.items():
        s = samples[name]
        lo, med = min(s), statistics.median(s)
        row: dict[str, Any] = {
            "family": family,
            "hooks": k,
            "min_us": round(lo, 4),
            "median_us": round(med, 4),
            "overhead_min_us": round(lo - plain_min, 4),
            "overhead_median_us": round(med - plain_med, 4),
        }
        if k:
            row["per_hook_min_us"] = round((lo - plain_min) / k, 4)
            row["per_hook_median_us"] = round((med - plain_med) / k, 4)
        table[name] = row

    families = sorted({fam for fam, k, _ in variants.values() if fam not in ("plain", "torch_hooks")})
    per_hook: dict[str, dict[str, float]] = {}
    for fam in families:
        names = [n for n, (f, _, _) in variants.items() if f == fam]
        pts_min = [(0, plain_min)] + [(variants[n][1], min(samples[n])) for n in names]
        pts_med = [(0, plain_med)] + [(variants[n][1], statistics.median(samples[n])) for n in names]
        one = f"{fam}_x1"
        most = f"{fam}_x{HOOK_COUNTS[-1]}"
        span = HOOK_COUNTS[-1] - 1
        per_hook[fam] = {
            "slope_min_us": round(_slope(pts_min), 4),
            "slope_median_us": round(_slope(pts_med), 4),
            # cost of each hook after the first, and of the first one (which includes any fixed entry cost)
            "marginal_min_us": round((min(samples[most]) - min(samples[one])) / span, 4),
            "marginal_median_us": round((statistics.median(samples[most]) - statistics.median(samples[one])) / span, 4),
            "first_hook_min_us": round(min(samples[one]) - plain_min, 4),
            "first_hook_median_us": round(statistics.median(samples[one]) - plain_med, 4),
        }

    ratios: dict[str, float] = {}
    for ours in ("ours_function", "ours_forwardhook"):
        for theirs in ("diffusers_prepost", "diffusers_new_forward"):
            if ours in per_hook and theirs in per_hook and per_hook[theirs]["slope_median_us"] > 0:
                ratios[f"{ours}/{theirs}"] = round(
                    per_hook[ours]["slope_median_us"] / per_hook[theirs]["slope_median_us"], 3
                )
    return {
        "benchmark": "hook_overhead",
        "unit": "microseconds per call",
        "timer": "time.thread_time_ns",
        "module": "nn.Linear(8, 8) on a (1, 8) input, torch.no_grad()",
        "rounds": rounds,
        "calls_per_round": calls,
        "seed": seed,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "diffusers": getattr(diffusers, "__version__", None),
        },
        "machine": {"platform": platform.platform(), "processor": platform.processor()},
        "variants": table,
        "per_hook_slope": per_hook,
        "ratio_per_hook_ours_over_diffusers": ratios,
    }


def print_table(result: dict[str, Any], out: Callable[[str], None] = print) -> None:
    """A short human-readable summary of :func:`run`'s result, one line at a time through ``out``."""
    out(f"{'variant':<28}{'min µs':>10}{'median µs':>11}{'+µs (med)':>11}{'µs/hook':>9}")
    for name, row in result["variants"].items():
        per = row.get("per_hook_median_us")
        per_s = f"{per:9.3f}" if per is not None else f"{'':>9}"
        out(f"{name:<28}{row['min_us']:10.3f}{row['median_us']:11.3f}{row['overhead_median_us']:11.3f}{per_s}")
    out("\nper hook, µs per call (median over rounds; min in brackets):")
    out(f"  {'family':<24}{'slope 0-4':>18}{'each after 1st':>18}{'first hook':>18}")
    for fam, s in result["per_hook_slope"].items():
        cols = [
            f"{s[key + '_median_us']:.3f} [{s[key + '_min_us']:.3f}]" for key in ("slope", "marginal", "first_hook")
        ]
        out(f"  {fam:<24}" + "".join(f"{c:>18}" for c in cols))
    out("\nratio ours/diffusers (median slopes):")
    for key, value in result["ratio_per_hook_ours_over_diffusers"].items():
        out(f"  {key:<48} {value:.2f}")
