"""SkyReelsV2Transformer3DModel: T2V, diffusion forcing (per-frame timesteps, block-causal mask), fps embedding."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import SkyReelsV2Transformer3DModel
from torch import nn

from cases import TIMESTEPS_1000, Call, Case, built, randn, seeded

FRAMES = 4


def build(num_frame_per_block: int = 1, inject_sample_info: bool = False) -> nn.Module:
    return built(
        SkyReelsV2Transformer3DModel,
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=4,
        out_channels=4,
        text_dim=16,
        freq_dim=32,
        ffn_dim=48,
        num_layers=3,
        rope_max_seq_len=32,
        num_frame_per_block=num_frame_per_block,
        inject_sample_info=inject_sample_info,
    )()


def calls(
    model: nn.Module, batch: int, return_dict: bool, *, forcing: bool = False, fps: bool = False, **extra: Any
) -> list[Call]:
    gen = seeded(12)
    fixed: dict[str, Any] = {"encoder_hidden_states": randn(gen, batch, 7, 16), "return_dict": return_dict, **extra}
    if fps:
        fixed["fps"] = [1]
    out: list[Call] = []
    for t in TIMESTEPS_1000:
        if forcing:  # diffusion forcing: earlier frames are less noisy
            timestep = torch.tensor([[t * (i + 1) / FRAMES for i in range(FRAMES)]] * batch)
            kwargs = {"timestep": timestep, "enable_diffusion_forcing": True}
        else:
            kwargs = {"timestep": torch.full((batch,), t)}
        out.append(((), {"hidden_states": randn(gen, batch, 4, FRAMES, 4, 4), **kwargs, **fixed}))
    return out


CASES = [
    Case("skyreels-v2", build, calls, tags=frozenset({"loop", "checkpointing"})),
    Case(
        "skyreels-v2-diffusion-forcing",
        lambda: build(num_frame_per_block=2),
        calls,
        {"forcing": True},
        tags=frozenset({"dtype"}),
    ),
    Case("skyreels-v2-fps", lambda: build(inject_sample_info=True), calls, {"fps": True, "attention_kwargs": {}}),
]
