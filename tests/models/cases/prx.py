"""PRXTransformer2DModel: text as K/V with a padding mask; PRX-7B resolution conditioning."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import PRXTransformer2DModel
from torch import nn

from cases import Call, Case, built, randn, seeded


def build(resolution_embeds: bool = False) -> nn.Module:
    return built(
        PRXTransformer2DModel,
        in_channels=4,
        patch_size=2,
        context_in_dim=16,
        hidden_size=24,
        mlp_ratio=2.0,
        num_heads=2,
        depth=2,
        axes_dim=[6, 6],
        resolution_embeds=resolution_embeds,
    )()


def calls(model: nn.Module, batch: int, return_dict: bool, *, mask: bool = False) -> list[Call]:
    gen = seeded(29)
    fixed: dict[str, Any] = {"encoder_hidden_states": randn(gen, batch, 5, 16), "return_dict": return_dict}
    if mask:
        text_mask = torch.ones(batch, 5, dtype=torch.bool)
        text_mask[0, -2:] = False
        fixed["attention_mask"] = text_mask
    return [
        ((), {"hidden_states": randn(gen, batch, 4, 8, 8), "timestep": torch.full((batch,), t), **fixed})
        for t in (1.0, 0.8, 0.55, 0.3)
    ]


CASES = [
    Case("prx", build, calls, tags=frozenset({"loop"}), attention_kwargs=None),
    Case(
        "prx-7b-mask",
        lambda: build(resolution_embeds=True),
        calls,
        {"mask": True},
        tags=frozenset({"dtype", "checkpointing"}),
        attention_kwargs=None,
    ),
]
