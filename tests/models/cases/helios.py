"""HeliosTransformer3DModel: short / mid / long history latents packed in front, timestep 0 on the history."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import HeliosTransformer3DModel
from torch import nn

from cases import TIMESTEPS_1000, Call, Case, built, randn, seeded


def build(zero_history_timestep: bool = True) -> nn.Module:
    return built(
        HeliosTransformer3DModel,
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=4,
        out_channels=4,
        text_dim=16,
        freq_dim=16,
        ffn_dim=32,
        num_layers=2,
        rope_dim=(4, 4, 4),
        zero_history_timestep=zero_history_timestep,
    )()


def calls(model: nn.Module, batch: int, return_dict: bool, *, history: bool = False) -> list[Call]:
    gen = seeded(20)
    fixed: dict[str, Any] = {"encoder_hidden_states": randn(gen, batch, 5, 16), "return_dict": return_dict}

    def indices(*values: int) -> torch.Tensor:
        return torch.tensor([values] * batch)

    if history:
        fixed.update(
            indices_hidden_states=indices(7, 8),
            latents_history_short=randn(gen, batch, 4, 1, 8, 8),
            indices_latents_history_short=indices(6),
            latents_history_mid=randn(gen, batch, 4, 2, 8, 8),
            indices_latents_history_mid=indices(4, 5),
            latents_history_long=randn(gen, batch, 4, 4, 8, 8),
            indices_latents_history_long=indices(0, 1, 2, 3),
            attention_kwargs={},
        )
    return [
        ((), {"hidden_states": randn(gen, batch, 4, 2, 8, 8), "timestep": torch.full((batch,), t), **fixed})
        for t in TIMESTEPS_1000
    ]


CASES = [
    Case("helios", build, calls),
    Case("helios-history", build, calls, {"history": True}, tags=frozenset({"loop", "dtype", "checkpointing"})),
    Case("helios-history-own-timestep", lambda: build(zero_history_timestep=False), calls, {"history": True}),
]
