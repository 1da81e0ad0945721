"""DiTTransformer2DModel (class-conditional; the class labels are the condition) and AllegroTransformer3DModel
(video mask pooled to patches, text mask)."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import AllegroTransformer3DModel, DiTTransformer2DModel
from torch import nn

from cases import Call, Case, built, randn, seeded


def dit() -> nn.Module:
    return built(
        DiTTransformer2DModel,
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=8,
        num_layers=3,
        norm_num_groups=4,
        sample_size=8,
        patch_size=2,
        num_embeds_ada_norm=10,
    )()


def dit_calls(model: nn.Module, batch: int, return_dict: bool, **extra: Any) -> list[Call]:
    gen = seeded(24)
    labels = torch.arange(batch) % 10
    return [
        (
            (),
            {
                "hidden_states": randn(gen, batch, 4, 8, 8),
                "timestep": torch.full((batch,), t, dtype=torch.long),
                "class_labels": labels,
                "return_dict": return_dict,
                **extra,
            },
        )
        for t in (999, 800, 550, 300)
    ]


def allegro() -> nn.Module:
    return built(
        AllegroTransformer3DModel,
        patch_size=2,
        patch_size_t=1,
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=4,
        num_layers=3,
        cross_attention_dim=16,
        sample_height=8,
        sample_width=8,
        sample_frames=2,
        caption_channels=12,
    )()


def allegro_calls(model: nn.Module, batch: int, return_dict: bool, *, masks: bool = False, **extra: Any) -> list[Call]:
    gen = seeded(25)
    fixed: dict[str, Any] = {"encoder_hidden_states": randn(gen, batch, 5, 12), "return_dict": return_dict, **extra}
    if masks:
        text = torch.ones(batch, 5, dtype=torch.long)
        text[0, 3:] = 0
        video = torch.ones(batch, 2, 8, 8)
        video[0, :, :, 6:] = 0
        fixed["encoder_attention_mask"] = text
        fixed["attention_mask"] = video
    return [
        ((), {"hidden_states": randn(gen, batch, 4, 2, 8, 8), "timestep": torch.full((batch,), t), **fixed})
        for t in (999.0, 800.0, 550.0, 300.0)
    ]


_ALL_TAGS = frozenset({"loop", "dtype", "checkpointing"})
CASES = [
    Case("dit", dit, dit_calls, tags=_ALL_TAGS, condition="class_labels", attention_kwargs=None),
    Case("allegro", allegro, allegro_calls, tags=frozenset({"loop", "checkpointing"}), attention_kwargs=None),
    Case("allegro-masks", allegro, allegro_calls, {"masks": True}, tags=frozenset({"dtype"}), attention_kwargs=None),
]
