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
    attention_mask = _diffusers.additive_mask(attention_mask, hidden_states.dtype)
    encoder_attention_mask = _diffusers.additive_mask(encoder_attention_mask, hidden_states.dtype)
    mask, text_mask = attention_mask, encoder_attention_mask

    grid = _diffusers.wan_grid(self, hidden_states)
    batch_size, post_f, post_h, post_w = grid[:4]
    rotary_emb = self.rope(hidden_states)
    hidden_states = self.patch_embedding(hidden_states).flatten(2).transpose(1, 2)
    temb, embedded_timestep, encoder_hidden_states = _diffusers.sana_conditions(
        self, hidden_states, encoder_hidden_states, timestep.flatten(), guidance
    )
    temb = temb.view(batch_size, -1, temb.size(-1))
    embedded_timestep = embedded_timestep.view(batch_size, -1, embedded_timestep.size(-1))

    def call(block: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        return _diffusers.call_block(self, block, h, mask, e, text_mask, temb, post_f, post_h, post_w, rotary_emb)

    add = _diffusers.controlnet_after_first(controlnet_block_samples)

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
