"""CogView4Transformer2DModel: size/crop conditions, a text mask with padding, caller-given RoPE, attention kwargs."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import CogView4Transformer2DModel
from torch import nn

from cases import TIMESTEPS_1000, Call, Case, built, randn, seeded


def build() -> nn.Module:
    return built(
        CogView4Transformer2DModel,
        patch_size=2,
        in_channels=4,
        out_channels=4,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=2,
        text_embed_dim=24,
        time_embed_dim=16,
        condition_dim=8,
        rope_axes_dim=(4, 4),
    )()


def calls(model: nn.Module, batch: int, return_dict: bool, *, mask: bool = False, rope: bool = False) -> list[Call]:
    gen = seeded(15)
    text = 6
    fixed: dict[str, Any] = {
        "encoder_hidden_states": randn(gen, batch, text, 24),
        "original_size": torch.tensor([[32.0, 32.0]] * batch),
        "target_size": torch.tensor([[32.0, 32.0]] * batch),
        "crop_coords": torch.tensor([[0.0, 0.0]] * batch),
        "attention_kwargs": {},
        "return_dict": return_dict,
    }
    if mask:  # the last text tokens of the first sample are padding
        attention_mask = torch.ones(batch, text)
        attention_mask[0, -2:] = 0
        fixed["attention_mask"] = attention_mask
    if rope:
        fixed["image_rotary_emb"] = model.rope(torch.zeros(batch, 4, 8, 8))
    return [
        ((), {"hidden_states": randn(gen, batch, 4, 8, 8), "timestep": torch.full((batch,), t), **fixed})
        for t in TIMESTEPS_1000
    ]


CASES = [
    Case("cogview4", build, calls, tags=frozenset({"loop"})),
    Case("cogview4-mask-rope", build, calls, {"mask": True, "rope": True}, tags=frozenset({"dtype", "checkpointing"})),
]
