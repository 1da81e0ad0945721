"""LongCatAudioDiTTransformer: global and local AdaLN, audio and text masks, latent condition, long skip.

diffusers has no gradient checkpointing for this class (no checkpointing case).
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import LongCatAudioDiTTransformer
from torch import nn

from cases import Call, Case, built, randn, seeded


def build(adaln_type: str = "global") -> nn.Module:
    return built(
        LongCatAudioDiTTransformer,
        dit_dim=32,
        dit_depth=2,
        dit_heads=2,
        dit_text_dim=24,
        latent_dim=8,
        adaln_type=adaln_type,
        ff_mult=2.0,
    )()


def calls(model: nn.Module, batch: int, return_dict: bool, *, masks: bool = False) -> list[Call]:
    gen = seeded(38)
    length = 10
    text_mask = torch.ones(batch, 5, dtype=torch.bool)
    fixed: dict[str, Any] = {
        "encoder_hidden_states": randn(gen, batch, 5, 24),
        "encoder_attention_mask": text_mask,
        "latent_cond": randn(gen, batch, length, 8),
        "return_dict": return_dict,
    }
    if masks:
        text_mask[0, -2:] = False
        audio_mask = torch.ones(batch, length, dtype=torch.bool)
        audio_mask[0, -3:] = False
        fixed["attention_mask"] = audio_mask
    return [
        ((), {"hidden_states": randn(gen, batch, length, 8), "timestep": torch.full((batch,), t), **fixed})
        for t in (0.1, 0.35, 0.6, 0.85)
    ]


CASES = [
    Case("longcat-audio-dit", build, calls, {"masks": True}, tags=frozenset({"loop", "dtype"}), attention_kwargs=None),
    Case("longcat-audio-dit-local-adaln", lambda: build(adaln_type="local"), calls, attention_kwargs=None),
]
