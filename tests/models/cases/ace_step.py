"""AceStepTransformer1DModel: sliding and full attention layers, (t, r) timesteps, context latents, odd length."""

from __future__ import annotations

import itertools

import torch
from diffusers import AceStepTransformer1DModel
from torch import nn

from cases import Call, Case, built, randn, seeded


def build() -> nn.Module:
    return built(
        AceStepTransformer1DModel,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        in_channels=8,
        audio_acoustic_hidden_dim=4,
        patch_size=2,
        sliding_window=4,
        layer_types=["sliding_attention", "full_attention"],
    )()


def calls(model: nn.Module, batch: int, return_dict: bool) -> list[Call]:
    gen = seeded(36)
    length = 11  # padded to the patch size inside the model
    fixed = {
        "encoder_hidden_states": randn(gen, batch, 5, 32),
        "context_latents": randn(gen, batch, length, 4),
        "return_dict": return_dict,
        "attention_kwargs": {},
    }
    steps = (1.0, 0.75, 0.5, 0.25, 0.0)
    return [
        (
            (),
            {
                "hidden_states": randn(gen, batch, length, 4),
                "timestep": torch.full((batch,), t),
                "timestep_r": torch.full((batch,), r),
                **fixed,
            },
        )
        for t, r in itertools.pairwise(steps)
    ]


CASES = [Case("ace-step", build, calls, tags=frozenset({"loop", "dtype", "checkpointing"}))]
