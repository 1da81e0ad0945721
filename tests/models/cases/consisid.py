"""ConsisIDTransformer3DModel: CogVideoX blocks with the face perceiver injected every N blocks; caller RoPE."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import ConsisIDTransformer3DModel
from diffusers.models.embeddings import get_3d_rotary_pos_embed
from torch import nn

from cases import TIMESTEPS_1000, Call, Case, built, randn, seeded


def build(face: bool = True, rope: bool = False) -> nn.Module:
    return built(
        ConsisIDTransformer3DModel,
        num_attention_heads=3,
        attention_head_dim=16,
        in_channels=4,
        out_channels=4,
        time_embed_dim=8,
        text_embed_dim=16,
        num_layers=4,
        sample_width=8,
        sample_height=8,
        sample_frames=5,
        patch_size=2,
        temporal_compression_ratio=4,
        max_text_seq_length=5,
        use_rotary_positional_embeddings=rope,
        is_train_face=face,
        cross_attn_interval=2,
        cross_attn_dim_head=8,
        cross_attn_num_heads=2,
        LFE_id_dim=12,
        LFE_vit_dim=12,
        LFE_depth=5,
        LFE_dim_head=8,
        LFE_num_heads=2,
        LFE_num_id_token=2,
        LFE_num_querie=4,
        LFE_output_dim=32,  # the perceiver's K/V width: 2/3 of the 48-wide hidden size
        LFE_ff_mult=1,
        LFE_num_scale=5,
        local_face_scale=0.7,
    )()


def calls(model: nn.Module, batch: int, return_dict: bool, *, face: bool = True, rope: bool = False) -> list[Call]:
    gen = seeded(24)
    fixed: dict[str, Any] = {"encoder_hidden_states": randn(gen, batch, 5, 16), "return_dict": return_dict}
    if face:
        fixed["id_cond"] = randn(gen, batch, 12)
        fixed["id_vit_hidden"] = [randn(gen, batch, 3, 12) for _ in range(5)]
        fixed["attention_kwargs"] = {}
    if rope:  # as the pipeline builds it: the head dim over the (frames, 4, 4) patch grid
        fixed["image_rotary_emb"] = get_3d_rotary_pos_embed(16, ((0, 0), (4, 4)), (4, 4), 2, device="cpu")
    return [
        ((), {"hidden_states": randn(gen, batch, 2, 4, 8, 8), "timestep": torch.full((batch,), t), **fixed})
        for t in TIMESTEPS_1000
    ]


CASES = [
    Case("consisid-face", build, calls, tags=frozenset({"loop", "dtype", "checkpointing"})),
    Case(
        "consisid-rope",
        lambda: build(face=False, rope=True),
        calls,
        {"face": False, "rope": True},
        tags=frozenset({"dtype"}),
    ),
]
