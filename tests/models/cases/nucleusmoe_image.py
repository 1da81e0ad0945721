"""NucleusMoEImageTransformer2DModel: mixture-of-experts blocks (the first three and the last dense), text as K/V with
a padding mask."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import NucleusMoEImageTransformer2DModel
from torch import nn

from cases import Call, Case, built, randn, seeded


def build() -> nn.Module:
    model = built(
        NucleusMoEImageTransformer2DModel,
        patch_size=2,
        in_channels=16,
        out_channels=4,
        num_layers=5,
        attention_head_dim=12,
        num_attention_heads=2,
        joint_attention_dim=16,
        axes_dims_rope=(4, 4, 4),
        mlp_ratio=8.0,  # the dense MLP width is rounded down to a multiple of 128
        num_experts=4,
        moe_intermediate_dim=16,
        capacity_factors=1.0,
    )()
    # the expert weights are created with torch.empty (a checkpoint fills them): give them seeded values
    gen = seeded(33)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".experts." in name:
                param.copy_(randn(gen, *param.shape) * 0.1)
    return model


def calls(model: nn.Module, batch: int, return_dict: bool, *, mask: bool = False) -> list[Call]:
    gen = seeded(32)
    fixed: dict[str, Any] = {
        "encoder_hidden_states": randn(gen, batch, 5, 16),
        "img_shapes": [(1, 2, 4)] * batch,
        "attention_kwargs": {},
        "return_dict": return_dict,
    }
    if mask:
        text_mask = torch.ones(batch, 5, dtype=torch.long)
        text_mask[0, -2:] = 0
        fixed["encoder_hidden_states_mask"] = text_mask
    return [
        ((), {"hidden_states": randn(gen, batch, 8, 16), "timestep": torch.full((batch,), t), **fixed})
        for t in (1.0, 0.8, 0.55, 0.3)
    ]


CASES = [
    Case("nucleusmoe-image", build, calls, tags=frozenset({"loop"})),
    Case("nucleusmoe-image-mask", build, calls, {"mask": True}, tags=frozenset({"dtype", "checkpointing"})),
]
