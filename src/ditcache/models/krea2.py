"""Extractor for diffusers ``Krea2Transformer2DModel`` (Krea 2).

Mirrors ``Krea2Transformer2DModel.forward`` of diffusers 0.42: the timestep embedding and its shared modulation
projection, the key-padding masks from the text mask, the text fusion and projection, the image projection, RoPE
over the caller's position ids, then the single-stream blocks on ``[text; image]`` (the ``"joint"`` convention:
the stack keeps the two streams apart between blocks, which leaves every value as diffusers computes it), then
the image tokens through the final layer.

Modulated input (TeaCache's indicator): the first block's pre-attention modulation of the image tokens,
``(1 + prescale) * norm1(h) + preshift`` from the shared ``temb_mod`` plus the block's ``scale_shift_table``.
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
    teacache=none_published("no TeaCache coefficients are published for Krea 2"),
    magcache=none_published("no MagCache ratios are published for Krea 2"),
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
    condition = encoder_hidden_states
    raw_timestep = timestep
    batch_size, image_seq_len, _ = hidden_states.shape

    temb = self.time_embed(timestep, dtype=hidden_states.dtype)
    temb_mod = self.time_mod_proj(F.gelu(temb, approximate="tanh"))

    text_attention_mask = None
    attention_mask = None
    if encoder_attention_mask is not None:  # key-padding masks (B, 1, 1, L)
        text_attention_mask = encoder_attention_mask[:, None, None, :]
        image_mask = encoder_attention_mask.new_ones((batch_size, image_seq_len))
        attention_mask = torch.cat([encoder_attention_mask, image_mask], dim=1)[:, None, None, :]

    encoder_hidden_states = self.text_fusion(encoder_hidden_states, attention_mask=text_attention_mask)
    encoder_hidden_states = self.txt_in(encoder_hidden_states)
    hidden_states = self.img_in(hidden_states)
    image_rotary_emb = self.rotary_emb(position_ids)

    def call(block: nn.Module, joint: torch.Tensor, e: torch.Tensor | None) -> Any:
        return _diffusers.call_block(self, block, joint, temb_mod, image_rotary_emb, attention_mask)

    stack = _diffusers.block_stack(_diffusers.BlockList(self.transformer_blocks, call, "joint"))
    first = self.transformer_blocks[0]
    h0 = hidden_states

    def modulated_input() -> torch.Tensor:
        prescale, preshift = (temb_mod.unflatten(-1, (6, -1)) + first.scale_shift_table).unbind(-2)[:2]
        return (1.0 + prescale) * first.norm1(h0) + preshift  # type: ignore[no-any-return]

    def postprocess(h: torch.Tensor, e: torch.Tensor | None) -> Any:
        return _diffusers.model_output(self.final_layer(h, temb), return_dict)

    return CacheContext(
        modulated_input=modulated_input,
        hidden_states=hidden_states,
        encoder_hidden_states=encoder_hidden_states,
        temb=temb,
        blocks=stack,
        postprocess=postprocess,
        extra_states={"temb_mod": temb_mod, "image_rotary_emb": image_rotary_emb, "attention_mask": attention_mask},
        timestep=raw_timestep,
        condition=condition,
    )
