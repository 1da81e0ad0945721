"""ErnieImageTransformer2DModel: a sequence-first [image; text] stream, per-sample text lengths, shared AdaLN."""

from __future__ import annotations

import torch
from diffusers import ErnieImageTransformer2DModel
from torch import nn

from cases import TIMESTEPS_1000, Call, Case, built, randn, seeded


def build() -> nn.Module:
    return built(
        ErnieImageTransformer2DModel,
        hidden_size=32,
        num_attention_heads=2,
        num_layers=2,
        ffn_hidden_size=48,
        in_channels=4,
        out_channels=4,
        patch_size=2,
        text_in_dim=24,
        rope_axes_dim=(4, 6, 6),
    )()


def calls(model: nn.Module, batch: int, return_dict: bool) -> list[Call]:
    gen = seeded(34)
    text_lens = torch.tensor([3, 5][:batch] + [5] * max(0, batch - 2))  # the first prompt is padded
    fixed = {"text_bth": randn(gen, batch, 5, 24), "text_lens": text_lens, "return_dict": return_dict}
    return [
        ((), {"hidden_states": randn(gen, batch, 4, 8, 8), "timestep": torch.full((batch,), t), **fixed})
        for t in TIMESTEPS_1000
    ]


CASES = [
    Case(
        "ernie-image",
        build,
        calls,
        tags=frozenset({"loop", "dtype", "checkpointing"}),
        condition="text_bth",
        attention_kwargs=None,
    )
]
