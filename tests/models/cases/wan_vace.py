"""WanVACETransformer3DModel: control video hints added after the VACE layers (unordered ``vace_layers`` config),
per-layer hint scales."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import WanVACETransformer3DModel
from torch import nn

from cases import TIMESTEPS_1000, Call, Case, built, randn, seeded


def build(vace_layers: tuple[int, ...] = (0, 2)) -> nn.Module:
    return built(
        WanVACETransformer3DModel,
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=4,
        out_channels=4,
        text_dim=16,
        freq_dim=32,
        ffn_dim=48,
        num_layers=3,
        rope_max_seq_len=32,
        vace_layers=list(vace_layers),
        vace_in_channels=6,
    )()


def calls(model: nn.Module, batch: int, return_dict: bool, *, scales: bool = False, **extra: Any) -> list[Call]:
    gen = seeded(10)
    fixed: dict[str, Any] = {
        "encoder_hidden_states": randn(gen, batch, 7, 16),
        "control_hidden_states": randn(gen, batch, 6, 2, 4, 4),
        "return_dict": return_dict,
        **extra,
    }
    if scales:
        fixed["control_hidden_states_scale"] = torch.tensor([0.5, 1.5])
    return [
        ((), {"hidden_states": randn(gen, batch, 4, 2, 4, 4), "timestep": torch.full((batch,), t), **fixed})
        for t in TIMESTEPS_1000
    ]


CASES = [
    Case("wan-vace", build, calls, tags=frozenset({"loop", "dtype", "checkpointing"})),
    Case("wan-vace-scaled-unordered", lambda: build((2, 0)), calls, {"scales": True, "attention_kwargs": {}}),
]
