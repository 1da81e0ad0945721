"""LTXVideoTransformer3DModel: text mask with padding, per-token timesteps (conditioning frames at t=0), explicit
video coordinates."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import LTXVideoTransformer3DModel
from torch import nn

from cases import TIMESTEPS_1000, Call, Case, built, randn, seeded

F, H, W = 2, 2, 4


def build() -> nn.Module:
    return built(
        LTXVideoTransformer3DModel,
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=8,
        cross_attention_dim=16,
        num_layers=3,
        caption_channels=12,
    )()


def calls(
    model: nn.Module, batch: int, return_dict: bool, *, per_token: bool = False, coords: bool = False, **extra: Any
) -> list[Call]:
    gen = seeded(9)
    tokens = F * H * W
    mask = torch.ones(batch, 5, dtype=torch.long)
    mask[0, 3:] = 0
    fixed: dict[str, Any] = {
        "encoder_hidden_states": randn(gen, batch, 5, 12),
        "encoder_attention_mask": mask,
        "num_frames": F,
        "height": H,
        "width": W,
        "rope_interpolation_scale": (1 / 25, 32, 32),
        "return_dict": return_dict,
        **extra,
    }
    if coords:
        grid = torch.stack(torch.meshgrid(torch.arange(F), torch.arange(H), torch.arange(W), indexing="ij"), 0)
        fixed["video_coords"] = grid.reshape(1, 3, -1).float().expand(batch, -1, -1)
    out: list[Call] = []
    for t in TIMESTEPS_1000:
        timestep = torch.full((batch, tokens), t) if per_token else torch.full((batch,), t)
        if per_token:
            timestep[:, : H * W] = 0.0  # the first frame is the conditioning image
        out.append(((), {"hidden_states": randn(gen, batch, tokens, 4), "timestep": timestep, **fixed}))
    return out


CASES = [
    Case("ltx", build, calls, tags=frozenset({"loop", "dtype", "checkpointing"})),
    Case(
        "ltx-per-token-timestep", build, calls, {"per_token": True, "attention_kwargs": {}}, tags=frozenset({"dtype"})
    ),
    Case("ltx-video-coords", build, calls, {"coords": True}),
]
