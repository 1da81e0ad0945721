"""HunyuanVideo15Transformer3DModel: T2V (zero image embeddings) and I2V, padded MLLM and ByT5 text masks, meanflow
``timestep_r``."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import HunyuanVideo15Transformer3DModel
from torch import nn

from cases import TIMESTEPS_1000, Call, Case, built, randn, seeded


def build(use_meanflow: bool = False) -> nn.Module:
    return built(
        HunyuanVideo15Transformer3DModel,
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=8,
        num_layers=3,
        num_refiner_layers=1,
        text_embed_dim=16,
        text_embed_2_dim=8,
        image_embed_dim=12,
        rope_axes_dim=(2, 2, 4),
        use_meanflow=use_meanflow,
    )()


def calls(
    model: nn.Module, batch: int, return_dict: bool, *, i2v: bool = False, meanflow: bool = False, **extra: Any
) -> list[Call]:
    gen = seeded(7)
    mask = torch.ones(batch, 6, dtype=torch.long)
    mask[0, 4:] = 0
    mask_2 = torch.ones(batch, 3, dtype=torch.long)
    mask_2[-1, 2:] = 0
    fixed: dict[str, Any] = {
        "encoder_hidden_states": randn(gen, batch, 6, 16),
        "encoder_attention_mask": mask,
        "encoder_hidden_states_2": randn(gen, batch, 3, 8),
        "encoder_attention_mask_2": mask_2,
        "image_embeds": randn(gen, batch, 2, 12) if i2v else torch.zeros(batch, 2, 12),
        "return_dict": return_dict,
        **extra,
    }
    out: list[Call] = []
    for t in TIMESTEPS_1000:
        kwargs = {"hidden_states": randn(gen, batch, 4, 2, 4, 4), "timestep": torch.full((batch,), t), **fixed}
        if meanflow:
            kwargs["timestep_r"] = torch.full((batch,), t * 0.5)
        out.append(((), kwargs))
    return out


CASES = [
    Case("hunyuanvideo15-t2v", build, calls, tags=frozenset({"loop", "dtype", "checkpointing"})),
    Case("hunyuanvideo15-i2v", build, calls, {"i2v": True, "attention_kwargs": {}}, tags=frozenset({"dtype"})),
    Case("hunyuanvideo15-meanflow", lambda: build(use_meanflow=True), calls, {"meanflow": True}),
]
