"""PRXTransformer2DModel (with the resolution embedding) and Ideogram4Transformer2DModel (one packed sequence of LLM
tokens and image tokens, two segments)."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import Ideogram4Transformer2DModel, PRXTransformer2DModel
from torch import nn

from cases import Call, Case, built, randn, seeded


def prx(resolution: bool = False) -> nn.Module:
    return built(
        PRXTransformer2DModel,
        in_channels=4,
        patch_size=2,
        context_in_dim=12,
        hidden_size=32,
        mlp_ratio=2.0,
        num_heads=2,
        depth=3,
        axes_dim=[8, 8],
        resolution_embeds=resolution,
    )()


def prx_calls(model: nn.Module, batch: int, return_dict: bool, **extra: Any) -> list[Call]:
    gen = seeded(34)
    fixed: dict[str, Any] = {"encoder_hidden_states": randn(gen, batch, 5, 12), "return_dict": return_dict, **extra}
    return [
        ((), {"hidden_states": randn(gen, batch, 4, 8, 8), "timestep": torch.full((batch,), t), **fixed})
        for t in (0.9, 0.7, 0.5, 0.3)
    ]


def ideogram4() -> nn.Module:
    return built(
        Ideogram4Transformer2DModel,
        in_channels=8,
        num_layers=3,
        attention_head_dim=16,
        num_attention_heads=2,
        intermediate_size=48,
        adaln_dim=16,
        llm_features_dim=24,
        mrope_section=(4, 2, 2),
    )()


def ideogram4_calls(model: nn.Module, batch: int, return_dict: bool, **extra: Any) -> list[Call]:
    gen = seeded(35)
    text, image = 4, 8
    length = text + image
    indicator = torch.tensor([3] * text + [2] * image).repeat(batch, 1)
    positions = torch.zeros(batch, length, 3, dtype=torch.long)
    positions[:, :text, :] = torch.arange(text)[None, :, None]
    grid = torch.stack(torch.meshgrid(torch.arange(2), torch.arange(4), indexing="ij"), -1).reshape(-1, 2)
    positions[:, text:, 0] = 65536
    positions[:, text:, 1:] = 65536 + grid
    segments = torch.zeros(batch, length, dtype=torch.long)
    fixed: dict[str, Any] = {
        "encoder_hidden_states": randn(gen, batch, length, 24),
        "position_ids": positions,
        "segment_ids": segments,
        "indicator": indicator,
        "return_dict": return_dict,
        **extra,
    }
    return [
        ((), {"hidden_states": randn(gen, batch, length, 8), "timestep": torch.full((batch,), t), **fixed})
        for t in (0.9, 0.7, 0.5, 0.3)
    ]


_ALL_TAGS = frozenset({"loop", "dtype", "checkpointing"})
CASES = [
    Case("prx", prx, prx_calls, tags=_ALL_TAGS, attention_kwargs=None),
    Case("prx-resolution", lambda: prx(resolution=True), prx_calls, attention_kwargs=None),
    Case("ideogram4", ideogram4, ideogram4_calls, tags=_ALL_TAGS),
    Case("ideogram4-attention-kwargs", ideogram4, ideogram4_calls, {"attention_kwargs": {}}),
]
