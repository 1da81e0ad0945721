"""Krea2Transformer2DModel: single-stream blocks on [text; image], fused multi-layer text, text padding mask."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import Krea2Transformer2DModel
from torch import nn

from cases import Call, Case, built, randn, seeded


def build() -> nn.Module:
    return built(
        Krea2Transformer2DModel,
        in_channels=8,
        num_layers=2,
        attention_head_dim=12,
        num_attention_heads=2,
        num_key_value_heads=1,
        intermediate_size=32,
        timestep_embed_dim=16,
        text_hidden_dim=16,
        num_text_layers=3,
        text_num_attention_heads=2,
        text_num_key_value_heads=2,
        text_intermediate_size=32,
        num_layerwise_text_blocks=1,
        num_refiner_text_blocks=1,
        axes_dims_rope=(4, 4, 4),
    )()


def calls(model: nn.Module, batch: int, return_dict: bool, *, mask: bool = False) -> list[Call]:
    gen = seeded(30)
    text, image = 5, 8
    grid = torch.stack(torch.meshgrid(torch.ones(1), torch.arange(2.0), torch.arange(4.0), indexing="ij"), -1)
    position_ids = torch.cat([torch.zeros(text, 3), grid.reshape(-1, 3)])  # text at the origin, then the image
    fixed: dict[str, Any] = {
        "encoder_hidden_states": randn(gen, batch, text, 3, 16),  # (batch, tokens, text-encoder layers, dim)
        "position_ids": position_ids,
        "attention_kwargs": {},
        "return_dict": return_dict,
    }
    if mask:
        text_mask = torch.ones(batch, text, dtype=torch.bool)
        text_mask[0, -2:] = False
        fixed["encoder_attention_mask"] = text_mask
    return [
        ((), {"hidden_states": randn(gen, batch, image, 8), "timestep": torch.full((batch,), t), **fixed})
        for t in (1.0, 0.8, 0.55, 0.3)
    ]


CASES = [
    Case("krea2", build, calls, tags=frozenset({"loop"})),
    Case("krea2-mask", build, calls, {"mask": True}, tags=frozenset({"dtype", "checkpointing"})),
]
