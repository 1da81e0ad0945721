"""FluxTransformer2DModel: guidance, both ControlNet kinds (interval and XLabs repeat), attention kwargs."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import FluxTransformer2DModel
from torch import nn

from cases import FLOW_TIMESTEPS, Call, Case, built, randn, seeded


def build(guidance_embeds: bool = False) -> nn.Module:
    return built(
        FluxTransformer2DModel,
        patch_size=1,
        in_channels=8,
        num_layers=2,
        num_single_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=24,
        pooled_projection_dim=16,
        guidance_embeds=guidance_embeds,
        axes_dims_rope=(4, 6, 6),
    )()


def calls(
    model: nn.Module,
    batch: int,
    return_dict: bool,
    *,
    guidance: bool = False,
    controlnet: int = 0,
    controlnet_single: int = 0,
    repeat: bool = False,
    joint_attention_kwargs: dict[str, Any] | None = None,
) -> list[Call]:
    gen = seeded(1)
    img, txt, dim = 8, 5, model.inner_dim
    img_ids = torch.stack(torch.meshgrid(torch.zeros(1), torch.arange(2.0), torch.arange(4.0), indexing="ij"), -1)
    fixed: dict[str, Any] = {
        "encoder_hidden_states": randn(gen, batch, txt, 24),
        "pooled_projections": randn(gen, batch, 16),
        "img_ids": img_ids.reshape(-1, 3),
        "txt_ids": torch.zeros(txt, 3),
        "return_dict": return_dict,
    }
    if guidance:
        fixed["guidance"] = torch.full((batch,), 3.5)
    if controlnet:
        fixed["controlnet_block_samples"] = [randn(gen, batch, img, dim) * 0.1 for _ in range(controlnet)]
        fixed["controlnet_blocks_repeat"] = repeat
    if controlnet_single:
        fixed["controlnet_single_block_samples"] = [randn(gen, batch, img, dim) * 0.1 for _ in range(controlnet_single)]
    if joint_attention_kwargs is not None:
        fixed["joint_attention_kwargs"] = joint_attention_kwargs
    return [
        ((), {"hidden_states": randn(gen, batch, img, 8), "timestep": torch.full((batch,), t), **fixed})
        for t in FLOW_TIMESTEPS
    ]


_FLUX = {"attention_kwargs": "joint_attention_kwargs"}
CASES = [
    Case("flux", build, calls, tags=frozenset({"loop"}), **_FLUX),
    Case(
        "flux-guidance",
        lambda: build(guidance_embeds=True),
        calls,
        {"guidance": True},
        tags=frozenset({"dtype"}),
        **_FLUX,
    ),
    Case(
        "flux-controlnet",
        build,
        calls,
        {"controlnet": 1, "controlnet_single": 2, "joint_attention_kwargs": {}},
        tags=frozenset({"dtype", "checkpointing"}),
        **_FLUX,
    ),
    Case("flux-controlnet-repeat", build, calls, {"controlnet": 1, "repeat": True}, **_FLUX),
]
