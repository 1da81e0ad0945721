"""CogVideoXTransformer3DModel: CogVideoX (sinusoidal positions), with rotary embeddings passed in, and
CogVideoX1.5 (temporal patches, ``ofs`` embedding of the I2V model)."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import CogVideoXTransformer3DModel
from torch import nn

from cases import Call, Case, built, randn, seeded


def build(rope: bool = False, v15: bool = False) -> nn.Module:
    return built(
        CogVideoXTransformer3DModel,
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=4,
        time_embed_dim=8,
        ofs_embed_dim=8 if v15 else None,
        text_embed_dim=12,
        num_layers=3,
        sample_width=8,
        sample_height=8,
        sample_frames=9,
        patch_size=2,
        patch_size_t=2 if v15 else None,
        max_text_seq_length=5,
        use_rotary_positional_embeddings=rope or v15,
    )()


def calls(
    model: nn.Module, batch: int, return_dict: bool, *, rope: bool = False, v15: bool = False, **extra: Any
) -> list[Call]:
    gen = seeded(13)
    frames = 4 if v15 else 3
    tokens = (frames // 2 if v15 else frames) * 4 * 4
    fixed: dict[str, Any] = {"encoder_hidden_states": randn(gen, batch, 5, 12), "return_dict": return_dict, **extra}
    if rope:
        fixed["image_rotary_emb"] = (randn(gen, tokens, 8), randn(gen, tokens, 8))
    if v15:
        fixed["ofs"] = torch.full((batch,), 2.0)
    return [
        (
            (),
            {
                "hidden_states": randn(gen, batch, frames, 4, 8, 8),
                "timestep": torch.full((batch,), t, dtype=torch.long),
                **fixed,
            },
        )
        for t in (999, 800, 550, 300)
    ]


CASES = [
    Case("cogvideox", build, calls, tags=frozenset({"loop", "checkpointing"})),
    Case(
        "cogvideox-rope",
        lambda: build(rope=True),
        calls,
        {"rope": True, "attention_kwargs": {}},
        tags=frozenset({"dtype"}),
    ),
    Case("cogvideox1.5-i2v", lambda: build(v15=True), calls, {"rope": True, "v15": True}, tags=frozenset({"dtype"})),
]
