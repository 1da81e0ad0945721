"""Extractor for diffusers ``SanaVideoTransformer3DModel`` (SANA-Video).

Mirrors ``SanaVideoTransformer3DModel.forward`` of diffusers 0.42: the additive masks, RoPE, 3-D patch embedding,
the (per-token) timestep and optional guidance embedding, the caption projection and norm, then the blocks (video
tokens; text as K/V), ControlNet residuals with Sana's offset (sample ``i - 1`` after block ``i``), ``norm_out`` with
``scale_shift_table``, ``proj_out`` and unpatchify.

Modulated input (TeaCache's indicator): ``norm1(h) * (1 + scale_msa) + shift_msa`` of the first block.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ditcache.core.context import CacheContext
from ditcache.models import _diffusers
from ditcache.presets.rules import none_published


@_diffusers.diffusers_extractor(
    "SanaVideoTransformer3DModel",
    name="sana-video",
    blocks=("transformer_blocks",),
    teacache=none_published("no TeaCache set is published for SANA-Video"),
    magcache=none_published("no MagCache curve is published for SANA-Video"),
)
def extract(
    self: Any,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    timestep: torch.Tensor,
    guidance: torch.Tensor | None = None,
    encoder_attention_mask: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    attention_kwargs: dict[str, Any] | None = None,
    controlnet_block_samples: Sequence[torch.Tensor] | None = None,
    return_dict: bool = True,
) -> CacheContext:
    condition, raw_timestep = encoder_hidden_states, timestep
    if attention_mask is not None and attention_mask.ndim == 2:
        attention_mask = ((1 - attention_mask.to(hidden_states.dtype)) * -10000.0).unsqueeze(1)
    if encoder_attention_mask is not None and encoder_attention_mask.ndim == 2:
        encoder_attention_mask = ((1 - encoder_attention_mask.to(hidden_states.dtype)) * -10000.0).unsqueeze(1)
    mask, text_mask = attention_mask, encoder_attention_mask

    grid = _diffusers.wan_grid(self, hidden_states)
    batch_size, post_f, post_h, post_w = grid[:4]
    rotary_emb = self.rope(hidden_states)
    hidden_states = self.patch_embedding(hidden_states).flatten(2).transpose(1, 2)
    if guidance is not None:
        temb, embedded_timestep = self.time_embed(
            timestep.flatten(), guidance=guidance, hidden_dtype=hidden_states.dtype
        )
    else:
        temb, embedded_timestep = self.time_embed(
            timestep.flatten(), batch_size=batch_size, hidden_dtype=hidden_states.dtype
        )
    temb = temb.view(batch_size, -1, temb.size(-1))
    embedded_timestep = embedded_timestep.view(batch_size, -1, embedded_timestep.size(-1))
    encoder_hidden_states = self.caption_projection(encoder_hidden_states)
    encoder_hidden_states = self.caption_norm(encoder_hidden_states.view(batch_size, -1, hidden_states.shape[-1]))

    def call(block: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        return _diffusers.call_block(self, block, h, mask, e, text_mask, temb, post_f, post_h, post_w, rotary_emb)

    add = None
    if controlnet_block_samples is not None:
        samples = controlnet_block_samples

        def add(index: int, h: torch.Tensor) -> torch.Tensor:
            return h + samples[index - 1] if 0 < index <= len(samples) else h

    def postprocess(h: torch.Tensor, e: torch.Tensor | None) -> Any:
        h = self.proj_out(self.norm_out(h, embedded_timestep, self.scale_shift_table))
        return _diffusers.model_output(_diffusers.wan_unpatchify(h, grid), return_dict)

    first = self.transformer_blocks[0]
    return CacheContext(
        modulated_input=_diffusers.scale_shift_input(first.norm1, first.scale_shift_table, hidden_states, temb),
        hidden_states=hidden_states,
        encoder_hidden_states=encoder_hidden_states,
        temb=temb,
        blocks=_diffusers.block_stack(_diffusers.BlockList(self.transformer_blocks, call, "h", add)),
        postprocess=postprocess,
        extra_states={"embedded_timestep": embedded_timestep, "rotary_emb": rotary_emb},
        timestep=raw_timestep,
        condition=condition,
    )
