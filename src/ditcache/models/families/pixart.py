"""Extractor for diffusers ``PixArtTransformer2DModel`` (PixArt-alpha, PixArt-Sigma and fine-tunes).

Mirrors ``PixArtTransformer2DModel.forward`` of diffusers 0.42: the additive masks, patch + position embedding,
``adaln_single`` (with PixArt-alpha's resolution / aspect-ratio conditions), the caption projection, then the
``BasicTransformerBlock`` s in ``ada_norm_single`` mode (image tokens; text as K/V), the output modulation,
``proj_out`` and unpatchify. The forward has no LoRA scale.

Modulated input (TeaCache's indicator): ``norm1(h) * (1 + scale_msa) + shift_msa`` of the first block.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ditcache.core.context import CacheContext
from ditcache.models import _diffusers
from ditcache.presets.rules import none_published


@_diffusers.diffusers_extractor(
    "PixArtTransformer2DModel",
    name="pixart",
    blocks=("transformer_blocks",),
    attention_kwargs=None,
    teacache=none_published("no TeaCache set is published for PixArt (TeaCache's evaluation covers Latte/Open-Sora)"),
    magcache=none_published("no MagCache curve is published for PixArt"),
)
def extract(
    self: Any,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor | None = None,
    timestep: torch.Tensor | None = None,
    added_cond_kwargs: dict[str, torch.Tensor] | None = None,
    cross_attention_kwargs: dict[str, Any] | None = None,
    attention_mask: torch.Tensor | None = None,
    encoder_attention_mask: torch.Tensor | None = None,
    return_dict: bool = True,
) -> CacheContext:
    if self.use_additional_conditions and added_cond_kwargs is None:
        raise ValueError("`added_cond_kwargs` cannot be None when using additional conditions for `adaln_single`.")
    condition, raw_timestep = encoder_hidden_states, timestep
    attention_mask = _diffusers.additive_mask(attention_mask, hidden_states.dtype)
    encoder_attention_mask = _diffusers.additive_mask(encoder_attention_mask, hidden_states.dtype)
    mask, text_mask = attention_mask, encoder_attention_mask

    batch_size = hidden_states.shape[0]
    p = self.config.patch_size
    height, width = hidden_states.shape[-2] // p, hidden_states.shape[-1] // p
    hidden_states = self.pos_embed(hidden_states)
    temb, embedded_timestep = self.adaln_single(
        timestep, added_cond_kwargs, batch_size=batch_size, hidden_dtype=hidden_states.dtype
    )
    if self.caption_projection is not None:
        encoder_hidden_states = self.caption_projection(encoder_hidden_states)
        encoder_hidden_states = encoder_hidden_states.view(batch_size, -1, hidden_states.shape[-1])

    def call(block: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        return _diffusers.call_block(self, block, h, mask, e, text_mask, temb, cross_attention_kwargs, None)

    def postprocess(h: torch.Tensor, e: torch.Tensor | None) -> Any:
        table = self.scale_shift_table
        shift, scale = (table[None] + embedded_timestep[:, None].to(table.device)).chunk(2, dim=1)
        h = self.norm_out(h)
        h = h * (1 + scale.to(h.device)) + shift.to(h.device)
        h = self.proj_out(h).squeeze(1)
        h = h.reshape(shape=(-1, height, width, p, p, self.out_channels))
        h = torch.einsum("nhwpqc->nchpwq", h)
        return _diffusers.model_output(h.reshape(shape=(-1, self.out_channels, height * p, width * p)), return_dict)

    first = self.transformer_blocks[0]
    return CacheContext(
        modulated_input=_diffusers.scale_shift_input(first.norm1, first.scale_shift_table, hidden_states, temb),
        hidden_states=hidden_states,
        encoder_hidden_states=encoder_hidden_states,
        temb=temb,
        blocks=_diffusers.block_stack(_diffusers.BlockList(self.transformer_blocks, call, "h")),
        postprocess=postprocess,
        extra_states={"embedded_timestep": embedded_timestep, "encoder_attention_mask": text_mask},
        timestep=raw_timestep,
        condition=condition,
    )
