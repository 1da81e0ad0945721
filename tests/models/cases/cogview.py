"""CogView4Transformer2DModel (RoPE, text masks) and CogView3PlusTransformer2DModel (sinusoidal positions)."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import CogView3PlusTransformer2DModel, CogView4Transformer2DModel
from torch import nn

from cases import Call, Case, built, randn, seeded

_COMMON: dict[str, Any] = {
    "patch_size": 2,
    "in_channels": 4,
    "out_channels": 4,
    "num_layers": 3,
    "attention_head_dim": 8,
    "num_attention_heads": 2,
    "text_embed_dim": 12,
    "time_embed_dim": 8,
    "condition_dim": 4,
    "pos_embed_max_size": 8,
    "sample_size": 8,
}


def cogview4() -> nn.Module:
    return built(CogView4Transformer2DModel, **_COMMON, rope_axes_dim=(4, 4))()


def cogview3plus() -> nn.Module:
    return built(CogView3PlusTransformer2DModel, **_COMMON)()


def calls(model: nn.Module, batch: int, return_dict: bool, *, mask: bool = False, **extra: Any) -> list[Call]:
    gen = seeded(23)
    fixed: dict[str, Any] = {
        "encoder_hidden_states": randn(gen, batch, 5, 12),
        "original_size": torch.tensor([[64.0, 64.0]] * batch),
        "target_size": torch.tensor([[64.0, 64.0]] * batch),
        "crop_coords": torch.tensor([[0.0, 0.0]] * batch),
        "return_dict": return_dict,
        **extra,
    }
    if mask:
        m = torch.ones(batch, 5, dtype=torch.bool)
        m[0, 3:5] = False
        fixed["attention_mask"] = m
    return [
        ((), {"hidden_states": randn(gen, batch, 4, 8, 8), "timestep": torch.full((batch,), t), **fixed})
        for t in (999.0, 800.0, 550.0, 300.0)
    ]


_ALL_TAGS = frozenset({"loop", "dtype", "checkpointing"})
CASES = [
    Case("cogview4", cogview4, calls, tags=_ALL_TAGS),
    Case("cogview4-mask", cogview4, calls, {"mask": True, "attention_kwargs": {}}),
    Case("cogview3plus", cogview3plus, calls, tags=_ALL_TAGS, attention_kwargs=None),
]
