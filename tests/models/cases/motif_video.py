"""MotifVideoTransformer3DModel: double and single blocks, image tokens, text mask (decoder layers are refused)."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import MotifVideoTransformer3DModel
from torch import nn

from cases import TIMESTEPS_1000, Call, Case, built, randn, seeded


def build(image: bool = False) -> nn.Module:
    return built(
        MotifVideoTransformer3DModel,
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=12,
        num_layers=1,
        num_single_layers=2,
        mlp_ratio=2.0,
        patch_size=2,
        patch_size_t=1,
        text_embed_dim=16,
        image_embed_dim=12 if image else None,
        rope_axes_dim=(4, 4, 4),
    )()


def calls(model: nn.Module, batch: int, return_dict: bool, *, mask: bool = False, image: bool = False) -> list[Call]:
    gen = seeded(37)
    fixed: dict[str, Any] = {
        "encoder_hidden_states": randn(gen, batch, 5, 16),
        "attention_kwargs": {},
        "return_dict": return_dict,
    }
    if mask:
        text_mask = torch.ones(batch, 5)
        text_mask[0, -2:] = 0
        fixed["encoder_attention_mask"] = text_mask
    if image:
        fixed["image_embeds"] = randn(gen, batch, 3, 12)
    return [
        ((), {"hidden_states": randn(gen, batch, 4, 2, 8, 8), "timestep": torch.full((batch,), t), **fixed})
        for t in TIMESTEPS_1000
    ]


CASES = [
    Case("motif-video", build, calls, {"mask": True}, tags=frozenset({"loop"})),
    Case(
        "motif-video-image",
        lambda: build(image=True),
        calls,
        {"mask": True, "image": True},
        tags=frozenset({"dtype", "checkpointing"}),
    ),
]
