"""Every entry of the cache-dit adapter table is verified by running cache-dit on a tiny model of its class.

The pipeline tests cover Flux, FLUX.2, Qwen-Image and Wan through their pipelines; the classes below are driven
directly with a fixed denoising-like call sequence. For each: with ``residual_diff_threshold=0`` (never cache) the
outputs equal the native forward bit for bit, with ``1.0`` (always cache after warm-up) steps are cached, and
``disable_cache`` restores the native forward.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from typing import Any

import pytest
import torch
from diffusers import CogView4Transformer2DModel, LTXVideoTransformer3DModel, SD3Transformer2DModel
from torch import nn

os.environ.setdefault("CACHE_DIT_LOG_LEVEL", "warning")

import cache_dit

from ditcache.backends.cache_dit_adapters import ADAPTER_CONFIGS
from ditcache.backends.cache_dit_backend import build_block_adapter

VERIFIED_BY_PIPELINE_TESTS = {
    "FluxTransformer2DModel",
    "Flux2Transformer2DModel",
    "QwenImageTransformer2DModel",
    "WanTransformer3DModel",
}
TIMESTEPS = (999.0, 800.0, 600.0, 400.0, 200.0, 50.0)

Case = tuple[nn.Module, Callable[[float], dict[str, Any]]]


def _g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _sd3() -> Case:
    torch.manual_seed(0)
    m = SD3Transformer2DModel(
        sample_size=8,
        patch_size=1,
        in_channels=4,
        num_layers=3,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=16,
        caption_projection_dim=16,
        pooled_projection_dim=12,
        out_channels=4,
    ).eval()
    x, e, p = torch.randn(1, 4, 8, 8, generator=_g(1)), torch.randn(1, 5, 16, generator=_g(2)), torch.randn(1, 12)
    return m, lambda t: {
        "hidden_states": x,
        "encoder_hidden_states": e,
        "pooled_projections": p,
        "timestep": torch.tensor([t]),
    }


def _cogview4() -> Case:
    torch.manual_seed(0)
    m = CogView4Transformer2DModel(
        patch_size=2,
        in_channels=4,
        num_layers=3,
        attention_head_dim=4,
        num_attention_heads=4,
        out_channels=4,
        text_embed_dim=8,
        time_embed_dim=8,
        condition_dim=4,
    ).eval()
    x, e = torch.randn(1, 4, 8, 8, generator=_g(1)), torch.randn(1, 6, 8, generator=_g(2))
    return m, lambda t: {
        "hidden_states": x,
        "encoder_hidden_states": e,
        "timestep": torch.tensor([t]),
        "original_size": torch.tensor([[8, 8]]),
        "target_size": torch.tensor([[8, 8]]),
        "crop_coords": torch.tensor([[0, 0]]),
    }


def _ltx() -> Case:
    torch.manual_seed(0)
    m = LTXVideoTransformer3DModel(
        in_channels=8,
        out_channels=8,
        patch_size=1,
        patch_size_t=1,
        num_attention_heads=2,
        attention_head_dim=8,
        cross_attention_dim=16,
        num_layers=3,
        caption_channels=16,
    ).eval()
    x, e = torch.randn(1, 32, 8, generator=_g(1)), torch.randn(1, 5, 16, generator=_g(2))
    return m, lambda t: {
        "hidden_states": x,
        "encoder_hidden_states": e,
        "timestep": torch.tensor([t]),
        "encoder_attention_mask": torch.ones(1, 5),
        "num_frames": 2,
        "height": 4,
        "width": 4,
    }


CASES: dict[str, Callable[[], Case]] = {
    "SD3Transformer2DModel": _sd3,
    "CogView4Transformer2DModel": _cogview4,
    "LTXVideoTransformer3DModel": _ltx,
}


def test_every_table_entry_is_verified() -> None:
    assert set(ADAPTER_CONFIGS) == VERIFIED_BY_PIPELINE_TESTS | set(CASES)


def _run(model: nn.Module, inputs: Callable[[float], dict[str, Any]]) -> list[torch.Tensor]:
    with torch.no_grad():
        return [model(**inputs(t), return_dict=False)[0] for t in TIMESTEPS]


@pytest.mark.parametrize("name", sorted(CASES))
def test_cache_dit_on_the_declared_blocks(name: str) -> None:
    model, inputs = CASES[name]()
    assert type(model).__name__ == name
    native = _run(model, inputs)
    # the cond/uncond pairing of has_separate_cfg is not what this single-branch loop does: test one branch
    adapter_config = ADAPTER_CONFIGS[name]
    for threshold in (0.0, 1.0):
        cached = copy.deepcopy(model)
        adapter = build_block_adapter(cached, adapter_config)
        adapter.has_separate_cfg = False
        config = cache_dit.DBCacheConfig(
            Fn_compute_blocks=1, Bn_compute_blocks=0, max_warmup_steps=1, residual_diff_threshold=threshold
        )
        cache_dit.enable_cache(adapter, cache_config=config)
        cache_dit.refresh_context(cached, num_inference_steps=len(TIMESTEPS))
        out = _run(cached, inputs)
        cached_steps = cache_dit.summary(cached, logging=False)[-1].cached_steps or []
        if threshold == 0.0:
            assert cached_steps == [] and all(torch.equal(a, b) for a, b in zip(out, native, strict=True))
        else:
            assert cached_steps == list(range(1, len(TIMESTEPS)))
            assert not torch.equal(out[-1], native[-1])
        cache_dit.disable_cache(cached)
        assert all(torch.equal(a, b) for a, b in zip(_run(cached, inputs), native, strict=True))
