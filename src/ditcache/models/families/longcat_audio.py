"""Extractor for diffusers ``LongCatAudioDiTTransformer`` (LongCat-Audio-DiT).

Mirrors ``LongCatAudioDiTTransformer.forward`` of diffusers 0.42: the timestep embedding, the masked text
embedding (and text convolution), the audio embedding with the optional latent condition, the long-skip copy of
the block input, RoPE for audio and text, the AdaLN conditioning (global: one MLP over timestep + mean text, shared
by every block; local: each block's own), then the blocks (the text is cross-attention K/V: each block returns the
audio tokens only and the stack hands the *same* text tensor back), then the long skip, ``norm_out``,
``proj_out`` and the audio mask. diffusers has no gradient checkpointing for this model, so neither has the
extractor; the model has no LoRA-scale argument.

Modulated input (TeaCache's indicator): the AdaLN conditioning vector (timestep embedding, plus the mean text
embedding when ``adaln_use_text_cond``), a timestep-embedding indicator as TeaCache4Wan2.1 and TeaCache4HiDream use.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ditcache.core.context import CacheContext
from ditcache.models import _diffusers
from ditcache.presets.rules import none_published


@_diffusers.diffusers_extractor(
    "LongCatAudioDiTTransformer",
    name="longcat-audio-dit",
    blocks=("blocks",),
    attention_kwargs=None,
    teacache=none_published("no TeaCache coefficients are published for LongCat-Audio-DiT"),
    magcache=none_published("no MagCache ratios are published for LongCat-Audio-DiT"),
)
def extract(
    self: Any,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    encoder_attention_mask: torch.Tensor,
    timestep: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    latent_cond: torch.Tensor | None = None,
    return_dict: bool = True,
) -> CacheContext:
    from diffusers.models.transformers.transformer_longcat_audio_dit import LongCatAudioDiTTransformerOutput

    condition = encoder_hidden_states
    raw_timestep = timestep
    dtype = hidden_states.dtype
    encoder_hidden_states = encoder_hidden_states.to(dtype)
    timestep = timestep.to(dtype)
    batch_size = hidden_states.shape[0]
    if timestep.ndim == 0:
        timestep = timestep.repeat(batch_size)
    timestep_embed = self.time_embed(timestep)

    text_mask = encoder_attention_mask.bool()
    encoder_hidden_states = self.text_embed(encoder_hidden_states, text_mask)
    if self.text_conv:
        encoder_hidden_states = self.text_conv_layer(encoder_hidden_states)
        encoder_hidden_states = encoder_hidden_states.masked_fill(text_mask.logical_not().unsqueeze(-1), 0.0)

    hidden_states = self.input_embed(hidden_states, attention_mask)
    if self.use_latent_condition and latent_cond is not None:
        latent_cond = self.latent_embed(latent_cond.to(hidden_states.dtype), attention_mask)
        hidden_states = self.latent_cond_embedder(torch.cat([hidden_states, latent_cond], dim=-1))

    residual = hidden_states.clone() if self.config.long_skip else None
    rope = self.rotary_embed(hidden_states, hidden_states.shape[1])
    cond_rope = self.rotary_embed(encoder_hidden_states, encoder_hidden_states.shape[1])

    extra: tuple[torch.Tensor, ...] = ()
    if self.config.adaln_type == "global":
        if self.config.adaln_use_text_cond:
            text_len = text_mask.sum(1).clamp(min=1).to(encoder_hidden_states.dtype)
            text_mean = encoder_hidden_states.sum(1) / text_len.unsqueeze(1)
            norm_cond = timestep_embed + text_mean
        else:
            norm_cond = timestep_embed
        extra = (self.adaln_global_mlp(norm_cond),)
    else:
        norm_cond = timestep_embed

    def call(block: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        return block(h, timestep_embed, e, attention_mask, text_mask, rope, cond_rope, *extra)

    stack = _diffusers.block_stack(_diffusers.BlockList(self.blocks, call, "h"))

    def postprocess(h: torch.Tensor, e: torch.Tensor | None) -> Any:
        if residual is not None:
            h = h + residual
        h = self.norm_out(h, norm_cond)
        h = self.proj_out(h)
        if attention_mask is not None:
            h = h * attention_mask.unsqueeze(-1).to(h.dtype)
        return _diffusers.model_output(h, return_dict, LongCatAudioDiTTransformerOutput)

    return CacheContext(
        modulated_input=norm_cond,
        hidden_states=hidden_states,
        encoder_hidden_states=encoder_hidden_states,
        temb=norm_cond,
        blocks=stack,
        postprocess=postprocess,
        extra_states={"timestep_embed": timestep_embed, "rope": rope, "cond_rope": cond_rope},
        timestep=raw_timestep,
        condition=condition,
    )
