"""AuraFlowTransformer2DModel: MMDiT blocks, then single blocks on the concatenated sequence; register tokens."""

from __future__ import annotations

import torch
from diffusers import AuraFlowTransformer2DModel
from torch import nn

from cases import TIMESTEPS_1000, Call, Case, built, randn, seeded


def build() -> nn.Module:
    return built(
        AuraFlowTransformer2DModel,
        sample_size=8,
        patch_size=2,
        in_channels=4,
        num_mmdit_layers=1,
        num_single_dit_layers=2,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=24,
        caption_projection_dim=16,
        out_channels=4,
        pos_embed_max_size=32,
    )()


def calls(model: nn.Module, batch: int, return_dict: bool) -> list[Call]:
    gen = seeded(14)
    prompt = randn(gen, batch, 5, 24)
    return [
        (
            (),
            {
                "hidden_states": randn(gen, batch, 4, 8, 8),
                "encoder_hidden_states": prompt,
                "timestep": torch.full((batch,), t / 1000),
                "attention_kwargs": {},
                "return_dict": return_dict,
            },
        )
        for t in TIMESTEPS_1000
    ]


CASES = [Case("auraflow", build, calls, tags=frozenset({"loop", "dtype", "checkpointing"}))]
