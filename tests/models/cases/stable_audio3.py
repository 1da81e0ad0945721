"""StableAudio3DiTModel: memory tokens in the stream, prompt padding embedding, inpainting condition, patching."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import StableAudio3DiTModel
from torch import nn

from cases import Call, Case, built, randn, seeded


def build(patch_size: int = 1) -> nn.Module:
    return built(
        StableAudio3DiTModel,
        io_channels=4,
        patch_size=patch_size,
        embed_dim=32,
        depth=2,
        num_heads=2,
        cond_token_dim=16,
        global_cond_dim=12,
        local_add_cond_dim=5,
        timestep_features_dim=16,
        ff_mult=2.0,
        num_memory_tokens=3,
    )()


def calls(model: nn.Module, batch: int, return_dict: bool, *, mask: bool = False, local: bool = False) -> list[Call]:
    gen = seeded(41)
    length = 8
    fixed: dict[str, Any] = {
        "encoder_hidden_states": randn(gen, batch, 5, 16),
        "global_hidden_states": randn(gen, batch, 12),
        "return_dict": return_dict,
    }
    if mask:
        prompt_mask = torch.ones(batch, 5)
        prompt_mask[0, -2:] = 0
        fixed["encoder_attention_mask"] = prompt_mask
    if local:
        fixed["local_add_cond"] = randn(gen, batch, 5, length)
    return [
        ((), {"hidden_states": randn(gen, batch, 4, length), "timestep": torch.full((batch,), t), **fixed})
        for t in (0.9, 0.7, 0.4, 0.2)
    ]


CASES = [
    Case("stable-audio3", build, calls, {"mask": True}, tags=frozenset({"loop"}), attention_kwargs=None),
    Case(
        "stable-audio3-inpaint",
        build,
        calls,
        {"mask": True, "local": True},
        tags=frozenset({"dtype", "checkpointing"}),
        attention_kwargs=None,
    ),
    Case("stable-audio3-patched", lambda: build(patch_size=2), calls, attention_kwargs=None),
]
