"""JoyImageEditTransformer3DModel: a single item (5-D latents) and multi-item editing (6-D latents: references and
the target folded into the frame axis)."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import JoyImageEditTransformer3DModel
from torch import nn

from cases import Call, Case, built, randn, seeded


def build() -> nn.Module:
    return built(
        JoyImageEditTransformer3DModel,
        patch_size=[1, 2, 2],
        in_channels=4,
        out_channels=4,
        hidden_size=32,
        num_attention_heads=2,
        text_dim=12,
        mlp_width_ratio=2.0,
        num_layers=3,
        rope_dim_list=[4, 6, 6],
    )()


def calls(model: nn.Module, batch: int, return_dict: bool, *, items: int = 0, **extra: Any) -> list[Call]:
    gen = seeded(38)
    shape = (batch, items, 4, 1, 8, 8) if items else (batch, 4, 1, 8, 8)
    fixed: dict[str, Any] = {"encoder_hidden_states": randn(gen, batch, 5, 12), "return_dict": return_dict, **extra}
    return [
        ((), {"hidden_states": randn(gen, *shape), "timestep": torch.full((batch,), t), **fixed})
        for t in (999.0, 800.0, 550.0, 300.0)
    ]


CASES = [
    Case("joyimage-edit", build, calls, tags=frozenset({"loop", "dtype", "checkpointing"}), attention_kwargs=None),
    Case("joyimage-edit-multi-item", build, calls, {"items": 2}, tags=frozenset({"dtype"}), attention_kwargs=None),
]
