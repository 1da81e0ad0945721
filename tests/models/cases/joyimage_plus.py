"""JoyImageEditPlusTransformer3DModel: pre-patched tokens of several items per sample (padded to the longest), the
image + text mask."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import JoyImageEditPlusTransformer3DModel
from torch import nn

from cases import Call, Case, built, randn, seeded


def build() -> nn.Module:
    return built(
        JoyImageEditPlusTransformer3DModel,
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


def calls(model: nn.Module, batch: int, return_dict: bool, **extra: Any) -> list[Call]:
    gen = seeded(39)
    shapes = [[(1, 2, 4), (1, 2, 2)], [(1, 2, 4)]][:batch] if batch > 1 else [[(1, 2, 4), (1, 2, 2)]]
    shapes = (shapes * batch)[:batch]
    mask = torch.ones(batch, 5, dtype=torch.long)
    mask[0, 3:] = 0
    fixed: dict[str, Any] = {
        "encoder_hidden_states": randn(gen, batch, 5, 12),
        "encoder_hidden_states_mask": mask,
        "shape_list": shapes,
        "return_dict": return_dict,
        **extra,
    }
    return [
        ((), {"hidden_states": randn(gen, batch, 12, 4, 1, 2, 2), "timestep": torch.full((batch,), t), **fixed})
        for t in (999.0, 800.0, 550.0, 300.0)
    ]


CASES = [
    Case("joyimage-edit-plus", build, calls, tags=frozenset({"loop", "dtype", "checkpointing"}), attention_kwargs=None)
]
