"""ChronoEditTransformer3DModel: text-only and with CLIP image tokens (editing)."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import ChronoEditTransformer3DModel
from torch import nn

from cases import TIMESTEPS_1000, Call, Case, built, randn, seeded


def build(i2v: bool = False) -> nn.Module:
    return built(
        ChronoEditTransformer3DModel,
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
        image_dim=20 if i2v else None,
        added_kv_proj_dim=24 if i2v else None,
    )()


def calls(model: nn.Module, batch: int, return_dict: bool, *, i2v: bool = False, **extra: Any) -> list[Call]:
    gen = seeded(11)
    fixed: dict[str, Any] = {
        "encoder_hidden_states": randn(gen, batch, 512 if i2v else 7, 16),
        "return_dict": return_dict,
        **extra,
    }
    if i2v:
        fixed["encoder_hidden_states_image"] = randn(gen, batch, 3, 20)
    return [
        ((), {"hidden_states": randn(gen, batch, 4, 2, 4, 4), "timestep": torch.full((batch,), t), **fixed})
        for t in TIMESTEPS_1000
    ]


CASES = [
    Case("chronoedit", build, calls, tags=frozenset({"loop", "checkpointing"})),
    Case(
        "chronoedit-image",
        lambda: build(i2v=True),
        calls,
        {"i2v": True, "attention_kwargs": {}},
        tags=frozenset({"dtype"}),
    ),
]
