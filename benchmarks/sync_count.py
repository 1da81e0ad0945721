"""Count host syncs per transformer call for each cache on a tiny random Flux (CPU).

A host sync is any operation that makes the host wait for a device value: reading a scalar (``.item()``,
``float(t)``, ``int(t)``, ``bool(t)``, all ``aten._local_scalar_dense``), ``torch.equal`` (returns a Python bool),
``aten.is_nonzero`` and ``.tolist()`` / ``.numpy()`` (a copy to host memory). On CPU nothing waits, but the same
operations are counted, so the count is the one an accelerator would see. The counter is a ``TorchDispatchMode``
(every aten op a Python call makes) plus wrappers of ``Tensor.tolist`` and ``Tensor.numpy``, whose host copy does
not dispatch an op on CPU.

Run from the repository root::

    OMP_NUM_THREADS=1 python benchmarks/sync_count.py --out results/

Three variants per cache: a plain loop (the runtime detects the generation from the calls), a loop that passes its
step index (``cache_context("cond", step_index=i)``), and a *driven* one, where a pipeline says where each
generation starts (its scheduler's timesteps, read by :mod:`ditcache.core.pipeline`) and wraps each call in
``cache_context("cond")`` as diffusers' pipelines do.

It writes ``sync_count.json``: per variant, the syncs counted over a denoising loop divided by its transformer
calls (``per_call``), with the total and the call count, and prints a table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

import ditcache
from ditcache.core.pipeline import bind_pipeline

_SYNC_OPS = {
    torch.ops.aten._local_scalar_dense.default,
    torch.ops.aten.equal.default,
    torch.ops.aten.is_nonzero.default,
}


class SyncCounter(TorchDispatchMode):
    """Counts host syncs while active (see the module docstring); ``count`` is the total, ``ops`` per kind."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.ops: dict[str, int] = {}

    def _add(self, name: str) -> None:
        self.count += 1
        self.ops[name] = self.ops.get(name, 0) + 1

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if func in _SYNC_OPS:
            self._add(str(func.overloadpacket.__name__))
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def count_syncs() -> Iterator[SyncCounter]:
    """Count host syncs in the block: ``with count_syncs() as c: ...; c.count``."""
    counter = SyncCounter()
    originals = {name: getattr(torch.Tensor, name) for name in ("tolist", "numpy")}

    def wrap(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def counted(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            counter._add(name)
            return fn(self, *args, **kwargs)

        return counted

    for name, fn in originals.items():
        setattr(torch.Tensor, name, wrap(name, fn))
    try:
        with counter:
            yield counter
    finally:
        for name, fn in originals.items():
            setattr(torch.Tensor, name, fn)


def _tiny_flux() -> Any:
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    return FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=2,
        num_single_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=(4, 6, 6),
    ).eval()


def _loop_calls(model: Any, steps: int, step_index: bool) -> list[dict[str, Any]]:
    gen = torch.Generator().manual_seed(1)
    ids = torch.zeros(8, 8, 3)
    ids[..., 1] = torch.arange(8)[:, None]
    ids[..., 2] = torch.arange(8)[None, :]
    prompt = torch.randn(1, 8, 32, generator=gen)
    pooled = torch.randn(1, 32, generator=gen)
    latents = torch.randn(1, 64, 16, generator=gen)
    sigmas = torch.linspace(1.0, 0.0, steps + 1)
    return [
        {
            "latents": latents,
            "kwargs": {
                "encoder_hidden_states": prompt,
                "pooled_projections": pooled,
                "timestep": sigmas[i].expand(1),
                "img_ids": ids.reshape(64, 3),
                "txt_ids": torch.zeros(8, 3),
                "return_dict": False,
            },
            "dt": sigmas[i + 1] - sigmas[i],
            "step": i if step_index else None,
        }
        for i in range(steps)
    ]


class _Scheduler:
    timesteps: torch.Tensor | None = None  # set per run, as ``set_timesteps`` does
    begin_index: int | None = None


class _Pipeline:
    """What :mod:`ditcache.core.pipeline` reads of a diffusers pipeline: its scheduler's timesteps. (A real scheduler's
    ``step`` would add syncs of its own: this counts the transformer calls' only.)"""

    def __init__(self) -> None:
        self.scheduler = _Scheduler()


CACHES = ("none", "teacache", "magcache", "dbcache", "teacache-rtol", "magcache-rtol")
"""The configurations counted: no cache, each cache with a threshold, and the step-level caches under ``rtol``."""


def measure(cache: str, steps: int = 20, step_index: bool = False, driven: bool = False) -> dict[str, Any]:
    """Syncs per transformer call of a ``steps``-step loop on the tiny Flux with ``cache`` applied.

    ``cache`` is one of :data:`CACHES`; the step count is given by
    :func:`ditcache.refresh` before the loop. With ``step_index`` the loop wraps each call in
    ``model.cache_context("cond", step_index=i)`` as a pipeline that passes its step index does. With ``driven`` a
    pipeline drives the generations instead: each run sets new scheduler timesteps (no refresh) and wraps each call in
    ``model.cache_context("cond")``, as a diffusers pipeline call does.
    """
    if step_index and driven:
        raise ValueError("step_index and driven are separate variants")
    model = _tiny_flux()
    if cache == "teacache":
        ditcache.apply_teacache_hook(model, ditcache.TeaCacheConfig(rel_l1_thresh=0.4))
    elif cache == "magcache":
        ditcache.apply_magcache_hook(model, ditcache.MagCacheConfig(threshold=0.24))
    elif cache == "dbcache":
        ditcache.apply_dbcache_hook(model, ditcache.DBCacheConfig(fn_compute_blocks=1, bn_compute_blocks=1))
    elif cache == "teacache-rtol":
        ditcache.apply_teacache_hook(model, ditcache.TeaCacheConfig(rtol=0.1))
    elif cache == "magcache-rtol":
        ditcache.apply_magcache_hook(model, ditcache.MagCacheConfig(rtol=0.1))
    elif cache != "none":
        raise ValueError(f"cache: expected one of {list(CACHES)}, got {cache!r}")
    pipe = _Pipeline()
    if cache != "none" and driven:
        bind_pipeline(pipe, {"transformer": model})
    elif cache != "none":
        ditcache.refresh(model, num_inference_steps=steps)
    calls = _loop_calls(model, steps, step_index)
    with torch.no_grad():
        # one warm-up run (lazy imports, first-call memos), then the counted one
        for counted in (False, True):
            if driven:
                pipe.scheduler.timesteps = torch.linspace(1000.0, 1000.0 / steps, steps)  # a new pipe(...) call
            elif cache != "none":
                ditcache.refresh(model, num_inference_steps=steps)
            latents = calls[0]["latents"]
            scope = count_syncs() if counted else contextlib.nullcontext(None)
            with scope as counter:
                for call in calls:
                    if call["step"] is not None:
                        ctx = model.cache_context("cond", step_index=call["step"])
                    elif driven:
                        ctx = model.cache_context("cond")
                    else:
                        ctx = contextlib.nullcontext()
                    with ctx:
                        out = model(hidden_states=latents, **call["kwargs"])[0]
                    latents = latents + call["dt"] * out
    assert counter is not None
    skipped = 0
    if cache != "none":
        stats = ditcache.cache_stats(model)
        skipped = sum(len(s.skipped_steps) for runs in stats.values() for s in runs[-1:])
    return {
        "cache": cache,
        "step_index": step_index,
        "driven": driven,
        "calls": steps,
        "syncs": counter.count,
        "per_call": counter.count / steps,
        "ops": dict(sorted(counter.ops.items())),
        "skipped_steps": skipped,
    }


VARIANTS = [(c, s, d) for c in CACHES for s, d in ((False, False), (True, False), (False, True))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for sync_count.json")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    results = [measure(cache, args.steps, step_index, driven) for cache, step_index, driven in VARIANTS]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sync_count.json").write_text(
        json.dumps({"torch": torch.__version__, "ditcache": ditcache.__version__, "results": results}, indent=2)
    )
    print(f"{'cache':10} {'step_index':10} {'driven':6} {'per_call':>8}  ops")
    for r in results:
        print(f"{r['cache']:10} {r['step_index']!s:10} {r['driven']!s:6} {r['per_call']:8.2f}  {r['ops']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
