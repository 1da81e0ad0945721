"""DiTTransformer2DModel: class-conditional AdaLN-Zero blocks, no text stream."""

from __future__ import annotations

import torch
from diffusers import DiTTransformer2DModel
from torch import nn

from cases import Call, Case, built, randn, seeded


def build() -> nn.Module:
    return built(
        DiTTransformer2DModel,
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=8,
        num_layers=2,
        sample_size=8,
        patch_size=2,
        num_embeds_ada_norm=10,
    )()


def calls(model: nn.Module, batch: int, return_dict: bool) -> list[Call]:
    gen = seeded(22)
    labels = torch.tensor([3, 10][:batch] + [3] * max(0, batch - 2))  # 10 = the null class of CFG
    return [
        (
            (),
            {
                "hidden_states": randn(gen, batch, 4, 8, 8),
                "timestep": torch.full((batch,), t, dtype=torch.long),
                "class_labels": labels,
                "cross_attention_kwargs": {},
                "return_dict": return_dict,
            },
        )
        for t in (999, 800, 550, 300)
    ]


CASES = [
    Case(
        "dit",
        build,
        calls,
        tags=frozenset({"loop", "dtype", "checkpointing"}),
        condition="class_labels",
        positional=("hidden_states", "timestep", "class_labels"),
        attention_kwargs=None,
    )
]
