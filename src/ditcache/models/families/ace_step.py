"""Extractor for diffusers ``AceStepTransformer1DModel`` (ACE-Step music generation).

Mirrors ``AceStepTransformer1DModel.forward`` of diffusers 0.42: the ``t`` and ``t - r`` timestep embeddings
summed, the context latents concatenated on the channel axis, the sequence padded to the patch size and embedded
by ``proj_in_conv``, the condition embedder, RoPE, the sliding-window mask (built unless the attention backend is
flash attention), then the layers (each gets the sliding-window mask or none, by its ``layer_types`` entry; the
condition is cross-attention K/V: each layer returns the audio tokens only and the stack hands the *same*
condition tensor back), then the output modulation, ``proj_out_conv`` and the padding cut off.

Modulated input (TeaCache's indicator): the first layer's self-attention input
``self_attn_norm(h) * (1 + scale_msa) + shift_msa`` from its ``scale_shift_table`` plus ``timestep_proj``.
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
    "AceStepTransformer1DModel",
    name="ace-step",
    blocks=("layers",),
    teacache=none_published("no TeaCache coefficients are published for ACE-Step"),
    magcache=none_published("no MagCache ratios are published for ACE-Step"),
)
def extract(
    self: Any,
    hidden_states: torch.Tensor,
    timestep: torch.Tensor,
    timestep_r: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    context_latents: torch.Tensor,
    attention_kwargs: dict[str, Any] | None = None,
    return_dict: bool = True,
) -> CacheContext:
    from diffusers.models.transformers import ace_step_transformer as ace

    condition = encoder_hidden_states
    raw_timestep = timestep
    temb_t, timestep_proj_t = self.time_embed(timestep)
    temb_r, timestep_proj_r = self.time_embed_r(timestep - timestep_r)
    temb = temb_t + temb_r
    timestep_proj = timestep_proj_t + timestep_proj_r

    hidden_states = torch.cat([context_latents, hidden_states], dim=-1)
    original_seq_len = hidden_states.shape[1]
    if hidden_states.shape[1] % self.patch_size != 0:
        pad_length = self.patch_size - (hidden_states.shape[1] % self.patch_size)
        hidden_states = F.pad(hidden_states, (0, 0, 0, pad_length), mode="constant", value=0)
    hidden_states = self.proj_in_conv(hidden_states.transpose(1, 2)).transpose(1, 2)
    encoder_hidden_states = self.condition_embedder(encoder_hidden_states)

    seq_len = hidden_states.shape[1]
    cos, sin = ace._ace_step_rotary_freqs(
        seq_len, self.head_dim, self.rope_theta, hidden_states.device, hidden_states.dtype
    )
    position_embeddings = (cos, sin)
    sliding_attn_mask = None
    if not ace._is_flash_attention_backend(self.layers[0].self_attn.processor):
        sliding_attn_mask = ace._create_4d_mask(
            seq_len=seq_len,
            dtype=hidden_states.dtype,
            device=hidden_states.device,
            sliding_window=self.config.sliding_window,
            is_sliding_window=True,
            is_causal=False,
        )
    # each layer's mask, by its type
    masks = {
        id(layer): sliding_attn_mask if kind == "sliding_attention" else None
        for layer, kind in zip(self.layers, self.layer_types)
    }

    def call(layer: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        return _diffusers.call_block(self, layer, h, position_embeddings, timestep_proj, masks[id(layer)], e, None)

    stack = _diffusers.block_stack(_diffusers.BlockList(self.layers, call, "h"))
    first = self.layers[0]
    h0 = hidden_states

    def modulated_input() -> torch.Tensor:
        shift_msa, scale_msa = (first.scale_shift_table + timestep_proj).chunk(6, dim=1)[:2]
        return (first.self_attn_norm(h0) * (1 + scale_msa) + shift_msa).type_as(h0)  # type: ignore[no-any-return]

    def postprocess(h: torch.Tensor, e: torch.Tensor | None) -> Any:
        shift, scale = (self.scale_shift_table + temb.unsqueeze(1)).chunk(2, dim=1)
        h = (self.norm_out(h) * (1 + scale) + shift).type_as(h)
        h = self.proj_out_conv(h.transpose(1, 2)).transpose(1, 2)
        return _diffusers.model_output(h[:, :original_seq_len, :], return_dict)

    return CacheContext(
        modulated_input=modulated_input,
        hidden_states=hidden_states,
        encoder_hidden_states=encoder_hidden_states,
        temb=temb,
        blocks=stack,
        postprocess=postprocess,
        extra_states={"timestep_proj": timestep_proj, "position_embeddings": position_embeddings},
        timestep=raw_timestep,
        condition=condition,
    )
