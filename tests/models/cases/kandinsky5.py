"""Kandinsky5Transformer3DModel: channels-last video latents, text encoder blocks as preprocessing, ``return_dict``
both ways (the tuple form is the bare tensor, as diffusers returns it)."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import Kandinsky5Transformer3DModel
from torch import nn

from cases import Call, Case, built, randn, seeded


def build() -> nn.Module:
    return built(
        Kandinsky5Transformer3DModel,
        in_visual_dim=4,
        in_text_dim=12,
        in_text_dim2=10,
        time_dim=16,
        out_visual_dim=4,
        patch_size=(1, 2, 2),
        model_dim=32,
        ff_dim=48,
        num_text_blocks=1,
        num_visual_blocks=3,
        axes_dims=(4, 6, 6),
    )()


def calls(model: nn.Module, batch: int, return_dict: bool, **extra: Any) -> list[Call]:
    gen = seeded(32)
    fixed: dict[str, Any] = {
        "encoder_hidden_states": randn(gen, batch, 5, 12),
        "pooled_projections": randn(gen, batch, 10),
        "visual_rope_pos": [torch.arange(2), torch.arange(4), torch.arange(4)],
        "text_rope_pos": torch.arange(5),
        "scale_factor": (1.0, 2.0, 2.0),
        "return_dict": return_dict,
        **extra,
    }
    return [
        ((), {"hidden_states": randn(gen, batch, 2, 8, 8, 4), "timestep": torch.full((batch,), t), **fixed})
        for t in (999.0, 800.0, 550.0, 300.0)
    ]


CASES = [Case("kandinsky5", build, calls, tags=frozenset({"loop", "dtype", "checkpointing"}), attention_kwargs=None)]
