"""EasyAnimateTransformer3DModel (Qwen + T5 text, inpaint latents) and AuraFlowTransformer2DModel (register
tokens, joint then single blocks)."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import AuraFlowTransformer2DModel, EasyAnimateTransformer3DModel
from torch import nn

from cases import Call, Case, built, randn, seeded


def easyanimate(in_channels: int = 4, t5: bool = False) -> nn.Module:
    return built(
        EasyAnimateTransformer3DModel,
        num_attention_heads=2,
        attention_head_dim=16,  # 3-D RoPE splits the head in 1/4 + 3/8 + 3/8, each even
        in_channels=in_channels,
        out_channels=4,
        patch_size=2,
        sample_width=8,
        sample_height=8,
        num_layers=3,
        mmdit_layers=3,
        time_embed_dim=8,
        text_embed_dim=12,
        text_embed_dim_t5=10 if t5 else None,
    )()


def easyanimate_calls(
    model: nn.Module, batch: int, return_dict: bool, *, t5: bool = False, inpaint: bool = False, **extra: Any
) -> list[Call]:
    gen = seeded(26)
    fixed: dict[str, Any] = {"encoder_hidden_states": randn(gen, batch, 5, 12), "return_dict": return_dict, **extra}
    if t5:
        fixed["encoder_hidden_states_t5"] = randn(gen, batch, 4, 10)
    if inpaint:
        fixed["inpaint_latents"] = randn(gen, batch, 2, 2, 8, 8)
    return [
        ((), {"hidden_states": randn(gen, batch, 4, 2, 8, 8), "timestep": torch.full((batch,), t), **fixed})
        for t in (999.0, 800.0, 550.0, 300.0)
    ]


def auraflow() -> nn.Module:
    return built(
        AuraFlowTransformer2DModel,
        sample_size=8,
        patch_size=2,
        in_channels=4,
        num_mmdit_layers=1,
        num_single_dit_layers=2,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=12,
        caption_projection_dim=16,
        out_channels=4,
        pos_embed_max_size=64,
    )()


def auraflow_calls(model: nn.Module, batch: int, return_dict: bool, **extra: Any) -> list[Call]:
    gen = seeded(27)
    fixed: dict[str, Any] = {"encoder_hidden_states": randn(gen, batch, 5, 12), "return_dict": return_dict, **extra}
    return [
        ((), {"hidden_states": randn(gen, batch, 4, 8, 8), "timestep": torch.full((batch,), t), **fixed})
        for t in (999.0, 800.0, 550.0, 300.0)
    ]


_ALL_TAGS = frozenset({"loop", "dtype", "checkpointing"})
CASES = [
    Case("easyanimate", easyanimate, easyanimate_calls, tags=_ALL_TAGS, attention_kwargs=None),
    Case(
        "easyanimate-t5-inpaint",
        lambda: easyanimate(in_channels=6, t5=True),
        easyanimate_calls,
        {"t5": True, "inpaint": True},
        attention_kwargs=None,
    ),
    Case("auraflow", auraflow, auraflow_calls, tags=_ALL_TAGS),
    Case("auraflow-attention-kwargs", auraflow, auraflow_calls, {"attention_kwargs": {}}),
]
