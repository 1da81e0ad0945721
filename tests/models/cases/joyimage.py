"""JoyImageEditTransformer3DModel: single video input and multi-item (reference + target) input."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import JoyImageEditTransformer3DModel
from torch import nn

from cases import TIMESTEPS_1000, Call, Case, built, randn, seeded


def build() -> nn.Module:
    return built(
        JoyImageEditTransformer3DModel,
        patch_size=[1, 2, 2],
        in_channels=4,
        out_channels=4,
        hidden_size=24,
        num_attention_heads=2,
        text_dim=16,
        mlp_width_ratio=2.0,
        num_layers=2,
        rope_dim_list=[4, 4, 4],
    )()


def calls(model: nn.Module, batch: int, return_dict: bool, *, items: int = 0) -> list[Call]:
    gen = seeded(27)
    fixed: dict[str, Any] = {"encoder_hidden_states": randn(gen, batch, 5, 16), "return_dict": return_dict}
    shape = (batch, items, 4, 1, 8, 8) if items else (batch, 4, 2, 8, 8)
    return [
        ((), {"hidden_states": randn(gen, *shape), "timestep": torch.full((batch,), t), **fixed})
        for t in TIMESTEPS_1000
    ]


CASES = [
    Case("joyimage-edit", build, calls, tags=frozenset({"loop"}), attention_kwargs=None),
    Case(
        "joyimage-edit-multi-item",
        build,
        calls,
        {"items": 2},
        tags=frozenset({"dtype", "checkpointing"}),
        attention_kwargs=None,
    ),
]
