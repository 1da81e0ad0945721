"""HunyuanImageTransformer2DModel: MLLM text mask, ByT5 text packed in (valid tokens first), guidance and meanflow
embeddings. Gradient checkpointing is not exercised: diffusers 0.42's checkpointed call passes keywords that its
default checkpointing function does not accept (the native forward raises; the extractor does the same)."""

from __future__ import annotations

from typing import Any

import torch
from diffusers import HunyuanImageTransformer2DModel
from torch import nn

from cases import Call, Case, built, randn, seeded


def build(byt5: bool = False, distilled: bool = False) -> nn.Module:
    return built(
        HunyuanImageTransformer2DModel,
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=8,
        num_layers=1,
        num_single_layers=2,
        num_refiner_layers=1,
        patch_size=(1, 1),
        guidance_embeds=distilled,
        text_embed_dim=16,
        text_embed_2_dim=8 if byt5 else None,
        rope_axes_dim=(4, 4),
        use_meanflow=distilled,
    )()


def calls(
    model: nn.Module, batch: int, return_dict: bool, *, byt5: bool = False, distilled: bool = False, **extra: Any
) -> list[Call]:
    gen = seeded(21)
    mask = torch.ones(batch, 6, dtype=torch.long)
    mask[0, 4:] = 0
    fixed: dict[str, Any] = {
        "encoder_hidden_states": randn(gen, batch, 6, 16),
        "encoder_attention_mask": mask,
        "return_dict": return_dict,
        **extra,
    }
    if byt5:
        mask_2 = torch.ones(batch, 3, dtype=torch.long)
        mask_2[-1, 1:] = 0
        fixed["encoder_hidden_states_2"] = randn(gen, batch, 3, 8)
        fixed["encoder_attention_mask_2"] = mask_2
    if distilled:
        fixed["guidance"] = torch.full((batch,), 3500.0)
    out: list[Call] = []
    for t in (999.0, 800.0, 550.0, 300.0):
        kwargs = {"hidden_states": randn(gen, batch, 4, 4, 4), "timestep": torch.full((batch,), t), **fixed}
        if distilled:
            kwargs["timestep_r"] = torch.full((batch,), t / 2)
        out.append(((), kwargs))
    return out


CASES = [
    Case("hunyuanimage", build, calls, tags=frozenset({"loop"})),
    Case(
        "hunyuanimage-byt5",
        lambda: build(byt5=True),
        calls,
        {"byt5": True, "attention_kwargs": {}},
        tags=frozenset({"dtype"}),
    ),
    Case(
        "hunyuanimage-distilled", lambda: build(distilled=True), calls, {"distilled": True}, tags=frozenset({"dtype"})
    ),
]
