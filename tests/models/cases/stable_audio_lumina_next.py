"""StableAudioDiTModel (global token prepended, RoPE from the caller, masks) and LuminaNextDiT2DModel (2-D RoPE
from the caller, caption mask; no checkpointing branch in its forward)."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import LuminaNextDiT2DModel, StableAudioDiTModel
from diffusers.models.embeddings import get_1d_rotary_pos_embed, get_2d_rotary_pos_embed_lumina
from torch import nn

from cases import Call, Case, built, randn, seeded


def stable_audio() -> nn.Module:
    return built(
        StableAudioDiTModel,
        sample_size=16,
        in_channels=4,
        num_layers=3,
        attention_head_dim=8,
        num_attention_heads=2,
        num_key_value_attention_heads=1,
        out_channels=4,
        cross_attention_dim=16,
        time_proj_dim=8,
        global_states_input_dim=12,
        cross_attention_input_dim=10,
    )()


def stable_audio_calls(
    model: nn.Module, batch: int, return_dict: bool, *, masks: bool = False, **extra: Any
) -> list[Call]:
    gen = seeded(28)
    length = 16
    fixed: dict[str, Any] = {
        "encoder_hidden_states": randn(gen, batch, 5, 10),
        "global_hidden_states": randn(gen, batch, 1, 12),
        "rotary_embedding": get_1d_rotary_pos_embed(4, length + 1, use_real=True, repeat_interleave_real=False),
        "return_dict": return_dict,
        **extra,
    }
    if masks:
        fixed["attention_mask"] = torch.ones(batch, length, dtype=torch.bool)
        text = torch.ones(batch, 5, dtype=torch.bool)
        text[0, 3:] = False
        fixed["encoder_attention_mask"] = text
    return [
        ((), {"hidden_states": randn(gen, batch, 4, length), "timestep": torch.full((batch,), t), **fixed})
        for t in (0.9, 0.7, 0.5, 0.3)
    ]


def lumina_next() -> nn.Module:
    return built(
        LuminaNextDiT2DModel,
        sample_size=8,
        patch_size=2,
        in_channels=4,
        hidden_size=32,
        num_layers=3,
        num_attention_heads=2,
        num_kv_heads=1,
        multiple_of=16,
        learn_sigma=False,
        cross_attention_dim=12,
    )()


def lumina_next_calls(model: nn.Module, batch: int, return_dict: bool, **extra: Any) -> list[Call]:
    gen = seeded(29)
    mask = torch.ones(batch, 5, dtype=torch.long)
    mask[0, 3:] = 0
    fixed: dict[str, Any] = {
        "encoder_hidden_states": randn(gen, batch, 5, 12),
        "encoder_mask": mask,
        "image_rotary_emb": get_2d_rotary_pos_embed_lumina(16, 8, 8),
        "cross_attention_kwargs": {},  # the blocks unpack it (the pipeline passes a dict)
        "return_dict": return_dict,
        **extra,
    }
    return [
        ((), {"hidden_states": randn(gen, batch, 4, 8, 8), "timestep": torch.full((batch,), t), **fixed})
        for t in (0.9, 0.7, 0.5, 0.3)
    ]


CASES = [
    Case(
        "stable-audio",
        stable_audio,
        stable_audio_calls,
        tags=frozenset({"loop", "checkpointing"}),
        attention_kwargs=None,
    ),
    Case(
        "stable-audio-masks",
        stable_audio,
        stable_audio_calls,
        {"masks": True},
        tags=frozenset({"dtype"}),
        attention_kwargs=None,
    ),
    Case("lumina-next", lumina_next, lumina_next_calls, tags=frozenset({"loop", "dtype"}), attention_kwargs=None),
]
