"""Extractor for diffusers ``SanaVideoTransformer3DModel`` (SANA-Video).

Mirrors ``SanaVideoTransformer3DModel.forward`` of diffusers 0.42: the 2-D keep-masks turned into additive biases,
Wan's RoPE, the patch embedding, the ``adaln_single`` (or timestep+guidance) embedding viewed per frame, the
caption projection and norm, then the linear-attention blocks (text as cross-attention K/V: each block returns
the video tokens only and the stack hands the *same* text tensor back), with ControlNet sample ``i - 1`` added
after block ``i`` for ``0 < i <= len(samples)`` as diffusers does, then the modulated output norm, ``proj_out``
and unpatchify.

Modulated input (TeaCache's indicator): PixArt-style, ``norm1(h) * (1 + scale_msa) + shift_msa`` of the first
block with ``shift, scale`` from its ``scale_shift_table`` plus the 6-way timestep embedding.
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
    teacache=none_published("no TeaCache coefficients are published for SANA-Video"),
    magcache=none_published("no MagCache ratios are published for SANA-Video"),
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
    condition = encoder_hidden_states
    raw_timestep = timestep

    # (batch, tokens) keep-masks become additive biases with a singleton query axis (keep 0, drop -10000)
    if attention_mask is not None and attention_mask.ndim == 2:
        attention_mask = (1 - attention_mask.to(hidden_states.dtype)) * -10000.0
        attention_mask = attention_mask.unsqueeze(1)
    if encoder_attention_mask is not None and encoder_attention_mask.ndim == 2:
        encoder_attention_mask = (1 - encoder_attention_mask.to(hidden_states.dtype)) * -10000.0
        encoder_attention_mask = encoder_attention_mask.unsqueeze(1)

    batch_size, _num_channels, num_frames, height, width = hidden_states.shape
    p_t, p_h, p_w = self.config.patch_size
    post_patch_num_frames = num_frames // p_t
    post_patch_height = height // p_h
    post_patch_width = width // p_w

    rotary_emb = self.rope(hidden_states)

    hidden_states = self.patch_embedding(hidden_states)
    hidden_states = hidden_states.flatten(2).transpose(1, 2)

    if guidance is not None:
        timestep, embedded_timestep = self.time_embed(
            timestep.flatten(), guidance=guidance, hidden_dtype=hidden_states.dtype
        )
    else:
        timestep, embedded_timestep = self.time_embed(
            timestep.flatten(), batch_size=batch_size, hidden_dtype=hidden_states.dtype
        )

    timestep = timestep.view(batch_size, -1, timestep.size(-1))
    embedded_timestep = embedded_timestep.view(batch_size, -1, embedded_timestep.size(-1))

    encoder_hidden_states = self.caption_projection(encoder_hidden_states)
    encoder_hidden_states = encoder_hidden_states.view(batch_size, -1, hidden_states.shape[-1])
    encoder_hidden_states = self.caption_norm(encoder_hidden_states)

    temb = timestep

    def call(block: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        return _diffusers.call_block(
            self,
            block,
            h,
            attention_mask,
            e,
            encoder_attention_mask,
            temb,
            post_patch_num_frames,
            post_patch_height,
            post_patch_width,
            rotary_emb,
        )

    controlnet = (
        None
        if controlnet_block_samples is None
        else {i: controlnet_block_samples[i - 1] for i in range(1, len(controlnet_block_samples) + 1)}
    )
    stack = _diffusers.block_stack(
        _diffusers.BlockList(self.transformer_blocks, call, "h", _diffusers.add_at(controlnet))
    )
    first = self.transformer_blocks[0]

    def postprocess(h: torch.Tensor, e: torch.Tensor | None) -> Any:
        h = self.norm_out(h, embedded_timestep, self.scale_shift_table)
        h = self.proj_out(h)
        h = h.reshape(batch_size, post_patch_num_frames, post_patch_height, post_patch_width, p_t, p_h, p_w, -1)
        h = h.permute(0, 7, 1, 4, 2, 5, 3, 6)
        output = h.flatten(6, 7).flatten(4, 5).flatten(2, 3)
        return _diffusers.model_output(output, return_dict)

    return CacheContext(
        modulated_input=_diffusers.scale_shift_input(first.norm1, first.scale_shift_table, hidden_states, temb),
        hidden_states=hidden_states,
        encoder_hidden_states=encoder_hidden_states,
        temb=temb,
        blocks=stack,
        postprocess=postprocess,
        extra_states={"embedded_timestep": embedded_timestep, "rotary_emb": rotary_emb},
        timestep=raw_timestep,
        condition=condition,
    )
