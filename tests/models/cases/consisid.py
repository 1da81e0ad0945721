"""ConsisIDTransformer3DModel: without and with the face-ID branch (perceiver cross-attention injected after every
second block)."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import ConsisIDTransformer3DModel
from torch import nn

from cases import Call, Case, built, randn, seeded


def build(face: bool = False) -> nn.Module:
    return built(
        ConsisIDTransformer3DModel,
        num_attention_heads=3 if face else 2,  # the perceiver's K/V width is 2/3 of the model width
        attention_head_dim=16 if face else 8,
        in_channels=4,
        out_channels=4,
        time_embed_dim=8,
        text_embed_dim=12,
        num_layers=4 if face else 3,  # one perceiver per interval
        sample_width=8,
        sample_height=8,
        sample_frames=9,
        patch_size=2,
        max_text_seq_length=5,
        is_train_face=face,
        cross_attn_interval=2,
        cross_attn_dim_head=8,
        cross_attn_num_heads=2,
        LFE_id_dim=8,
        LFE_vit_dim=8,
        LFE_depth=2,
        LFE_dim_head=8,
        LFE_num_heads=2,
        LFE_num_id_token=2,
        LFE_num_querie=4,
        LFE_output_dim=32,
        LFE_ff_mult=1,
        LFE_num_scale=2,
    )()


def calls(model: nn.Module, batch: int, return_dict: bool, *, face: bool = False, **extra: Any) -> list[Call]:
    gen = seeded(31)
    fixed: dict[str, Any] = {"encoder_hidden_states": randn(gen, batch, 5, 12), "return_dict": return_dict, **extra}
    if face:
        fixed["id_cond"] = randn(gen, batch, 8)
        fixed["id_vit_hidden"] = [randn(gen, batch, 3, 8) for _ in range(2)]
    return [
        (
            (),
            {
                "hidden_states": randn(gen, batch, 3, 4, 8, 8),
                "timestep": torch.full((batch,), t, dtype=torch.long),
                **fixed,
            },
        )
        for t in (999, 800, 550, 300)
    ]


CASES = [
    Case("consisid", build, calls, tags=frozenset({"loop", "checkpointing"})),
    Case(
        "consisid-face",
        lambda: build(face=True),
        calls,
        {"face": True, "attention_kwargs": {}},
        tags=frozenset({"dtype", "loop"}),
    ),
]
