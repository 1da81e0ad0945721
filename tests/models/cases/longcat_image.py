"""LongCatImageTransformer2DModel: a FLUX.1 layout without pooled conditioning; per-block checkpoint flags."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import LongCatImageTransformer2DModel
from torch import nn

from cases import FLOW_TIMESTEPS, Call, Case, built, randn, seeded


def build() -> nn.Module:
    return built(
        LongCatImageTransformer2DModel,
        patch_size=1,
        in_channels=8,
        num_layers=1,
        num_single_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=24,
        pooled_projection_dim=16,
        axes_dims_rope=[4, 6, 6],
    )()


def calls(model: nn.Module, batch: int, return_dict: bool, *, guidance: bool = False) -> list[Call]:
    gen = seeded(11)
    img, txt = 8, 5
    img_ids = torch.stack(torch.meshgrid(torch.zeros(1), torch.arange(2.0), torch.arange(4.0), indexing="ij"), -1)
    fixed: dict[str, Any] = {
        "encoder_hidden_states": randn(gen, batch, txt, 24),
        "img_ids": img_ids.reshape(-1, 3),
        "txt_ids": torch.zeros(txt, 3),
        "return_dict": return_dict,
    }
    if guidance:  # accepted and unused by diffusers
        fixed["guidance"] = torch.full((batch,), 4.5)
    return [
        ((), {"hidden_states": randn(gen, batch, img, 8), "timestep": torch.full((batch,), t), **fixed})
        for t in FLOW_TIMESTEPS
    ]


CASES = [
    Case(
        "longcat-image",
        build,
        calls,
        {"guidance": True},
        tags=frozenset({"loop", "dtype", "checkpointing"}),
        attention_kwargs=None,
    ),
]
