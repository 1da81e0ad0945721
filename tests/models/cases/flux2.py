"""Flux2Transformer2DModel: FLUX.2 [dev] style (guidance embedding) and [klein] style (no guidance); the single
blocks run on the concatenated text+image sequence."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import Flux2Transformer2DModel
from torch import nn

from cases import FLOW_TIMESTEPS, Call, Case, Refusal, built, randn, seeded


def build(guidance_embeds: bool = True) -> nn.Module:
    return built(
        Flux2Transformer2DModel,
        patch_size=1,
        in_channels=8,
        num_layers=1,
        num_single_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=24,
        timestep_guidance_channels=32,
        axes_dims_rope=(4, 4, 4, 4),
        guidance_embeds=guidance_embeds,
    )()


def calls(model: nn.Module, batch: int, return_dict: bool, *, guidance: bool = True, **extra: Any) -> list[Call]:
    gen = seeded(4)
    txt = 5
    img_ids = torch.stack(
        torch.meshgrid(torch.zeros(1), torch.arange(2.0), torch.arange(4.0), torch.zeros(1), indexing="ij"), -1
    ).reshape(-1, 4)
    txt_ids = torch.stack([torch.zeros(txt), torch.zeros(txt), torch.zeros(txt), torch.arange(float(txt))], -1)
    fixed: dict[str, Any] = {
        "encoder_hidden_states": randn(gen, batch, txt, 24),
        "img_ids": img_ids,
        "txt_ids": txt_ids,
        "return_dict": return_dict,
        **extra,
    }
    if guidance:
        fixed["guidance"] = torch.full((batch,), 4.0)
    return [
        ((), {"hidden_states": randn(gen, batch, 8, 8), "timestep": torch.full((batch,), t), **fixed})
        for t in FLOW_TIMESTEPS
    ]


_KW = {"attention_kwargs": "joint_attention_kwargs"}
CASES = [
    Case("flux2-dev", build, calls, tags=frozenset({"loop", "dtype", "checkpointing"}), **_KW),
    Case("flux2-klein", lambda: build(guidance_embeds=False), calls, {"guidance": False}, **_KW),
    Case("flux2-attention-kwargs", build, calls, {"joint_attention_kwargs": {}}, **_KW),
]


def _kv_call(model: nn.Module) -> Call:
    args, kwargs = calls(model, 1, True)[0]
    return args, {**kwargs, "kv_cache_mode": "extract", "num_ref_tokens": 2}


REFUSALS = [Refusal("flux2-reference-kv-cache", build, _kv_call, "kv_cache")]
