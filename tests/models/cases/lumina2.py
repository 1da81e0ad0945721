"""Lumina2Transformer2DModel: captions of different valid lengths (the packed sequence is padded and masked),
equal lengths (no mask)."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import Lumina2Transformer2DModel
from torch import nn

from cases import FLOW_TIMESTEPS, Call, Case, built, randn, seeded


def build() -> nn.Module:
    return built(
        Lumina2Transformer2DModel,
        sample_size=8,
        patch_size=2,
        in_channels=4,
        hidden_size=32,
        num_layers=3,
        num_refiner_layers=1,
        num_attention_heads=2,
        num_kv_heads=1,
        multiple_of=16,
        axes_dim_rope=(4, 6, 6),
        axes_lens=(32, 16, 16),
        cap_feat_dim=16,
    )()


def calls(model: nn.Module, batch: int, return_dict: bool, *, ragged: bool = False, **extra: Any) -> list[Call]:
    gen = seeded(15)
    mask = torch.ones(batch, 6, dtype=torch.bool)
    if ragged:
        mask[0, 4:] = False
    fixed: dict[str, Any] = {
        "encoder_hidden_states": randn(gen, batch, 6, 16),
        "encoder_attention_mask": mask,
        "return_dict": return_dict,
        **extra,
    }
    return [
        ((), {"hidden_states": randn(gen, batch, 4, 8, 8), "timestep": torch.full((batch,), t), **fixed})
        for t in FLOW_TIMESTEPS
    ]


CASES = [
    Case("lumina2", build, calls, tags=frozenset({"loop", "checkpointing"})),
    Case("lumina2-ragged-captions", build, calls, {"ragged": True, "attention_kwargs": {}}, tags=frozenset({"dtype"})),
]
