"""Extractor for diffusers ``Krea2Transformer2DModel`` (Krea 2).

Mirrors ``Krea2Transformer2DModel.forward`` of diffusers 0.42: the timestep embedding and its modulation
projection, the joint mask, the text fusion encoder and ``txt_in`` (preprocessing), ``img_in``, the text tokens
prepended to the image tokens, RoPE from the position ids, then the single-stream blocks on that one sequence (the
context carries it as the hidden states, with no text stream), the text tokens dropped and the final layer.

Modulated input (TeaCache's indicator): the timestep modulation ``temb_mod``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ditcache.core.context import CacheContext
from ditcache.models import _diffusers
from ditcache.presets.rules import none_published


@_diffusers.diffusers_extractor(
    "Krea2Transformer2DModel",
    name="krea2",
    blocks=("transformer_blocks",),
    teacache=none_published("no TeaCache set is published for Krea 2"),
    magcache=none_published("no MagCache curve is published for Krea 2"),
)
def extract(
    self: Any,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    timestep: torch.Tensor,
    position_ids: torch.Tensor,
    encoder_attention_mask: torch.Tensor | None = None,
    attention_kwargs: dict[str, Any] | None = None,
    return_dict: bool = True,
) -> CacheContext:
    if position_ids.ndim != 2 or position_ids.shape[-1] != 3:
        raise ValueError(f"`position_ids` must have shape (sequence_length, 3), got {tuple(position_ids.shape)}.")
    condition, raw_timestep = encoder_hidden_states, timestep
    batch_size, image_seq_len, _ = hidden_states.shape
    text_seq_len = encoder_hidden_states.shape[1]
    temb = self.time_embed(timestep, dtype=hidden_states.dtype)
    temb_mod = self.time_mod_proj(F.gelu(temb, approximate="tanh"))
    text_mask = mask = None
    if encoder_attention_mask is not None:
        text_mask = encoder_attention_mask[:, None, None, :]
        image_mask = encoder_attention_mask.new_ones((batch_size, image_seq_len))
        mask = torch.cat([encoder_attention_mask, image_mask], dim=1)[:, None, None, :]
    encoder_hidden_states = self.txt_in(self.text_fusion(encoder_hidden_states, attention_mask=text_mask))
    joint = torch.cat([encoder_hidden_states, self.img_in(hidden_states)], dim=1)
    rope = self.rotary_emb(position_ids)

    def call(block: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        return _diffusers.call_block(self, block, h, temb_mod, rope, mask)

    return CacheContext(
        modulated_input=temb_mod,
        hidden_states=joint,
        encoder_hidden_states=None,
        temb=temb,
        blocks=_diffusers.block_stack(_diffusers.BlockList(self.transformer_blocks, call, "h")),
        postprocess=lambda h, e: _diffusers.model_output(self.final_layer(h[:, text_seq_len:], temb), return_dict),
        extra_states={"temb_mod": temb_mod, "rotary_emb": rope},
        timestep=raw_timestep,
        condition=condition,
    )
