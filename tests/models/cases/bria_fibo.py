"""BriaFiboTransformer2DModel: a text-encoder layer written into the text stream before every block."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import BriaFiboTransformer2DModel
from torch import nn

from cases import TIMESTEPS_1000, Call, Case, built, randn, seeded


def build() -> nn.Module:
    return built(
        BriaFiboTransformer2DModel,
        patch_size=1,
        in_channels=8,
        num_layers=1,
        num_single_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=24,
        axes_dims_rope=[4, 6, 6],
        text_encoder_dim=12,
    )()


def calls(model: nn.Module, batch: int, return_dict: bool) -> list[Call]:
    gen = seeded(42)
    img, txt = 8, 5
    img_ids = torch.stack(torch.meshgrid(torch.zeros(1), torch.arange(2.0), torch.arange(4.0), indexing="ij"), -1)
    fixed: dict[str, Any] = {
        "encoder_hidden_states": randn(gen, batch, txt, 24),
        "text_encoder_layers": [randn(gen, batch, txt, 12) for _ in range(3)],
        "img_ids": img_ids.reshape(-1, 3),
        "txt_ids": torch.zeros(txt, 3),
        "joint_attention_kwargs": {},
        "return_dict": return_dict,
    }
    return [
        ((), {"hidden_states": randn(gen, batch, img, 8), "timestep": torch.full((batch,), t), **fixed})
        for t in TIMESTEPS_1000
    ]


CASES = [
    Case(
        "bria-fibo",
        build,
        calls,
        tags=frozenset({"loop", "dtype", "checkpointing"}),
        attention_kwargs="joint_attention_kwargs",
    )
]
