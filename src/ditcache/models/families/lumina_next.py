"""Extractor for diffusers ``LuminaNextDiT2DModel`` (Lumina-Next-SFT, Lumina-Next T2I).

Mirrors ``LuminaNextDiT2DModel.forward`` of diffusers 0.42: patch embedding (with the caller's rotary embedding),
the timestep + caption embedding, then the layers (image tokens; the caption is K/V), ``norm_out`` and unpatchify.
The forward has neither a gradient-checkpointing branch nor a LoRA scale, and neither has the extractor.

Modulated input (TeaCache's indicator): ``layers[0].norm1(h, temb)[0]`` (TeaCache4Lumina-T2X).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ditcache.core.context import CacheContext
from ditcache.models import _diffusers
from ditcache.presets.rules import fixed, none_published


@_diffusers.diffusers_extractor(
    "LuminaNextDiT2DModel",
    name="lumina-next",
    blocks=("layers",),
    attention_kwargs=None,
    teacache=fixed("lumina-next-sft", {"num_layers": 24, "hidden_size": 2304}),
    magcache=none_published("no MagCache curve is published for Lumina-Next"),
)
def extract(
    self: Any,
    hidden_states: torch.Tensor,
    timestep: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    encoder_mask: torch.Tensor,
    image_rotary_emb: torch.Tensor,
    cross_attention_kwargs: dict[str, Any] | None = None,
    return_dict: bool = True,
) -> CacheContext:
    condition, raw_timestep = encoder_hidden_states, timestep
    hidden_states, mask, img_size, rope = self.patch_embedder(hidden_states, image_rotary_emb)
    rope = rope.to(hidden_states.device)
    temb = self.time_caption_embed(timestep, encoder_hidden_states, encoder_mask)
    text_mask = encoder_mask.bool()

    def call(block: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        return block(h, mask, rope, e, text_mask, temb=temb, cross_attention_kwargs=cross_attention_kwargs)

    def postprocess(h: torch.Tensor, e: torch.Tensor | None) -> Any:
        h = self.norm_out(h, temb)
        p = self.patch_size
        height, width = img_size[0]
        length = (height // p) * (width // p)
        h = h[:, :length].view(h.size(0), height // p, width // p, p, p, self.out_channels)
        return _diffusers.model_output(h.permute(0, 5, 1, 3, 2, 4).flatten(4, 5).flatten(2, 3), return_dict)

    def modulated_input() -> torch.Tensor:
        return self.layers[0].norm1(hidden_states, temb)[0]  # type: ignore[no-any-return]

    return CacheContext(
        modulated_input=modulated_input,
        hidden_states=hidden_states,
        encoder_hidden_states=encoder_hidden_states,
        temb=temb,
        blocks=_diffusers.block_stack(_diffusers.BlockList(self.layers, call, "h")),
        postprocess=postprocess,
        extra_states={"rotary_emb": rope},
        timestep=raw_timestep,
        condition=condition,
    )
