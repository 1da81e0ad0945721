"""Extractor for diffusers ``LuminaNextDiT2DModel`` (Lumina-Next-SFT, Lumina-Next T2I).

Mirrors ``LuminaNextDiT2DModel.forward`` of diffusers 0.42: the patch embedding (which also crops the caller's
rotary table to the image), the timestep + caption embedding, then the layers (the caption is cross-attention
K/V: each layer returns the image tokens only and the stack hands the *same* caption tensor back), then
``norm_out`` and unpatchify. diffusers has no gradient checkpointing for this model, so neither has the
extractor.

Modulated input (TeaCache's indicator): ``layers[0].norm1(hidden_states, temb)[0]``, as TeaCache4Lumina-T2X.
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
    teacache=fixed("lumina-next-sft", hidden_size=2304, cross_attention_dim=2048),
    magcache=none_published("no MagCache ratios are published for Lumina-Next"),
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
    condition = encoder_hidden_states
    raw_timestep = timestep
    hidden_states, mask, img_size, image_rotary_emb = self.patch_embedder(hidden_states, image_rotary_emb)
    image_rotary_emb = image_rotary_emb.to(hidden_states.device)

    temb = self.time_caption_embed(timestep, encoder_hidden_states, encoder_mask)

    encoder_mask = encoder_mask.bool()

    def call(layer: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        return layer(
            h, mask, image_rotary_emb, e, encoder_mask, temb=temb, cross_attention_kwargs=cross_attention_kwargs
        )

    stack = _diffusers.block_stack(_diffusers.BlockList(self.layers, call, "h"))
    first = self.layers[0]
    h0 = hidden_states

    def modulated_input() -> torch.Tensor:
        return first.norm1(h0, temb)[0]  # type: ignore[no-any-return]

    def postprocess(h: torch.Tensor, e: torch.Tensor | None) -> Any:
        h = self.norm_out(h, temb)
        height_tokens = width_tokens = self.patch_size
        height, width = img_size[0]
        batch_size = h.size(0)
        sequence_length = (height // height_tokens) * (width // width_tokens)
        h = h[:, :sequence_length].view(
            batch_size, height // height_tokens, width // width_tokens, height_tokens, width_tokens, self.out_channels
        )
        output = h.permute(0, 5, 1, 3, 2, 4).flatten(4, 5).flatten(2, 3)
        return _diffusers.model_output(output, return_dict)

    return CacheContext(
        modulated_input=modulated_input,
        hidden_states=hidden_states,
        encoder_hidden_states=encoder_hidden_states,
        temb=temb,
        blocks=stack,
        postprocess=postprocess,
        extra_states={"image_rotary_emb": image_rotary_emb, "encoder_mask": encoder_mask},
        timestep=raw_timestep,
        condition=condition,
    )
