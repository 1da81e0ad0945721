"""PixArtTransformer2DModel: PixArt-Sigma style (text mask) and PixArt-alpha style (resolution and aspect-ratio
conditions)."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import PixArtTransformer2DModel
from torch import nn

from cases import Call, Case, built, randn, seeded


def build(alpha: bool = False) -> nn.Module:
    return built(
        PixArtTransformer2DModel,
        num_attention_heads=3 if alpha else 2,  # alpha's size embeddings split the width in 3
        attention_head_dim=8,
        in_channels=4,
        out_channels=8,
        num_layers=3,
        cross_attention_dim=24 if alpha else 16,
        sample_size=8,
        patch_size=2,
        caption_channels=12,
        use_additional_conditions=alpha,
    )()


def calls(model: nn.Module, batch: int, return_dict: bool, *, alpha: bool = False, **extra: Any) -> list[Call]:
    gen = seeded(18)
    mask = torch.ones(batch, 5, dtype=torch.long)
    mask[0, 3:] = 0
    fixed: dict[str, Any] = {
        "encoder_hidden_states": randn(gen, batch, 5, 12),
        "encoder_attention_mask": mask,
        "added_cond_kwargs": {"resolution": None, "aspect_ratio": None},
        "return_dict": return_dict,
        **extra,
    }
    if alpha:
        fixed["added_cond_kwargs"] = {
            "resolution": torch.tensor([[64.0, 64.0]] * batch),
            "aspect_ratio": torch.tensor([[1.0]] * batch),
        }
    return [
        ((), {"hidden_states": randn(gen, batch, 4, 8, 8), "timestep": torch.full((batch,), t), **fixed})
        for t in (999.0, 800.0, 550.0, 300.0)
    ]


CASES = [
    Case("pixart-sigma", build, calls, tags=frozenset({"loop", "checkpointing", "dtype"}), attention_kwargs=None),
    Case("pixart-alpha", lambda: build(alpha=True), calls, {"alpha": True}, attention_kwargs=None),
]
