"""SanaTransformer2DModel: text mask, Sprint's guidance embedding, ControlNet residuals with Sana's offset."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import SanaTransformer2DModel
from torch import nn

from cases import Call, Case, built, randn, seeded


def build(guidance_embeds: bool = False) -> nn.Module:
    return built(
        SanaTransformer2DModel,
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=8,
        num_layers=3,
        num_cross_attention_heads=2,
        cross_attention_head_dim=8,
        cross_attention_dim=16,
        caption_channels=12,
        sample_size=8,
        patch_size=1,
        guidance_embeds=guidance_embeds,
    )()


def calls(
    model: nn.Module, batch: int, return_dict: bool, *, guidance: bool = False, controlnet: int = 0, **extra: Any
) -> list[Call]:
    gen = seeded(17)
    mask = torch.ones(batch, 5, dtype=torch.long)
    mask[0, 3:] = 0
    fixed: dict[str, Any] = {
        "encoder_hidden_states": randn(gen, batch, 5, 12),
        "encoder_attention_mask": mask,
        "return_dict": return_dict,
        **extra,
    }
    if guidance:
        fixed["guidance"] = torch.full((batch,), 4.5)
    if controlnet:
        fixed["controlnet_block_samples"] = tuple(randn(gen, batch, 64, 16) * 0.1 for _ in range(controlnet))
    return [
        ((), {"hidden_states": randn(gen, batch, 4, 8, 8), "timestep": torch.full((batch,), t), **fixed})
        for t in (999.0, 800.0, 550.0, 300.0)
    ]


CASES = [
    Case("sana", build, calls, tags=frozenset({"loop", "checkpointing"})),
    Case(
        "sana-sprint-guidance",
        lambda: build(guidance_embeds=True),
        calls,
        {"guidance": True},
        tags=frozenset({"dtype"}),
    ),
    Case("sana-controlnet", build, calls, {"controlnet": 1, "attention_kwargs": {}}, tags=frozenset({"dtype"})),
]
