"""Extractor for diffusers ``MiniMaxMusic3Transformer1DModel`` (MiniMax Music 3).

Mirrors ``MiniMaxMusic3Transformer1DModel.forward`` of diffusers 0.42: the latents, a zero block and the condition
stacked on the channel axis through the residual pre-convolution, ``proj_in``, the timestep embedding prepended as
one token (there is no AdaLN and no separate text stream), RoPE over the sequence, then the blocks, then
``proj_out`` without the timestep token and the residual post-convolution. The model has no LoRA-scale argument.

Modulated input (TeaCache's indicator): ``transformer_blocks[0].norm1(hidden_states)``, a plain LayerNorm over the
sequence whose first token carries the timestep.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ditcache.core.context import CacheContext
from ditcache.models import _diffusers
from ditcache.presets.rules import none_published


@_diffusers.diffusers_extractor(
    "MiniMaxMusic3Transformer1DModel",
    name="minimax-music3",
    blocks=("transformer_blocks",),
    attention_kwargs=None,
    teacache=none_published("no TeaCache coefficients are published for MiniMax Music 3"),
    magcache=none_published("no MagCache ratios are published for MiniMax Music 3"),
)
def extract(
    self: Any,
    hidden_states: torch.Tensor,
    timestep: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    return_dict: bool = True,
) -> CacheContext:
    condition = encoder_hidden_states
    raw_timestep = timestep
    zeros = torch.zeros_like(hidden_states)
    hidden_states = torch.cat((hidden_states, zeros, encoder_hidden_states.transpose(1, 2)), dim=1)
    hidden_states = self.preprocess_conv(hidden_states) + hidden_states
    hidden_states = hidden_states.transpose(1, 2)

    temb = self.time_embed(self.time_proj(timestep))
    hidden_states = self.proj_in(hidden_states)
    hidden_states = torch.cat((temb.unsqueeze(1), hidden_states), dim=1)  # the timestep token goes first
    rotary_emb = self.rotary_emb(hidden_states.shape[1], hidden_states.device)

    def call(block: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        return _diffusers.call_block(self, block, h, rotary_emb)

    stack = _diffusers.block_stack(_diffusers.BlockList(self.transformer_blocks, call, "h"))
    first = self.transformer_blocks[0]
    h0 = hidden_states

    def modulated_input() -> torch.Tensor:
        return first.norm1(h0)  # type: ignore[no-any-return]

    def postprocess(h: torch.Tensor, e: torch.Tensor | None) -> Any:
        h = self.proj_out(h[:, 1:])
        h = h.transpose(1, 2)
        output = self.postprocess_conv(h) + h
        return _diffusers.model_output(output, return_dict)

    return CacheContext(
        modulated_input=modulated_input,
        hidden_states=hidden_states,
        encoder_hidden_states=None,
        temb=temb,
        blocks=stack,
        postprocess=postprocess,
        extra_states={"rotary_emb": rotary_emb},
        timestep=raw_timestep,
        condition=condition,
    )
