"""Ideogram4Transformer2DModel: one packed sequence of LLM tokens, image tokens and padding, two segments."""

from __future__ import annotations

import torch
from diffusers import Ideogram4Transformer2DModel
from torch import nn

from cases import Call, Case, built, randn, seeded

TEXT, IMAGE, PAD = 4, 8, 2


def build() -> nn.Module:
    return built(
        Ideogram4Transformer2DModel,
        in_channels=8,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        intermediate_size=32,
        adaln_dim=16,
        llm_features_dim=24,
        rope_theta=10000,
        mrope_section=(4, 2, 2),
    )()


def calls(model: nn.Module, batch: int, return_dict: bool) -> list[Call]:
    gen = seeded(31)
    length = TEXT + IMAGE + PAD
    indicator = torch.tensor([3] * TEXT + [2] * IMAGE + [-1] * PAD).expand(batch, -1)  # LLM, image, padding
    segment_ids = torch.tensor([0] * (TEXT + IMAGE) + [1] * PAD).expand(batch, -1)
    grid = torch.stack(
        torch.meshgrid(torch.zeros(1, dtype=torch.long), torch.arange(2), torch.arange(4), indexing="ij"), -1
    )
    positions = torch.cat([torch.arange(TEXT)[:, None].expand(-1, 3), grid.reshape(-1, 3) + 100, torch.zeros(PAD, 3)])
    fixed = {
        "encoder_hidden_states": randn(gen, batch, length, 24),
        "position_ids": positions.long().expand(batch, -1, -1),
        "segment_ids": segment_ids,
        "indicator": indicator,
        "attention_kwargs": {},
        "return_dict": return_dict,
    }
    return [
        ((), {"hidden_states": randn(gen, batch, length, 8), "timestep": torch.full((batch,), t), **fixed})
        for t in (1.0, 0.8, 0.55, 0.3)
    ]


CASES = [Case("ideogram4", build, calls, tags=frozenset({"loop", "dtype", "checkpointing"}))]
