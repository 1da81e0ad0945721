"""ChromaTransformer2DModel: per-block modulation slices, attention mask over text+image, both ControlNet kinds
(the single-list residuals reach the image tokens only)."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import ChromaTransformer2DModel
from torch import nn

from cases import FLOW_TIMESTEPS, Call, Case, built, randn, seeded

TXT, IMG = 5, 8


def build() -> nn.Module:
    return built(
        ChromaTransformer2DModel,
        patch_size=1,
        in_channels=8,
        num_layers=2,
        num_single_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=24,
        axes_dims_rope=(4, 6, 6),
        approximator_num_channels=16,
        approximator_hidden_dim=32,
        approximator_layers=1,
    )()


def calls(
    model: nn.Module, batch: int, return_dict: bool, *, mask: bool = False, controlnet: bool = False, **extra: Any
) -> list[Call]:
    gen = seeded(14)
    dim = 32
    img_ids = torch.stack(torch.meshgrid(torch.zeros(1), torch.arange(2.0), torch.arange(4.0), indexing="ij"), -1)
    fixed: dict[str, Any] = {
        "encoder_hidden_states": randn(gen, batch, TXT, 24),
        "img_ids": img_ids.reshape(-1, 3),
        "txt_ids": torch.zeros(TXT, 3),
        "return_dict": return_dict,
        **extra,
    }
    if mask:
        m = torch.ones(batch, TXT + IMG, dtype=torch.bool)
        m[0, 3:TXT] = False
        fixed["attention_mask"] = m
    if controlnet:
        fixed["controlnet_block_samples"] = [randn(gen, batch, IMG, dim) * 0.1]
        fixed["controlnet_single_block_samples"] = [randn(gen, batch, IMG, dim) * 0.1 for _ in range(2)]
    return [
        ((), {"hidden_states": randn(gen, batch, IMG, 8), "timestep": torch.full((batch,), t), **fixed})
        for t in FLOW_TIMESTEPS
    ]


_KW = {"attention_kwargs": "joint_attention_kwargs"}
CASES = [
    Case("chroma", build, calls, tags=frozenset({"loop", "checkpointing"}), **_KW),
    Case("chroma-mask", build, calls, {"mask": True, "joint_attention_kwargs": {}}, tags=frozenset({"dtype"}), **_KW),
    Case("chroma-controlnet", build, calls, {"controlnet": True}, tags=frozenset({"dtype"}), **_KW),
]
