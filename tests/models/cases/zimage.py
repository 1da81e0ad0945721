"""ZImageTransformer2DModel: lists of per-sample latents and captions (captions of different lengths, so the
unified sequence is padded and masked), refiners as preprocessing, the ControlNet map by block index."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import ZImageTransformer2DModel
from torch import nn

from cases import FLOW_TIMESTEPS, Call, Case, built, randn, seeded

DIM = 32


def build() -> nn.Module:
    return built(
        ZImageTransformer2DModel,
        in_channels=4,
        dim=DIM,
        n_layers=3,
        n_refiner_layers=1,
        n_heads=2,
        n_kv_heads=2,
        cap_feat_dim=16,
        axes_dims=[4, 6, 6],
        axes_lens=[64, 32, 32],
    )()


def calls(model: nn.Module, batch: int, return_dict: bool, *, controlnet: bool = False, **extra: Any) -> list[Call]:
    gen = seeded(5)
    caps = [randn(gen, 5 + 3 * i, 16) for i in range(batch)]
    fixed: dict[str, Any] = {"cap_feats": caps, "return_dict": return_dict, **extra}
    out: list[Call] = []
    for t in FLOW_TIMESTEPS:
        kwargs = dict(fixed)
        if controlnet:
            # residuals for the unified (padded) sequence: 32 image tokens + captions padded to 32
            kwargs["controlnet_block_samples"] = {
                0: randn(gen, batch, 64, DIM) * 0.1,
                2: randn(gen, batch, 64, DIM) * 0.1,
            }
        x = [randn(gen, 4, 1, 8, 16) for _ in range(batch)]
        out.append(((), {"x": x, "t": torch.full((batch,), t), **kwargs}))
    return out


_KW: dict[str, Any] = {
    "timestep": "t",
    "condition": None,
    "positional": ("x", "t", "cap_feats"),
    "attention_kwargs": "joint_attention_kwargs",
}
CASES = [
    Case("zimage", build, calls, tags=frozenset({"loop", "dtype", "checkpointing"}), **_KW),
    Case("zimage-controlnet", build, calls, {"controlnet": True, "joint_attention_kwargs": {}}, **_KW),
]
