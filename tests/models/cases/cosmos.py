"""CosmosTransformer3DModel: text context with mask, per-frame timesteps ``[B, 1, T, 1, 1]``, condition mask,
ControlNet residuals by block-index map (Transfer). The padding-mask
resize needs torchvision (not a test dependency): the cases use ``concat_padding_mask=False``."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import CosmosTransformer3DModel
from torch import nn

from cases import Call, Case, built, randn, seeded


def build(in_channels: int = 4, controlnet: bool = False, image_context: bool = False) -> nn.Module:
    return built(
        CosmosTransformer3DModel,
        in_channels=in_channels,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=12,
        num_layers=3,
        text_embed_dim=16,
        adaln_lora_dim=4,
        max_size=(4, 8, 8),
        patch_size=(1, 2, 2),
        rope_scale=(1.0, 1.0, 1.0),
        concat_padding_mask=False,
        controlnet_block_every_n=2 if controlnet else None,
        img_context_dim_in=10 if image_context else None,
        img_context_num_tokens=3,
        img_context_dim_out=16,
    )()


def calls(
    model: nn.Module,
    batch: int,
    return_dict: bool,
    *,
    per_frame: bool = False,
    condition_mask: bool = False,
    controlnet: bool = False,
    image_context: bool = False,
    **extra: Any,
) -> list[Call]:
    gen = seeded(20)
    mask = torch.ones(batch, 5)
    mask[0, 3:] = 0
    text = randn(gen, batch, 5, 16)
    fixed: dict[str, Any] = {
        "encoder_hidden_states": (text, randn(gen, batch, 3, 10)) if image_context else text,
        "attention_mask": None if image_context else mask,
        "fps": 24,
        "return_dict": return_dict,
        **extra,
    }
    if condition_mask:
        fixed["condition_mask"] = torch.zeros(batch, 1, 2, 8, 8)
    if controlnet:
        fixed["block_controlnet_hidden_states"] = [randn(gen, batch, 32, 24) * 0.1 for _ in range(2)]
    out: list[Call] = []
    for t in (0.9, 0.7, 0.5, 0.3):
        timestep = torch.full((batch, 1, 2, 1, 1), t) if per_frame else torch.full((batch,), t)
        if per_frame:
            timestep[:, :, 0] = 0.0  # the first latent frame is the conditioning one
        out.append(((), {"hidden_states": randn(gen, batch, 4, 2, 8, 8), "timestep": timestep, **fixed}))
    return out


CASES = [
    Case("cosmos", build, calls, tags=frozenset({"loop", "checkpointing"}), attention_kwargs=None),
    Case(
        "cosmos-video2world",
        lambda: build(in_channels=5),
        calls,
        {"per_frame": True, "condition_mask": True},
        tags=frozenset({"dtype"}),
        attention_kwargs=None,
    ),
    Case(
        "cosmos-transfer-controlnet", lambda: build(controlnet=True), calls, {"controlnet": True}, attention_kwargs=None
    ),
]
