"""SanaVideoTransformer3DModel: guidance embedding, text and video masks, ControlNet residuals (index offset 1)."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import SanaVideoTransformer3DModel
from torch import nn

from cases import TIMESTEPS_1000, Call, Case, built, randn, seeded


def build(guidance_embeds: bool = False) -> nn.Module:
    return built(
        SanaVideoTransformer3DModel,
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=12,
        num_layers=3,
        num_cross_attention_heads=2,
        cross_attention_head_dim=12,
        cross_attention_dim=24,
        caption_channels=16,
        sample_size=8,
        guidance_embeds=guidance_embeds,
        rope_max_seq_len=32,
    )()


def calls(
    model: nn.Module, batch: int, return_dict: bool, *, guidance: bool = False, masks: bool = False, controlnet: int = 0
) -> list[Call]:
    gen = seeded(21)
    tokens, dim = 2 * 4 * 4, 24
    fixed: dict[str, Any] = {"encoder_hidden_states": randn(gen, batch, 5, 16), "return_dict": return_dict}
    if guidance:
        fixed["guidance"] = torch.full((batch,), 4.0)
    if masks:
        text_mask = torch.ones(batch, 5)
        text_mask[0, -2:] = 0
        video_mask = torch.ones(batch, tokens)
        video_mask[0, :3] = 0
        fixed["encoder_attention_mask"] = text_mask
        fixed["attention_mask"] = video_mask
        fixed["attention_kwargs"] = {}
    if controlnet:
        fixed["controlnet_block_samples"] = [randn(gen, batch, tokens, dim) * 0.1 for _ in range(controlnet)]
    return [
        ((), {"hidden_states": randn(gen, batch, 4, 2, 8, 8), "timestep": torch.full((batch,), t), **fixed})
        for t in TIMESTEPS_1000
    ]


CASES = [
    Case("sana-video", build, calls, {"masks": True}, tags=frozenset({"loop"})),
    Case(
        "sana-video-guidance-controlnet",
        lambda: build(guidance_embeds=True),
        calls,
        {"guidance": True, "controlnet": 1},
        tags=frozenset({"dtype", "checkpointing"}),
    ),
    Case("sana-video-controlnet-all", build, calls, {"controlnet": 3}),
]
