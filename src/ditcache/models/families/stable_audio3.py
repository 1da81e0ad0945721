"""Extractor for diffusers ``StableAudio3DiTModel`` (Stable Audio 3).

Mirrors ``StableAudio3DiTModel.forward`` of diffusers 0.42: padded prompt tokens replaced by the learned padding
embedding (the mask is then dropped, as in diffusers), the context and timestep/global embeddings and the global
modulation, the residual pre-convolution, the optional patching, ``proj_in``, the local (inpainting) condition,
the learned memory tokens prepended (they are part of the carried stream, so a cached residual covers them too),
RoPE, then the blocks (the prompt is cross-attention context: each block returns the audio stream only and the
stack hands the *same* context tensor back), then the memory tokens dropped, ``proj_out``, the un-patching and the
residual post-convolution. The model has no LoRA-scale argument.

Modulated input (TeaCache's indicator): the global modulation vector (timestep and global condition), a
timestep-embedding indicator as TeaCache4Wan2.1 uses.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ditcache.core.context import CacheContext
from ditcache.models import _diffusers
from ditcache.presets.rules import none_published


@_diffusers.diffusers_extractor(
    "StableAudio3DiTModel",
    name="stable-audio3",
    blocks=("transformer_blocks",),
    attention_kwargs=None,
    teacache=none_published("no TeaCache coefficients are published for Stable Audio 3"),
    magcache=none_published("no MagCache ratios are published for Stable Audio 3"),
)
def extract(
    self: Any,
    hidden_states: torch.Tensor,
    timestep: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    global_hidden_states: torch.Tensor,
    encoder_attention_mask: torch.Tensor | None = None,
    local_add_cond: torch.Tensor | None = None,
    return_dict: bool = True,
) -> CacheContext:
    from diffusers.models.transformers.transformer_stable_audio3 import StableAudio3DiTModelOutput

    condition = encoder_hidden_states
    raw_timestep = timestep
    batch_size = hidden_states.shape[0]
    patch_size = self.config.patch_size
    num_memory_tokens = self.config.num_memory_tokens

    if encoder_attention_mask is not None:  # padded tokens become the learned padding embedding; no mask after
        mask = encoder_attention_mask.bool().unsqueeze(-1)
        pad = self.prompt_padding_embedding.to(encoder_hidden_states.dtype).view(1, 1, -1)
        encoder_hidden_states = torch.where(mask, encoder_hidden_states, pad)
        encoder_attention_mask = None

    context = self.to_cond_embed(encoder_hidden_states)
    timestep_embed = self.to_timestep_embed(self.timestep_features(timestep.float()[:, None]).to(hidden_states.dtype))
    global_embed = self.to_global_embed(global_hidden_states) + timestep_embed
    global_modulation = self.global_cond_embedder(global_embed)  # (batch, 6 * embed_dim)

    hidden_states = self.preprocess_conv(hidden_states) + hidden_states
    x = hidden_states.transpose(1, 2)  # (batch, T, io_channels)
    if patch_size > 1:
        b, t, c = x.shape
        x = x.reshape(b, t // patch_size, c * patch_size)
    x = self.proj_in(x)

    local_seq = None
    if local_add_cond is not None:
        if patch_size > 1:
            raise ValueError(
                f"`local_add_cond` is not supported with `patch_size > 1` "
                f"(got patch_size={patch_size}). Use patch_size=1 for inpainting."
            )
        local_seq = local_add_cond.transpose(1, 2)

    if num_memory_tokens > 0:
        memory = self.memory_tokens.unsqueeze(0).expand(batch_size, -1, -1)
        x = torch.cat([memory, x], dim=1)
    rope = self.rotary_pos_emb(x.shape[1], x.device)

    def call(block: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        return _diffusers.call_block(
            self, block, h, e, global_modulation, rope, encoder_attention_mask, local_seq, num_memory_tokens
        )

    stack = _diffusers.block_stack(_diffusers.BlockList(self.transformer_blocks, call, "h"))

    def postprocess(h: torch.Tensor, e: torch.Tensor | None) -> Any:
        if num_memory_tokens > 0:
            h = h[:, num_memory_tokens:]
        h = self.proj_out(h)
        if patch_size > 1:
            b, t_p, cp = h.shape
            h = h.reshape(b, t_p * patch_size, cp // patch_size)
        output = h.transpose(1, 2)
        output = self.postprocess_conv(output) + output
        return _diffusers.model_output(output, return_dict, StableAudio3DiTModelOutput)

    return CacheContext(
        modulated_input=global_modulation,
        hidden_states=x,
        encoder_hidden_states=context,
        temb=global_modulation,
        blocks=stack,
        postprocess=postprocess,
        extra_states={"rope": rope},
        timestep=raw_timestep,
        condition=condition,
    )
