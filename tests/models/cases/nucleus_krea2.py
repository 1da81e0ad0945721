"""NucleusMoEImageTransformer2DModel (MoE blocks, text mask) and Krea2Transformer2DModel (text fusion encoder,
one joint sequence, text mask)."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import Krea2Transformer2DModel, NucleusMoEImageTransformer2DModel
from torch import nn

from cases import Call, Case, built, randn, seeded


def nucleus() -> nn.Module:
    return built(
        NucleusMoEImageTransformer2DModel,
        patch_size=2,
        in_channels=16,
        out_channels=4,
        num_layers=3,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=12,
        axes_dims_rope=(4, 6, 6),
        num_experts=4,
        moe_intermediate_dim=16,
        capacity_factors=2.0,
    )()


def nucleus_calls(model: nn.Module, batch: int, return_dict: bool, *, mask: bool = False, **extra: Any) -> list[Call]:
    gen = seeded(36)
    fixed: dict[str, Any] = {
        "img_shapes": [(1, 2, 4)] * batch,
        "encoder_hidden_states": randn(gen, batch, 5, 12),
        "return_dict": return_dict,
        **extra,
    }
    if mask:
        m = torch.ones(batch, 5, dtype=torch.long)
        m[0, 3:] = 0
        fixed["encoder_hidden_states_mask"] = m
    return [
        ((), {"hidden_states": randn(gen, batch, 8, 16), "timestep": torch.full((batch,), t), **fixed})
        for t in (0.9, 0.7, 0.5, 0.3)
    ]


def krea2() -> nn.Module:
    return built(
        Krea2Transformer2DModel,
        in_channels=8,
        num_layers=3,
        attention_head_dim=16,
        num_attention_heads=2,
        num_key_value_heads=1,
        intermediate_size=48,
        timestep_embed_dim=16,
        text_hidden_dim=12,
        num_text_layers=2,
        text_num_attention_heads=2,
        text_num_key_value_heads=2,
        text_intermediate_size=24,
        num_layerwise_text_blocks=1,
        num_refiner_text_blocks=1,
        axes_dims_rope=(4, 6, 6),
    )()


def krea2_calls(model: nn.Module, batch: int, return_dict: bool, *, mask: bool = False, **extra: Any) -> list[Call]:
    gen = seeded(37)
    text = 5
    image_ids = torch.zeros(2, 4, 3)
    image_ids[..., 1] = torch.arange(2.0)[:, None]
    image_ids[..., 2] = torch.arange(4.0)[None, :]
    fixed: dict[str, Any] = {
        "encoder_hidden_states": randn(gen, batch, text, 2, 12),
        "position_ids": torch.cat([torch.zeros(text, 3), image_ids.reshape(8, 3)]),
        "return_dict": return_dict,
        **extra,
    }
    if mask:
        m = torch.ones(batch, text, dtype=torch.bool)
        m[0, 3:] = False
        fixed["encoder_attention_mask"] = m
    return [
        ((), {"hidden_states": randn(gen, batch, 8, 8), "timestep": torch.full((batch,), t), **fixed})
        for t in (0.9, 0.7, 0.5, 0.3)
    ]


_ALL_TAGS = frozenset({"loop", "dtype", "checkpointing"})
CASES = [
    Case("nucleus-moe", nucleus, nucleus_calls, tags=_ALL_TAGS),
    Case("nucleus-moe-mask", nucleus, nucleus_calls, {"mask": True, "attention_kwargs": {}}),
    Case("krea2", krea2, krea2_calls, tags=_ALL_TAGS),
    Case("krea2-mask", krea2, krea2_calls, {"mask": True, "attention_kwargs": {}}),
]
