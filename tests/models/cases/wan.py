"""WanTransformer3DModel: T2V, I2V (CLIP image tokens), Wan 2.2 TI2V per-token timesteps, positional calls."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import WanTransformer3DModel
from torch import nn

from cases import TIMESTEPS_1000, Call, Case, TeaCacheConfig, built, randn, seeded

TEXT_LEN_I2V = 512  # diffusers' Wan cross-attention hard-codes the text length to 512 when image tokens are added


def build(i2v: bool = False) -> nn.Module:
    return built(
        WanTransformer3DModel,
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=4,
        out_channels=4,
        text_dim=16,
        freq_dim=32,
        ffn_dim=48,
        num_layers=3,
        cross_attn_norm=True,
        rope_max_seq_len=32,
        image_dim=20 if i2v else None,
        added_kv_proj_dim=24 if i2v else None,
    )()


def calls(
    model: nn.Module,
    batch: int,
    return_dict: bool,
    *,
    i2v: bool = False,
    per_token_timestep: bool = False,
    positional: bool = False,
    attention_kwargs: dict[str, Any] | None = None,
) -> list[Call]:
    gen = seeded(3)
    frames, height, width = 2, 4, 4
    tokens = frames * (height // 2) * (width // 2)
    prompt = randn(gen, batch, TEXT_LEN_I2V if i2v else 7, 16)
    image = randn(gen, batch, 3, 20) if i2v else None
    out: list[Call] = []
    for t in TIMESTEPS_1000:
        latents = randn(gen, batch, 4, frames, height, width)
        # Wan 2.2 TI2V passes one timestep per latent token, shape (batch, tokens)
        timestep = torch.full((batch, tokens), t) if per_token_timestep else torch.full((batch,), t)
        kwargs: dict[str, Any] = {"return_dict": return_dict}
        if i2v:
            kwargs["encoder_hidden_states_image"] = image
        if attention_kwargs is not None:
            kwargs["attention_kwargs"] = attention_kwargs
        if positional:
            out.append(((latents, timestep, prompt), kwargs))
        else:
            out.append(
                ((), {"hidden_states": latents, "timestep": timestep, "encoder_hidden_states": prompt, **kwargs})
            )
    return out


CASES = [
    Case("wan-t2v", build, calls, tags=frozenset({"loop"})),
    Case("wan-t2v-positional", build, calls, {"positional": True, "attention_kwargs": {}}),
    Case("wan-i2v", lambda: build(i2v=True), calls, {"i2v": True}, tags=frozenset({"dtype", "checkpointing"})),
    Case("wan-ti2v-per-token-timestep", build, calls, {"per_token_timestep": True}, tags=frozenset({"dtype"})),
    # TeaCache4Wan2.1's use_ret_steps mode decides on the 6-way timestep projection instead of temb
    Case(
        "wan-ret-indicator",
        build,
        calls,
        config=TeaCacheConfig(rel_l1_thresh=1e-12, coefficients=(0.0, 0.0, 0.0, 1.0, 0.0), indicator="timestep_proj"),
    ),
]
