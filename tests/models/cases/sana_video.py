"""SanaVideoTransformer3DModel: text mask, ControlNet residuals with Sana's offset."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import SanaVideoTransformer3DModel
from torch import nn

from cases import Call, Case, built, randn, seeded


def build() -> nn.Module:
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
        caption_channels=12,
        sample_size=8,
        patch_size=(1, 2, 2),
        rope_max_seq_len=32,
    )()


def calls(model: nn.Module, batch: int, return_dict: bool, *, controlnet: bool = False, **extra: Any) -> list[Call]:
    gen = seeded(30)
    mask = torch.ones(batch, 5, dtype=torch.long)
    mask[0, 3:] = 0
    fixed: dict[str, Any] = {
        "encoder_hidden_states": randn(gen, batch, 5, 12),
        "encoder_attention_mask": mask,
        "return_dict": return_dict,
        **extra,
    }
    if controlnet:
        fixed["controlnet_block_samples"] = (randn(gen, batch, 32, 24) * 0.1,)
    return [
        ((), {"hidden_states": randn(gen, batch, 4, 2, 8, 8), "timestep": torch.full((batch,), t), **fixed})
        for t in (999.0, 800.0, 550.0, 300.0)
    ]


CASES = [
    Case("sana-video", build, calls, tags=frozenset({"loop", "checkpointing", "dtype"})),
    Case("sana-video-controlnet", build, calls, {"controlnet": True, "attention_kwargs": {}}),
]
