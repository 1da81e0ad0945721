"""Extractor for diffusers ``StableAudioDiTModel`` (Stable Audio Open 1.0).

Mirrors ``StableAudioDiTModel.forward`` of diffusers 0.42: the cross-attention and global projections, the
timestep embedding added to the global token, the residual pre-convolution, ``proj_in``, the global token
prepended to the sequence (and to the mask), then the blocks (the conditioning is cross-attention K/V: each
block returns the audio tokens only and the stack hands the *same* conditioning tensor back), then
``proj_out``, the global token dropped and the residual post-convolution. The rotary embedding is the caller's
(the pipeline computes it). The model has no LoRA-scale argument.

Modulated input (TeaCache's indicator): ``transformer_blocks[0].norm1(hidden_states)``, a plain LayerNorm over the
sequence whose first token carries the timestep: the indicator of vLLM-Omni's StableAudio TeaCache extractor,
for which its published coefficients were estimated.
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
    teacache=fixed("stable-audio-open-1.0", num_layers=24, attention_head_dim=64, num_attention_heads=24),
    magcache=none_published("no MagCache ratios are published for Stable Audio"),
)
def extract(
    self: Any,
    hidden_states: torch.Tensor,
    timestep: torch.Tensor | None = None,
    encoder_hidden_states: torch.Tensor | None = None,
    global_hidden_states: torch.Tensor | None = None,
    rotary_embedding: torch.Tensor | None = None,
    return_dict: bool = True,
    attention_mask: torch.Tensor | None = None,
    encoder_attention_mask: torch.Tensor | None = None,
) -> CacheContext:
    from diffusers.models.transformers import stable_audio_transformer

    if timestep is None or encoder_hidden_states is None or global_hidden_states is None:
        raise ValueError(
            "StableAudioDiTModel call: timestep, encoder_hidden_states and global_hidden_states are required"
        )
    condition = encoder_hidden_states
    raw_timestep = timestep
    cross_attention_hidden_states = self.cross_attention_proj(encoder_hidden_states)
    global_hidden_states = self.global_proj(global_hidden_states)
    time_hidden_states = self.timestep_proj(self.time_proj(timestep.to(self.dtype)))

    global_hidden_states = global_hidden_states + time_hidden_states.unsqueeze(1)

    hidden_states = self.preprocess_conv(hidden_states) + hidden_states
    hidden_states = hidden_states.transpose(1, 2)  # (batch, dim, length) -> (batch, length, dim)
    hidden_states = self.proj_in(hidden_states)

    # the global token goes first (also in the mask)
    hidden_states = torch.cat([global_hidden_states, hidden_states], dim=-2)
    if attention_mask is not None:
        prepend_mask = torch.ones((hidden_states.shape[0], 1), device=hidden_states.device, dtype=torch.bool)
        attention_mask = torch.cat([prepend_mask, attention_mask], dim=-1)

    def call(block: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        return _diffusers.call_block(self, block, h, attention_mask, e, encoder_attention_mask, rotary_embedding)

    stack = _diffusers.block_stack(_diffusers.BlockList(self.transformer_blocks, call, "h"))
    first = self.transformer_blocks[0]
    h0 = hidden_states

    def modulated_input() -> torch.Tensor:
        return first.norm1(h0)  # type: ignore[no-any-return]

    def postprocess(h: torch.Tensor, e: torch.Tensor | None) -> Any:
        h = self.proj_out(h)
        h = h.transpose(1, 2)[:, :, 1:]  # (batch, dim, length), without the global token
        output = self.postprocess_conv(h) + h
        # diffusers returns the deprecated transformer_2d output class here
        return _diffusers.model_output(output, return_dict, stable_audio_transformer.Transformer2DModelOutput)

    return CacheContext(
        modulated_input=modulated_input,
        hidden_states=hidden_states,
        encoder_hidden_states=cross_attention_hidden_states,
        temb=global_hidden_states,
        blocks=stack,
        postprocess=postprocess,
        extra_states={"rotary_embedding": rotary_embedding, "attention_mask": attention_mask},
        timestep=raw_timestep,
        condition=condition,
    )
