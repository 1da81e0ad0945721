"""MiniMaxMusic3Transformer1DModel: the timestep as a prepended token, condition stacked on the channels."""

from __future__ import annotations

import torch
from diffusers import MiniMaxMusic3Transformer1DModel
from torch import nn

from cases import Call, Case, built, randn, seeded


def build() -> nn.Module:
    return built(
        MiniMaxMusic3Transformer1DModel,
        in_channels=4,
        condition_dim=8,
        num_layers=2,
        num_attention_heads=2,
        attention_head_dim=8,
        ff_inner_dim=32,
        rotary_dim=4,
        fourier_embedding_dim=16,
    )()


def calls(model: nn.Module, batch: int, return_dict: bool) -> list[Call]:
    gen = seeded(35)
    prompt = randn(gen, batch, 12, 8)  # (batch, frames, condition_dim)
    return [
        (
            (),
            {
                "hidden_states": randn(gen, batch, 4, 12),
                "timestep": torch.full((batch,), t),
                "encoder_hidden_states": prompt,
                "return_dict": return_dict,
            },
        )
        for t in (0.9, 0.7, 0.4, 0.2)
    ]


CASES = [
    Case("minimax-music3", build, calls, tags=frozenset({"loop", "dtype", "checkpointing"}), attention_kwargs=None)
]
