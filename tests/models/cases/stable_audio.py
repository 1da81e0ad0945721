"""StableAudioDiTModel: global token prepended, cross-attention conditioning, masks, the pipeline's RoPE."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import StableAudioDiTModel
from diffusers.models.embeddings import get_1d_rotary_pos_embed
from torch import nn

from cases import Call, Case, built, randn, seeded


def build() -> nn.Module:
    return built(
        StableAudioDiTModel,
        sample_size=8,
        in_channels=4,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=2,
        num_key_value_attention_heads=1,
        out_channels=4,
        cross_attention_dim=16,
        time_proj_dim=8,
        global_states_input_dim=12,
        cross_attention_input_dim=10,
    )()


def calls(model: nn.Module, batch: int, return_dict: bool, *, masks: bool = False, rope: bool = False) -> list[Call]:
    gen = seeded(23)
    length = 8
    fixed: dict[str, Any] = {
        "encoder_hidden_states": randn(gen, batch, 5, 10),
        "global_hidden_states": randn(gen, batch, 1, 12),
        "return_dict": return_dict,
    }
    if masks:
        audio_mask = torch.ones(batch, length, dtype=torch.bool)
        audio_mask[0, -2:] = False
        text_mask = torch.ones(batch, 5, dtype=torch.bool)
        text_mask[0, -1] = False
        fixed["attention_mask"] = audio_mask
        fixed["encoder_attention_mask"] = text_mask
    if rope:  # as StableAudioPipeline builds it: half the head dim, over the sequence plus the global token
        fixed["rotary_embedding"] = get_1d_rotary_pos_embed(4, length + 1, use_real=True, repeat_interleave_real=False)
    return [
        ((), {"hidden_states": randn(gen, batch, 4, length), "timestep": torch.full((batch,), t), **fixed})
        for t in (0.9, 0.7, 0.4, 0.2)
    ]


CASES = [
    Case("stable-audio", build, calls, {"rope": True}, tags=frozenset({"loop"}), attention_kwargs=None),
    Case(
        "stable-audio-masks",
        build,
        calls,
        {"masks": True, "rope": True},
        tags=frozenset({"dtype", "checkpointing"}),
        attention_kwargs=None,
    ),
]
