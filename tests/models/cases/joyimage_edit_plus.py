"""JoyImageEditPlusTransformer3DModel: per-sample component layouts (padded), joint image/text mask."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import JoyImageEditPlusTransformer3DModel
from torch import nn

from cases import TIMESTEPS_1000, Call, Case, built, randn, seeded


def build() -> nn.Module:
    return built(
        JoyImageEditPlusTransformer3DModel,
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


def calls(model: nn.Module, batch: int, return_dict: bool, *, mask: bool = False) -> list[Call]:
    gen = seeded(28)
    # sample 0: a reference image (1, 2, 2) and the target (1, 2, 2); sample 1: the target only (padded)
    shape_list = [[(1, 2, 2), (1, 2, 2)], [(1, 2, 2)]][:batch]
    fixed: dict[str, Any] = {
        "encoder_hidden_states": randn(gen, batch, 5, 16),
        "shape_list": shape_list,
        "return_dict": return_dict,
    }
    if mask:
        text_mask = torch.ones(batch, 5)
        text_mask[0, -2:] = 0
        fixed["encoder_hidden_states_mask"] = text_mask
    return [
        ((), {"hidden_states": randn(gen, batch, 8, 4, 1, 2, 2), "timestep": torch.full((batch,), t), **fixed})
        for t in TIMESTEPS_1000
    ]


CASES = [
    Case("joyimage-edit-plus", build, calls, tags=frozenset({"loop"}), attention_kwargs=None),
    Case(
        "joyimage-edit-plus-mask",
        build,
        calls,
        {"mask": True},
        tags=frozenset({"dtype", "checkpointing"}),
        attention_kwargs=None,
    ),
]
