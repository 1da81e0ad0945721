"""FLUX.1 clones with their own classes: Bria 3.2 (both ControlNet kinds), LongCat-Image (per-block checkpointing
flags), Ovis-Image."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import BriaTransformer2DModel, LongCatImageTransformer2DModel, OvisImageTransformer2DModel
from torch import nn

from cases import FLOW_TIMESTEPS, Call, Case, built, randn, seeded

TXT, IMG, DIM = 5, 8, 32
_COMMON: dict[str, Any] = {
    "patch_size": 1,
    "in_channels": 8,
    "num_layers": 2,
    "num_single_layers": 2,
    "attention_head_dim": 16,
    "num_attention_heads": 2,
    "joint_attention_dim": 24,
    "axes_dims_rope": [4, 6, 6],
}


def bria() -> nn.Module:
    return built(BriaTransformer2DModel, **_COMMON)()


def longcat() -> nn.Module:
    return built(LongCatImageTransformer2DModel, **_COMMON, pooled_projection_dim=24)()


def ovis() -> nn.Module:
    return built(OvisImageTransformer2DModel, **_COMMON, out_channels=8)()


def calls(model: nn.Module, batch: int, return_dict: bool, *, controlnet: bool = False, **extra: Any) -> list[Call]:
    gen = seeded(22)
    img_ids = torch.stack(torch.meshgrid(torch.zeros(1), torch.arange(2.0), torch.arange(4.0), indexing="ij"), -1)
    fixed: dict[str, Any] = {
        "encoder_hidden_states": randn(gen, batch, TXT, 24),
        "img_ids": img_ids.reshape(-1, 3),
        "txt_ids": torch.zeros(TXT, 3),
        "return_dict": return_dict,
        **extra,
    }
    if controlnet:
        fixed["controlnet_block_samples"] = [randn(gen, batch, IMG, DIM) * 0.1]
        fixed["controlnet_single_block_samples"] = [randn(gen, batch, IMG - TXT, DIM) * 0.1 for _ in range(2)]
    return [
        ((), {"hidden_states": randn(gen, batch, IMG, 8), "timestep": torch.full((batch,), t), **fixed})
        for t in FLOW_TIMESTEPS
    ]


_ALL_TAGS = frozenset({"loop", "dtype", "checkpointing"})
CASES = [
    Case("bria", bria, calls, tags=_ALL_TAGS),
    Case("bria-controlnet", bria, calls, {"controlnet": True, "attention_kwargs": {}}),
    Case("longcat-image", longcat, calls, tags=_ALL_TAGS, attention_kwargs=None),
    Case("ovis-image", ovis, calls, tags=_ALL_TAGS, attention_kwargs="joint_attention_kwargs"),
    Case(
        "ovis-image-attention-kwargs",
        ovis,
        calls,
        {"joint_attention_kwargs": {}},
        attention_kwargs="joint_attention_kwargs",
    ),
]
