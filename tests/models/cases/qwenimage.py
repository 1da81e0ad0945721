"""QwenImageTransformer2DModel: text masks (with holes), zero_cond_t (Edit-2511), additional_t_cond, ControlNet."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import QwenImageTransformer2DModel
from torch import nn

from cases import FLOW_TIMESTEPS, Call, Case, built, randn, seeded


def build(zero_cond_t: bool = False, use_additional_t_cond: bool = False) -> nn.Module:
    return built(
        QwenImageTransformer2DModel,
        patch_size=2,
        in_channels=16,
        out_channels=4,
        num_layers=3,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=24,
        axes_dims_rope=(4, 6, 6),
        zero_cond_t=zero_cond_t,
        use_additional_t_cond=use_additional_t_cond,
    )()


def calls(
    model: nn.Module,
    batch: int,
    return_dict: bool,
    *,
    mask: bool = False,
    images_per_sample: int = 1,
    additional_t_cond: bool = False,
    controlnet: int = 0,
    attention_kwargs: dict[str, Any] | None = None,
) -> list[Call]:
    gen = seeded(2)
    txt, dim = 6, model.inner_dim
    shapes = [(1, 2, 4), (1, 2, 2), (1, 4, 2)][:images_per_sample]
    img = sum(f * h * w for f, h, w in shapes)
    fixed: dict[str, Any] = {
        "encoder_hidden_states": randn(gen, batch, txt, 24),
        "img_shapes": [list(shapes) for _ in range(batch)],
        "guidance": None,
        "return_dict": return_dict,
    }
    if mask:
        m = torch.ones(batch, txt, dtype=torch.long)
        m[0, 4:] = 0  # trailing padding on the first sample
        if batch > 1:
            m[1, 1] = 0  # a hole: masks need not be contiguous
        fixed["encoder_hidden_states_mask"] = m
    if additional_t_cond:
        fixed["additional_t_cond"] = torch.arange(batch) % 2
    if controlnet:
        fixed["controlnet_block_samples"] = [randn(gen, batch, img, dim) * 0.1 for _ in range(controlnet)]
    if attention_kwargs is not None:
        fixed["attention_kwargs"] = attention_kwargs
    return [
        ((), {"hidden_states": randn(gen, batch, img, 16), "timestep": torch.full((batch,), t), **fixed})
        for t in FLOW_TIMESTEPS
    ]


CASES = [
    Case("qwen", build, calls, tags=frozenset({"loop"})),
    Case("qwen-mask", build, calls, {"mask": True, "attention_kwargs": {}}, tags=frozenset({"dtype", "checkpointing"})),
    Case(
        "qwen-zero-cond-t",
        lambda: build(zero_cond_t=True),
        calls,
        {"images_per_sample": 3},
        tags=frozenset({"dtype"}),
    ),
    Case("qwen-additional-t-cond", lambda: build(use_additional_t_cond=True), calls, {"additional_t_cond": True}),
    Case("qwen-controlnet", build, calls, {"controlnet": 2, "mask": True}),
]
