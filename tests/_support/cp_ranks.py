"""The body of one rank of the context-parallel tests (tests/core/test_distributed_cp.py).

Each spawned rank joins a 2-rank gloo group on loopback with a short collective timeout (a rank left waiting fails
in seconds instead of hanging), builds one tiny diffusers model, and for every cache (TeaCache, MagCache, DBCache)
compares, under diffusers' Ulysses context parallelism (``enable_parallelism``) in both apply orders, the cached
run with the uncached sharded run and the single-process run, then records the per-step decisions of a skipping
configuration chosen so that rank-local values would have split the ranks. What it saw goes to
``<out_dir>/<model>-rank<rank>.json``; the test compares the ranks.
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from diffusers import (
    ContextParallelConfig,
    FluxTransformer2DModel,
    QwenImageTransformer2DModel,
    WanTransformer3DModel,
)
from torch import nn

import ditcache
from ditcache.core.distributed import ProcessGroupReducer

__all__ = ["STEPS", "cp_rank_main"]

STEPS = 6
TIMEOUT_S = 20
TIMESTEPS = [1.0 - k / STEPS for k in range(STEPS)]
Call = dict[str, Any]


def _flux() -> nn.Module:
    torch.manual_seed(0)
    return FluxTransformer2DModel(
        patch_size=1,
        in_channels=8,
        num_layers=1,
        num_single_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=24,
        pooled_projection_dim=16,
        axes_dims_rope=(4, 6, 6),
    ).eval()


def _flux_calls() -> list[Call]:
    gen = torch.Generator().manual_seed(1)
    ids = torch.stack(torch.meshgrid(torch.zeros(1), torch.arange(2.0), torch.arange(4.0), indexing="ij"), -1)
    fixed = {
        "encoder_hidden_states": torch.randn(1, 6, 24, generator=gen),
        "pooled_projections": torch.randn(1, 16, generator=gen),
        "img_ids": ids.reshape(-1, 3),
        "txt_ids": torch.zeros(6, 3),
        "return_dict": False,
    }
    return _denoising(torch.randn(1, 8, 8, generator=gen), gen, fixed)


def _qwen() -> nn.Module:
    torch.manual_seed(0)
    return QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=16,
        out_channels=4,
        num_layers=3,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=24,
        axes_dims_rope=(4, 6, 6),
    ).eval()


def _qwen_calls() -> list[Call]:
    gen = torch.Generator().manual_seed(2)
    fixed = {
        "encoder_hidden_states": torch.randn(1, 6, 24, generator=gen),
        "img_shapes": [[(1, 2, 4)]],
        "return_dict": False,
    }
    return _denoising(torch.randn(1, 8, 16, generator=gen), gen, fixed)


def _wan() -> nn.Module:
    torch.manual_seed(0)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=4,
        out_channels=4,
        text_dim=16,
        freq_dim=32,
        ffn_dim=48,
        num_layers=3,
        cross_attn_norm=True,
        rope_max_seq_len=32,
    ).eval()


def _wan_calls() -> list[Call]:
    gen = torch.Generator().manual_seed(3)
    fixed = {"encoder_hidden_states": torch.randn(1, 7, 16, generator=gen), "return_dict": False}
    return _denoising(torch.randn(1, 4, 2, 4, 4, generator=gen), gen, fixed)


def _denoising(x0: torch.Tensor, gen: torch.Generator, fixed: Call) -> list[Call]:
    """A latent drifting slowly over the steps (so consecutive calls are close, as in a real run)."""
    drift = torch.randn(x0.shape, generator=gen)
    return [
        {"hidden_states": x0 + 0.05 * k * drift, "timestep": torch.full((1,), t), **fixed}
        for k, t in enumerate(TIMESTEPS)
    ]


MODELS: dict[str, tuple[Callable[[], nn.Module], Callable[[], list[Call]]]] = {
    "flux": (_flux, _flux_calls),
    "qwenimage": (_qwen, _qwen_calls),
    "wan": (_wan, _wan_calls),
}

RAW = (0.0, 0.0, 0.0, 1.0, 0.0)  # rescale(x) = x


def _never_skip(cache: str) -> Any:
    if cache == "teacache":
        return ditcache.TeaCacheConfig(rel_l1_thresh=1e-12, coefficients=RAW, warmup_steps=0)
    if cache == "magcache":
        return ditcache.MagCacheConfig(calibrate=True)
    return ditcache.DBCacheConfig(fn_compute_blocks=1, residual_diff_threshold=1e-12, max_warmup_steps=0)


def _skipping(cache: str, threshold: float) -> Any:
    if cache == "teacache":
        return ditcache.TeaCacheConfig(rel_l1_thresh=threshold, coefficients=RAW, warmup_steps=0)
    if cache == "magcache":
        return ditcache.MagCacheConfig(
            mag_ratios=(1.0, 0.99, 0.99, 0.98, 0.97, 0.95),
            threshold=0.5,
            retention_ratio=0.0,
            num_inference_steps=STEPS,
        )
    return ditcache.DBCacheConfig(fn_compute_blocks=1, residual_diff_threshold=threshold, max_warmup_steps=0)


def _apply(model: nn.Module, config: Any) -> Any:
    if isinstance(config, ditcache.TeaCacheConfig):
        return ditcache.apply_teacache_hook(model, config)
    if isinstance(config, ditcache.MagCacheConfig):
        return ditcache.apply_magcache_hook(model, config)
    return ditcache.apply_dbcache_hook(model, config)


class RecordingReducer(ProcessGroupReducer):
    """The process-group reducer, keeping the local and the summed ``rel_l1`` sums (float32 pairs) it reduced."""

    def __init__(self) -> None:
        super().__init__()
        self.pairs: list[tuple[list[float], list[float]]] = []

    def sum(self, partial: torch.Tensor) -> torch.Tensor:
        total = super().sum(partial)
        if partial.dtype == torch.float32 and partial.numel() == 2:
            self.pairs.append((partial.tolist(), total.tolist()))
        return total


def _run(model: nn.Module, calls: list[Call]) -> list[torch.Tensor]:
    with torch.no_grad():
        return [model(**call)[0] for call in calls]


def _decisions(model: nn.Module) -> list[dict[str, Any]]:
    (stats,) = ditcache.cache_stats(model).values()
    gen = stats[-1] if stats else None
    assert gen is not None
    return [
        {"step": d.step, "computed": d.computed, **{k: v for k, v in d.info.items() if isinstance(v, float | int)}}
        for d in gen.decisions
    ]


def _finish(model: nn.Module) -> None:
    ditcache.refresh(model)  # closes the generation so its stats are in the history
    ditcache.remove_cache(model)


def _model_checks(name: str) -> dict[str, Any]:
    build, make_calls = MODELS[name]
    calls = make_calls()
    cp_config = ContextParallelConfig(ulysses_degree=2)

    def parallel(model: nn.Module) -> nn.Module:
        model.enable_parallelism(config=cp_config)  # type: ignore[operator]
        return model

    single = _run(build(), calls)
    sharded = _run(parallel(build()), calls)
    out: dict[str, Any] = {
        "cp_vs_single": max(float((a - b).abs().max()) for a, b in zip(sharded, single, strict=True)),
        "caches": {},
    }
    for cache in ("teacache", "magcache", "dbcache"):
        row: dict[str, Any] = {}
        for order in ("after", "before"):
            model = build()
            if order == "before":
                _apply(model, _never_skip(cache))
                parallel(model)
            else:
                _apply(parallel(model), _never_skip(cache))
            recorder = RecordingReducer()
            ditcache.core.set_reducer(model, recorder)
            outputs = _run(model, calls)
            row[order] = {
                "exact": all(torch.equal(a, b) for a, b in zip(outputs, sharded, strict=True)),
                "vs_single": max(float((a - b).abs().max()) for a, b in zip(outputs, single, strict=True)),
                "decisions": _decisions(model),
                "pairs": recorder.pairs,
            }
            _finish(model)
        # the single-process never-skip decisions, for the reduced values (distances, diffs, calibration metrics)
        model = build()
        _apply(model, _never_skip(cache))
        _run(model, calls)
        row["single_never_skip"] = _decisions(model)
        # a threshold between the two ranks' local values at the first decided step: alone, they would split
        pairs = row["after"]["pairs"]
        local = (pairs[0][0][0] / pairs[0][0][1]) if pairs else 0.0
        gathered: list[Any] = [None, None]
        dist.all_gather_object(gathered, local)
        threshold = (gathered[0] + gathered[1]) / 2 if pairs else 0.5
        row["local_first"] = gathered
        row["threshold"] = threshold
        model = build()
        _apply(parallel(model), _skipping(cache, threshold))
        _run(model, calls)
        row["split_setting"] = _decisions(model)
        _finish(model)
        model = build()
        _apply(model, _skipping(cache, threshold))
        _run(model, calls)
        row["split_setting_single"] = _decisions(model)
        out["caches"][cache] = row
    # the error tolerance: measured errors are reduced like the indicator, so the adapted thresholds agree too
    out["rtol"] = {}
    for cache in ("teacache", "magcache"):
        runs = []
        for sharded_run in (True, False):
            model = build()
            _apply(parallel(model) if sharded_run else model, _tolerant(cache))
            _run(model, calls)
            runs.append(_decisions(model))
            _finish(model)
        out["rtol"][cache] = {"sharded": runs[0], "single": runs[1]}
    return out


def _tolerant(cache: str) -> Any:
    if cache == "teacache":
        return ditcache.TeaCacheConfig(rtol=0.5, coefficients=RAW, warmup_steps=0, force_last_step=False)
    return ditcache.MagCacheConfig(
        rtol=0.5, mag_ratios=(1.0, 0.99, 0.99, 0.98, 0.97, 0.95), retention_ratio=0.0, num_inference_steps=STEPS
    )


def cp_rank_main(rank: int, port: int, out_dir: str, name: str) -> None:
    """One rank: join the group, run the checks of model ``name``, write ``<name>-rank<rank>.json``."""
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    # diffusers' context parallelism asks the accelerator for a device count; on a CPU-only machine report one.
    torch.accelerator.device_count = lambda: 1  # type: ignore[assignment]
    dist.init_process_group("gloo", rank=rank, world_size=2, timeout=datetime.timedelta(seconds=TIMEOUT_S))
    try:
        result = _model_checks(name)
        Path(out_dir, f"{name}-rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()
