"""CogView3PlusTransformer2DModel: joint patch embedding split into the two streams, size/crop conditions."""

from __future__ import annotations

import torch
from diffusers import CogView3PlusTransformer2DModel
from torch import nn

from cases import TIMESTEPS_1000, Call, Case, built, randn, seeded


def build() -> nn.Module:
    return built(
        CogView3PlusTransformer2DModel,
        patch_size=2,
        in_channels=4,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=2,
        out_channels=4,
        text_embed_dim=24,
        time_embed_dim=16,
        condition_dim=8,
        pos_embed_max_size=16,
        sample_size=8,
    )()


def calls(model: nn.Module, batch: int, return_dict: bool) -> list[Call]:
    gen = seeded(16)
    prompt = randn(gen, batch, 6, 24)
    sizes = {
        "original_size": torch.tensor([[32.0, 32.0]] * batch),
        "target_size": torch.tensor([[32.0, 32.0]] * batch),
        "crop_coords": torch.tensor([[0.0, 0.0]] * batch),
    }
    return [
        (
            (),
            {
                "hidden_states": randn(gen, batch, 4, 8, 8),
                "encoder_hidden_states": prompt,
                "timestep": torch.full((batch,), t),
                "return_dict": return_dict,
                **sizes,
            },
        )
        for t in TIMESTEPS_1000
    ]


CASES = [Case("cogview3plus", build, calls, tags=frozenset({"loop", "dtype", "checkpointing"}), attention_kwargs=None)]
