"""HunyuanVideoFramepackTransformer3DModel: clean-latent history (1x/2x/4x), image tokens, text mask, guidance.

diffusers' forward needs all three history inputs (it reads their rotary embeddings unconditionally), so every
case passes them. At batch 1 diffusers cuts the text to its mask length instead of masking; batch 2 masks.
"""

from __future__ import annotations

import torch
from diffusers import HunyuanVideoFramepackTransformer3DModel
from torch import nn

from cases import TIMESTEPS_1000, Call, Case, built, randn, seeded


def build() -> nn.Module:
    return built(
        HunyuanVideoFramepackTransformer3DModel,
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=12,
        num_layers=1,
        num_single_layers=2,
        num_refiner_layers=1,
        patch_size=2,
        patch_size_t=1,
        text_embed_dim=16,
        pooled_projection_dim=8,
        rope_axes_dim=(4, 4, 4),
        image_proj_dim=12,
        has_image_proj=True,
        has_clean_x_embedder=True,
    )()


def calls(model: nn.Module, batch: int, return_dict: bool) -> list[Call]:
    gen = seeded(17)
    mask = torch.ones(batch, 5)
    mask[0, -2:] = 0  # the first prompt is 3 tokens long
    fixed = {
        "encoder_hidden_states": randn(gen, batch, 5, 16),
        "encoder_attention_mask": mask,
        "pooled_projections": randn(gen, batch, 8),
        "image_embeds": randn(gen, batch, 3, 12),
        "indices_latents": torch.tensor([3, 4]),
        "guidance": torch.full((batch,), 6000.0),
        "latents_clean": randn(gen, batch, 4, 1, 8, 8),
        "indices_latents_clean": torch.tensor([0]),
        "latents_history_2x": randn(gen, batch, 4, 2, 8, 8),
        "indices_latents_history_2x": torch.tensor([1, 2]),
        "latents_history_4x": randn(gen, batch, 4, 4, 8, 8),
        "indices_latents_history_4x": torch.tensor([5, 6, 7, 8]),
        "attention_kwargs": {},
        "return_dict": return_dict,
    }
    return [
        ((), {"hidden_states": randn(gen, batch, 4, 2, 8, 8), "timestep": torch.full((batch,), t), **fixed})
        for t in TIMESTEPS_1000
    ]


CASES = [Case("hunyuanvideo-framepack", build, calls, tags=frozenset({"loop", "dtype", "checkpointing"}))]
