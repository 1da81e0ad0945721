"""SD3Transformer2DModel: SD3 (context_pre_only last block) and SD3.5 (dual-attention layers, QK norm), ControlNet
residuals (fewer samples than blocks)."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import SD3Transformer2DModel
from torch import nn

from cases import FLOW_TIMESTEPS, Call, Case, Refusal, built, randn, seeded


def build(sd35: bool = False) -> nn.Module:
    return built(
        SD3Transformer2DModel,
        sample_size=8,
        patch_size=2,
        in_channels=4,
        out_channels=4,
        num_layers=3,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=16,
        caption_projection_dim=16,
        pooled_projection_dim=8,
        pos_embed_max_size=8,
        dual_attention_layers=(0,) if sd35 else (),
        qk_norm="rms_norm" if sd35 else None,
    )()


def calls(model: nn.Module, batch: int, return_dict: bool, *, controlnet: int = 0, **extra: Any) -> list[Call]:
    gen = seeded(8)
    fixed: dict[str, Any] = {
        "encoder_hidden_states": randn(gen, batch, 5, 16),
        "pooled_projections": randn(gen, batch, 8),
        "return_dict": return_dict,
        **extra,
    }
    if controlnet:
        fixed["block_controlnet_hidden_states"] = [randn(gen, batch, 16, 16) * 0.1 for _ in range(controlnet)]
    return [
        ((), {"hidden_states": randn(gen, batch, 4, 8, 8), "timestep": torch.full((batch,), t), **fixed})
        for t in (999.0 * t for t in FLOW_TIMESTEPS)
    ]


_KW = {"attention_kwargs": "joint_attention_kwargs"}
CASES = [
    Case("sd3", build, calls, tags=frozenset({"loop", "checkpointing"}), **_KW),
    Case("sd35", lambda: build(sd35=True), calls, {"joint_attention_kwargs": {}}, tags=frozenset({"dtype"}), **_KW),
    Case("sd3-controlnet", build, calls, {"controlnet": 2}, tags=frozenset({"dtype"}), **_KW),
]


def _slg_call(model: nn.Module) -> Call:
    args, kwargs = calls(model, 1, True)[0]
    return args, {**kwargs, "skip_layers": [1]}


REFUSALS = [Refusal("sd3-skip-layer-guidance", build, _slg_call, "skip_layers")]
