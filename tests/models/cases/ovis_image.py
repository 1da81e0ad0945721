"""OvisImageTransformer2DModel: a FLUX.1 layout with an RMS-normalised text projection; 3-D ids, attention kwargs."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import OvisImageTransformer2DModel
from torch import nn

from cases import FLOW_TIMESTEPS, Call, Case, built, randn, seeded


def build() -> nn.Module:
    return built(
        OvisImageTransformer2DModel,
        patch_size=1,
        in_channels=8,
        out_channels=8,
        num_layers=1,
        num_single_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=24,
        axes_dims_rope=(4, 6, 6),
    )()


def calls(model: nn.Module, batch: int, return_dict: bool, *, batched_ids: bool = False) -> list[Call]:
    gen = seeded(12)
    img, txt = 8, 5
    img_ids = torch.stack(torch.meshgrid(torch.zeros(1), torch.arange(2.0), torch.arange(4.0), indexing="ij"), -1)
    img_ids, txt_ids = img_ids.reshape(-1, 3), torch.zeros(txt, 3)
    if batched_ids:  # deprecated (batch, seq, 3) ids: diffusers warns and takes the first
        img_ids, txt_ids = img_ids[None], txt_ids[None]
    fixed: dict[str, Any] = {
        "encoder_hidden_states": randn(gen, batch, txt, 24),
        "img_ids": img_ids,
        "txt_ids": txt_ids,
        "joint_attention_kwargs": {},
        "return_dict": return_dict,
    }
    return [
        ((), {"hidden_states": randn(gen, batch, img, 8), "timestep": torch.full((batch,), t), **fixed})
        for t in FLOW_TIMESTEPS
    ]


_OVIS = {"attention_kwargs": "joint_attention_kwargs"}
CASES = [
    Case("ovis-image", build, calls, tags=frozenset({"loop", "dtype", "checkpointing"}), **_OVIS),
    Case("ovis-image-batched-ids", build, calls, {"batched_ids": True}, **_OVIS),
]
