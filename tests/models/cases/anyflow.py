"""AnyFlowTransformer3DModel: frames-first latents, flow-map (t, r) timesteps."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import AnyFlowTransformer3DModel
from torch import nn

from cases import Call, Case, built, randn, seeded


def build() -> nn.Module:
    return built(
        AnyFlowTransformer3DModel,
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=4,
        out_channels=4,
        text_dim=16,
        freq_dim=32,
        ffn_dim=48,
        num_layers=3,
        rope_max_seq_len=32,
    )()


def calls(model: nn.Module, batch: int, return_dict: bool, **extra: Any) -> list[Call]:
    gen = seeded(33)
    fixed: dict[str, Any] = {"encoder_hidden_states": randn(gen, batch, 7, 16), "return_dict": return_dict, **extra}
    return [
        (
            (),
            {
                "hidden_states": randn(gen, batch, 2, 4, 4, 4),
                "timestep": torch.full((batch, 2), t),  # one per latent frame, as the pipeline passes them
                "r_timestep": torch.full((batch, 2), t * 0.8),
                **fixed,
            },
        )
        for t in (999.0, 800.0, 550.0, 300.0)
    ]


CASES = [
    Case("anyflow", build, calls, tags=frozenset({"loop", "dtype", "checkpointing"})),
    Case("anyflow-attention-kwargs", build, calls, {"attention_kwargs": {}}),
]
