"""AllegroTransformer3DModel: PixArt-style blocks with text as K/V; video and text masks."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import AllegroTransformer3DModel
from torch import nn

from cases import TIMESTEPS_1000, Call, Case, built, randn, seeded


def build() -> nn.Module:
    return built(
        AllegroTransformer3DModel,
        patch_size=2,
        patch_size_t=1,
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=4,
        num_layers=2,
        cross_attention_dim=16,
        sample_height=8,
        sample_width=8,
        sample_frames=2,
        caption_channels=24,
    )()


def calls(model: nn.Module, batch: int, return_dict: bool, *, masks: bool = False) -> list[Call]:
    gen = seeded(19)
    fixed: dict[str, Any] = {"encoder_hidden_states": randn(gen, batch, 5, 24), "return_dict": return_dict}
    if masks:
        video_mask = torch.ones(batch, 2, 8, 8)
        video_mask[0, 1, :4] = 0  # some patches of the first sample's second frame are dropped
        text_mask = torch.ones(batch, 5)
        text_mask[0, -2:] = 0
        fixed["attention_mask"] = video_mask
        fixed["encoder_attention_mask"] = text_mask
    return [
        ((), {"hidden_states": randn(gen, batch, 4, 2, 8, 8), "timestep": torch.full((batch,), t), **fixed})
        for t in TIMESTEPS_1000
    ]


CASES = [
    Case("allegro", build, calls, tags=frozenset({"loop"}), attention_kwargs=None),
    Case(
        "allegro-masks",
        build,
        calls,
        {"masks": True},
        tags=frozenset({"dtype", "checkpointing"}),
        attention_kwargs=None,
    ),
]
