"""BriaTransformer2DModel: ControlNet residuals on both lists, attention kwargs.

No guidance case: ``guidance_embeds=True`` cannot be built in diffusers 0.42 (``BriaTimestepProjEmbeddings`` is
constructed without its required ``time_theta``), so the guidance branch of the forward is unreachable.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import BriaTransformer2DModel
from torch import nn

from cases import TIMESTEPS_1000, Call, Case, built, randn, seeded


def build() -> nn.Module:
    return built(
        BriaTransformer2DModel,
        patch_size=1,
        in_channels=8,
        num_layers=2,
        num_single_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=24,
        axes_dims_rope=[4, 6, 6],
    )()


def calls(
    model: nn.Module,
    batch: int,
    return_dict: bool,
    *,
    controlnet: int = 0,
    controlnet_single: int = 0,
) -> list[Call]:
    gen = seeded(13)
    img, txt, dim = 8, 5, model.inner_dim
    img_ids = torch.stack(torch.meshgrid(torch.zeros(1), torch.arange(2.0), torch.arange(4.0), indexing="ij"), -1)
    fixed: dict[str, Any] = {
        "encoder_hidden_states": randn(gen, batch, txt, 24),
        "img_ids": img_ids.reshape(-1, 3),
        "txt_ids": torch.zeros(txt, 3),
        "attention_kwargs": {},
        "return_dict": return_dict,
    }
    if controlnet:
        fixed["controlnet_block_samples"] = [randn(gen, batch, img, dim) * 0.1 for _ in range(controlnet)]
    if controlnet_single:  # diffusers adds these to the image tokens past the text length
        fixed["controlnet_single_block_samples"] = [
            randn(gen, batch, img - txt, dim) * 0.1 for _ in range(controlnet_single)
        ]
    return [
        ((), {"hidden_states": randn(gen, batch, img, 8), "timestep": torch.full((batch,), t), **fixed})
        for t in TIMESTEPS_1000
    ]


CASES = [
    Case("bria", build, calls, tags=frozenset({"loop"})),
    Case(
        "bria-controlnet",
        build,
        calls,
        {"controlnet": 1, "controlnet_single": 2},
        tags=frozenset({"dtype", "checkpointing"}),
    ),
]
