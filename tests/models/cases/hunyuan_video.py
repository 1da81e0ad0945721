"""HunyuanVideoTransformer3DModel: text masks with padding, guidance embedding, I2V token replacement."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import HunyuanVideoTransformer3DModel
from torch import nn

from cases import TIMESTEPS_1000, Call, Case, built, randn, seeded


def build(image_condition_type: str | None = None, guidance_embeds: bool = True) -> nn.Module:
    return built(
        HunyuanVideoTransformer3DModel,
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=8,
        num_layers=1,
        num_single_layers=2,
        num_refiner_layers=1,
        patch_size=1,
        patch_size_t=1,
        guidance_embeds=guidance_embeds,
        text_embed_dim=16,
        pooled_projection_dim=8,
        rope_axes_dim=(2, 2, 4),
        image_condition_type=image_condition_type,
    )()


def calls(model: nn.Module, batch: int, return_dict: bool, *, guidance: bool = True, **extra: Any) -> list[Call]:
    gen = seeded(6)
    mask = torch.ones(batch, 6, dtype=torch.long)
    mask[0, 4:] = 0
    fixed: dict[str, Any] = {
        "encoder_hidden_states": randn(gen, batch, 6, 16),
        "encoder_attention_mask": mask,
        "pooled_projections": randn(gen, batch, 8),
        "return_dict": return_dict,
        **extra,
    }
    if guidance:
        fixed["guidance"] = torch.full((batch,), 6000.0)
    return [
        ((), {"hidden_states": randn(gen, batch, 4, 2, 4, 4), "timestep": torch.full((batch,), t), **fixed})
        for t in TIMESTEPS_1000
    ]


CASES = [
    Case("hunyuanvideo", build, calls, tags=frozenset({"loop", "dtype", "checkpointing"})),
    Case("hunyuanvideo-no-guidance", lambda: build(guidance_embeds=False), calls, {"guidance": False}),
    Case(
        "hunyuanvideo-i2v-token-replace",
        lambda: build(image_condition_type="token_replace"),
        calls,
        {"attention_kwargs": {}},
        tags=frozenset({"dtype"}),
    ),
]
