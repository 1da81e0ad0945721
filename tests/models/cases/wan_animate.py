"""WanAnimateTransformer3DModel: pose latents, CLIP image tokens, face motion injected every N blocks."""

from __future__ import annotations

import torch
from diffusers import WanAnimateTransformer3DModel
from torch import nn

from cases import TIMESTEPS_1000, Call, Case, built, randn, seeded

TEXT_LEN_I2V = 512  # diffusers' Wan cross-attention hard-codes the text length to 512 when image tokens are added


def build() -> nn.Module:
    return built(
        WanAnimateTransformer3DModel,
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=12,
        latent_channels=4,
        out_channels=4,
        text_dim=16,
        freq_dim=16,
        ffn_dim=32,
        num_layers=4,
        image_dim=20,
        added_kv_proj_dim=24,
        rope_max_seq_len=32,
        motion_encoder_channel_sizes={"4": 16, "8": 16, "16": 16},
        motion_encoder_size=16,
        motion_style_dim=16,
        motion_dim=4,
        motion_encoder_dim=16,
        face_encoder_hidden_dim=24,
        face_encoder_num_heads=2,
        inject_face_latents_blocks=2,
        motion_encoder_batch_size=3,  # the 2 x 2 face frames of a batch of two are encoded in two chunks
    )()


def calls(model: nn.Module, batch: int, return_dict: bool) -> list[Call]:
    gen = seeded(39)
    fixed = {
        "encoder_hidden_states": randn(gen, batch, TEXT_LEN_I2V, 16),
        "encoder_hidden_states_image": randn(gen, batch, 3, 20),
        "pose_hidden_states": randn(gen, batch, 4, 2, 8, 8),
        "face_pixel_values": randn(gen, batch, 3, 2, 16, 16),
        "attention_kwargs": {},
        "return_dict": return_dict,
    }
    return [
        ((), {"hidden_states": randn(gen, batch, 12, 3, 8, 8), "timestep": torch.full((batch,), t), **fixed})
        for t in TIMESTEPS_1000
    ]


CASES = [Case("wan-animate", build, calls, tags=frozenset({"loop", "dtype", "checkpointing"}))]
