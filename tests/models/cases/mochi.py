"""MochiTransformer3DModel: text mask with padding (attention-pooled caption), context_pre_only last block."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import MochiTransformer3DModel
from torch import nn

from cases import Call, Case, built, randn, seeded


def build() -> nn.Module:
    return built(
        MochiTransformer3DModel,
        patch_size=2,
        num_attention_heads=2,
        attention_head_dim=8,
        num_layers=3,
        pooled_projection_dim=16,
        in_channels=4,
        text_embed_dim=16,
        time_embed_dim=4,
        max_sequence_length=8,
    )()


def calls(model: nn.Module, batch: int, return_dict: bool, **extra: Any) -> list[Call]:
    gen = seeded(19)
    mask = torch.ones(batch, 6, dtype=torch.bool)
    mask[0, 4:] = False
    fixed: dict[str, Any] = {
        "encoder_hidden_states": randn(gen, batch, 6, 16),
        "encoder_attention_mask": mask,
        "return_dict": return_dict,
        **extra,
    }
    return [
        ((), {"hidden_states": randn(gen, batch, 4, 2, 4, 4), "timestep": torch.full((batch,), t), **fixed})
        for t in (999.0, 800.0, 550.0, 300.0)
    ]


CASES = [
    Case("mochi", build, calls, tags=frozenset({"loop", "checkpointing", "dtype"})),
    Case("mochi-attention-kwargs", build, calls, {"attention_kwargs": {}}),
]
