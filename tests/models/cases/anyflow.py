"""AnyFlowTransformer3DModel: Wan-style blocks with (t, r) flow-map timesteps; image tokens."""

from __future__ import annotations

import itertools
from typing import Any

import torch
from diffusers import AnyFlowTransformer3DModel
from torch import nn

from cases import Call, Case, built, randn, seeded


def build(i2v: bool = False) -> nn.Module:
    return built(
        AnyFlowTransformer3DModel,
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=4,
        out_channels=4,
        text_dim=16,
        freq_dim=16,
        ffn_dim=32,
        num_layers=2,
        image_dim=20 if i2v else None,
        rope_max_seq_len=32,
    )()


def calls(model: nn.Module, batch: int, return_dict: bool, *, i2v: bool = False) -> list[Call]:
    gen = seeded(25)
    fixed: dict[str, Any] = {"encoder_hidden_states": randn(gen, batch, 5, 16), "return_dict": return_dict}
    if i2v:
        fixed["encoder_hidden_states_image"] = randn(gen, batch, 3, 20)
        fixed["attention_kwargs"] = {}
    steps = (1000.0, 750.0, 500.0, 250.0, 0.0)
    return [
        (
            (),
            {
                "hidden_states": randn(gen, batch, 2, 4, 8, 8),  # (batch, frames, channels, height, width)
                "timestep": torch.full((batch, 2), t),  # one timestep per latent frame
                "r_timestep": torch.full((batch, 2), r),
                **fixed,
            },
        )
        for t, r in itertools.pairwise(steps)
    ]


CASES = [
    Case("anyflow", build, calls, tags=frozenset({"loop"})),
    Case("anyflow-i2v", lambda: build(i2v=True), calls, {"i2v": True}, tags=frozenset({"dtype", "checkpointing"})),
]
