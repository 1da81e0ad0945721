"""Extractor for diffusers ``SanaTransformer2DModel`` (Sana 0.6B / 1.6B, Sana 1.5, Sana-Sprint).

Mirrors ``SanaTransformer2DModel.forward`` of diffusers 0.42: the additive masks, patch embedding, the timestep
(and Sprint's guidance) embedding, the caption projection and norm, then the blocks (image tokens; text as K/V),
ControlNet residuals with Sana's offset (sample ``i - 1`` after block ``i``, for ``0 < i <= len(samples)``),
``norm_out`` with the model's ``scale_shift_table``, ``proj_out`` and unpatchify.

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
    "SanaTransformer2DModel",
    name="sana",
    blocks=("transformer_blocks",),
    teacache=none_published("no TeaCache set is published for Sana"),
    magcache=none_published("no MagCache curve is published for Sana"),
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

    batch_size, _, height, width = hidden_states.shape
    p = self.config.patch_size
    post_h, post_w = height // p, width // p
    hidden_states = self.patch_embed(hidden_states)
    temb, embedded_timestep, encoder_hidden_states = _diffusers.sana_conditions(
        self, hidden_states, encoder_hidden_states, timestep, guidance
    )

    def call(block: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        return _diffusers.call_block(self, block, h, mask, e, text_mask, temb, post_h, post_w)

    add = _diffusers.controlnet_after_first(controlnet_block_samples)

    def postprocess(h: torch.Tensor, e: torch.Tensor | None) -> Any:
        h = self.proj_out(self.norm_out(h, embedded_timestep, self.scale_shift_table))
        h = h.reshape(batch_size, post_h, post_w, p, p, -1).permute(0, 5, 1, 3, 2, 4)
        return _diffusers.model_output(h.reshape(batch_size, -1, post_h * p, post_w * p), return_dict)

    first = self.transformer_blocks[0]
    return CacheContext(
        modulated_input=_diffusers.scale_shift_input(first.norm1, first.scale_shift_table, hidden_states, temb),
        hidden_states=hidden_states,
        encoder_hidden_states=encoder_hidden_states,
        temb=temb,
        blocks=_diffusers.block_stack(_diffusers.BlockList(self.transformer_blocks, call, "h", add)),
        postprocess=postprocess,
        extra_states={"embedded_timestep": embedded_timestep, "encoder_attention_mask": text_mask},
        timestep=raw_timestep,
        condition=condition,
    )
