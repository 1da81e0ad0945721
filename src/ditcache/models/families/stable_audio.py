"""Extractor for diffusers ``StableAudioDiTModel`` (Stable Audio Open 1.0).

Mirrors ``StableAudioDiTModel.forward`` of diffusers 0.42: the cross-attention and global projections, the
timestep projection added to the global token, the residual input convolution, ``proj_in``, the global token
prepended to the sequence (and to the mask), then the blocks (text as K/V; RoPE passed in by the caller),
``proj_out``, the global token dropped and the residual output convolution. The forward has no LoRA scale.

Modulated input (TeaCache's indicator): ``transformer_blocks[0].norm1(h)`` (plain LayerNorm; the time is the first
token), as vLLM-Omni does.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ditcache.core.context import CacheContext
from ditcache.models import _diffusers
from ditcache.presets.rules import fixed, none_published


@_diffusers.diffusers_extractor(
    "StableAudioDiTModel",
    name="stable-audio",
    blocks=("transformer_blocks",),
    attention_kwargs=None,
    teacache=fixed("stable-audio-open-vllm-omni", {"num_layers": 24, "num_attention_heads": 24}),
    magcache=none_published("no MagCache curve is published for Stable Audio"),
)
def extract(
    self: Any,
    hidden_states: torch.Tensor,
    timestep: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    global_hidden_states: torch.Tensor,
    rotary_embedding: Any = None,
    return_dict: bool = True,
    attention_mask: torch.Tensor | None = None,
    encoder_attention_mask: torch.Tensor | None = None,
) -> CacheContext:
    condition, raw_timestep = encoder_hidden_states, timestep
    context = self.cross_attention_proj(encoder_hidden_states)
    global_hidden_states = self.global_proj(global_hidden_states)
    global_hidden_states = global_hidden_states + self.timestep_proj(self.time_proj(timestep.to(self.dtype))).unsqueeze(
        1
    )
    hidden_states = (self.preprocess_conv(hidden_states) + hidden_states).transpose(1, 2)
    hidden_states = torch.cat([global_hidden_states, self.proj_in(hidden_states)], dim=-2)
    if attention_mask is not None:
        prepend = torch.ones((hidden_states.shape[0], 1), device=hidden_states.device, dtype=torch.bool)
        attention_mask = torch.cat([prepend, attention_mask], dim=-1)
    mask = attention_mask

    def call(block: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        return _diffusers.call_block(self, block, h, mask, context, encoder_attention_mask, rotary_embedding)

    def postprocess(h: torch.Tensor, e: torch.Tensor | None) -> Any:
        from diffusers.models.transformers.transformer_2d import Transformer2DModelOutput  # the class it returns

        h = self.proj_out(h).transpose(1, 2)[:, :, 1:]
        return _diffusers.model_output(self.postprocess_conv(h) + h, return_dict, Transformer2DModelOutput)

    def modulated_input() -> torch.Tensor:
        return self.transformer_blocks[0].norm1(hidden_states)  # type: ignore[no-any-return]

    return CacheContext(
        modulated_input=modulated_input,
        hidden_states=hidden_states,
        encoder_hidden_states=None,
        temb=global_hidden_states,
        blocks=_diffusers.block_stack(_diffusers.BlockList(self.transformer_blocks, call, "h")),
        postprocess=postprocess,
        extra_states={"encoder_hidden_states": context},
        timestep=raw_timestep,
        condition=condition,
    )
