"""LuminaNextDiT2DModel: caption mask, the pipeline's rotary table (no gradient checkpointing in diffusers)."""

from __future__ import annotations

import torch
from diffusers import LuminaNextDiT2DModel
from diffusers.models.embeddings import get_2d_rotary_pos_embed_lumina
from torch import nn

from cases import Call, Case, built, randn, seeded


def build() -> nn.Module:
    return built(
        LuminaNextDiT2DModel,
        sample_size=8,
        patch_size=2,
        in_channels=4,
        hidden_size=32,
        num_layers=2,
        num_attention_heads=2,
        num_kv_heads=1,
        multiple_of=16,
        norm_eps=1e-5,
        learn_sigma=True,
        qk_norm=True,
        cross_attention_dim=24,
    )()


def calls(model: nn.Module, batch: int, return_dict: bool) -> list[Call]:
    gen = seeded(26)
    mask = torch.ones(batch, 5)
    mask[0, -2:] = 0
    fixed = {
        "encoder_hidden_states": randn(gen, batch, 5, 24),
        "encoder_mask": mask,
        "image_rotary_emb": get_2d_rotary_pos_embed_lumina(16, 8, 8),  # head dim over a table larger than the image
        "cross_attention_kwargs": {},
        "return_dict": return_dict,
    }
    return [
        ((), {"hidden_states": randn(gen, batch, 4, 8, 8), "timestep": torch.full((batch,), t), **fixed})
        for t in (0.1, 0.35, 0.6, 0.85)  # Lumina-Next runs t from 0 (noise) to 1
    ]


CASES = [Case("lumina-next", build, calls, tags=frozenset({"loop", "dtype"}), attention_kwargs=None)]
