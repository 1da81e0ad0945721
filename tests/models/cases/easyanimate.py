"""EasyAnimateTransformer3DModel: MMDiT blocks, inpaint and control latents, a second (T5) text input."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import EasyAnimateTransformer3DModel
from torch import nn

from cases import TIMESTEPS_1000, Call, Case, built, randn, seeded


def build(extra_channels: int = 0, t5: bool = False) -> nn.Module:
    return built(
        EasyAnimateTransformer3DModel,
        num_attention_heads=2,
        attention_head_dim=16,
        in_channels=4 + extra_channels,
        out_channels=4,
        patch_size=2,
        sample_width=8,
        sample_height=8,
        num_layers=2,
        mmdit_layers=2,
        time_embed_dim=8,
        text_embed_dim=16,
        text_embed_dim_t5=12 if t5 else None,
    )()


def calls(
    model: nn.Module, batch: int, return_dict: bool, *, inpaint: bool = False, control: bool = False, t5: bool = False
) -> list[Call]:
    gen = seeded(18)
    fixed: dict[str, Any] = {"encoder_hidden_states": randn(gen, batch, 5, 16), "return_dict": return_dict}
    if t5:
        fixed["encoder_hidden_states_t5"] = randn(gen, batch, 3, 12)
    if inpaint:
        fixed["inpaint_latents"] = randn(gen, batch, 2, 2, 8, 8)
    if control:
        fixed["control_latents"] = randn(gen, batch, 2, 2, 8, 8)
    return [
        ((), {"hidden_states": randn(gen, batch, 4, 2, 8, 8), "timestep": torch.full((batch,), t), **fixed})
        for t in TIMESTEPS_1000
    ]


CASES = [
    Case("easyanimate", build, calls, tags=frozenset({"loop"}), attention_kwargs=None),
    Case(
        "easyanimate-inpaint-control-t5",
        lambda: build(extra_channels=4, t5=True),
        calls,
        {"inpaint": True, "control": True, "t5": True},
        tags=frozenset({"dtype", "checkpointing"}),
        attention_kwargs=None,
    ),
]
