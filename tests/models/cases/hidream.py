"""HiDreamImageTransformer2DModel: per-block Llama layers re-injected into both block kinds, square images (no
masks) and non-square images (padded tokens with masks), MoE feed-forwards."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import HiDreamImageTransformer2DModel
from torch import nn

from cases import Call, Case, built, randn, seeded


def build() -> nn.Module:
    return built(
        HiDreamImageTransformer2DModel,
        patch_size=2,
        in_channels=4,
        out_channels=4,
        num_layers=1,
        num_single_layers=2,
        attention_head_dim=8,
        num_attention_heads=2,
        caption_channels=[12, 10],
        text_emb_dim=8,
        num_routed_experts=2,
        num_activated_experts=1,
        axes_dims_rope=(2, 2, 4),
        max_resolution=(8, 8),
        llama_layers=[0, 1, 1],
    )()


def calls(model: nn.Module, batch: int, return_dict: bool, *, wide: bool = False, **extra: Any) -> list[Call]:
    gen = seeded(16)
    fixed: dict[str, Any] = {
        "encoder_hidden_states_t5": randn(gen, batch, 4, 12),
        "encoder_hidden_states_llama3": randn(gen, 2, batch, 3, 10),
        "pooled_embeds": randn(gen, batch, 8),
        "return_dict": return_dict,
        **extra,
    }
    shape = (batch, 4, 4, 8) if wide else (batch, 4, 8, 8)
    return [
        ((), {"hidden_states": randn(gen, *shape), "timesteps": torch.full((batch,), t), **fixed})
        for t in (999.0, 800.0, 550.0, 300.0)
    ]


_KW: dict[str, Any] = {
    "timestep": "timesteps",
    "condition": "encoder_hidden_states_t5",
    "positional": ("hidden_states", "timesteps", "encoder_hidden_states_t5"),
}
CASES = [
    Case("hidream", build, calls, tags=frozenset({"loop", "checkpointing"}), **_KW),
    Case("hidream-non-square", build, calls, {"wide": True, "attention_kwargs": {}}, tags=frozenset({"dtype"}), **_KW),
]
