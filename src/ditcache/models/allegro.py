"""Extractor for diffusers ``AllegroTransformer3DModel`` (Allegro, Allegro-TI2V).

Mirrors ``AllegroTransformer3DModel.forward`` of diffusers 0.42: a 4-D video mask turned into an additive bias
(max-pooled to the patch grid), a 2-D text mask turned into a bias, the ``adaln_single`` timestep embedding, the
per-frame patch embedding, the caption projection, then the blocks (text as cross-attention K/V: each block
returns the video tokens only, and the stack hands the *same* text tensor back), then the output modulation,
``proj_out`` and unpatchify. The model has no LoRA-scale argument.

Modulated input (TeaCache's indicator): PixArt-style, ``norm1(h) * (1 + scale_msa) + shift_msa`` of the first
block with ``shift, scale`` from its ``scale_shift_table`` plus the 6-way timestep embedding.
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
    "AllegroTransformer3DModel",
    name="allegro",
    blocks=("transformer_blocks",),
    attention_kwargs=None,
    teacache=none_published("no TeaCache coefficients are published for Allegro"),
    magcache=none_published("no MagCache ratios are published for Allegro"),
)
def extract(
    self: Any,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    timestep: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    encoder_attention_mask: torch.Tensor | None = None,
    image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    return_dict: bool = True,
) -> CacheContext:
    condition = encoder_hidden_states
    raw_timestep = timestep
    batch_size, _num_channels, num_frames, height, width = hidden_states.shape
    p_t = self.config.patch_size_t
    p = self.config.patch_size
    post_patch_num_frames = num_frames // p_t
    post_patch_height = height // p
    post_patch_width = width // p

    # a (batch, frames, height, width) keep-mask becomes an additive bias over the patch grid (keep 0, drop -10000)
    if attention_mask is not None and attention_mask.ndim == 4:
        attention_mask = attention_mask.to(hidden_states.dtype)
        attention_mask = attention_mask[:, :num_frames]
        if attention_mask.numel() > 0:
            attention_mask = attention_mask.unsqueeze(1)
            attention_mask = F.max_pool3d(attention_mask, kernel_size=(p_t, p, p), stride=(p_t, p, p))
            attention_mask = attention_mask.flatten(1).view(batch_size, 1, -1)
        attention_mask = (
            (1 - attention_mask.bool().to(hidden_states.dtype)) * -10000.0 if attention_mask.numel() > 0 else None
        )

    if encoder_attention_mask is not None and encoder_attention_mask.ndim == 2:
        encoder_attention_mask = (1 - encoder_attention_mask.to(self.dtype)) * -10000.0
        encoder_attention_mask = encoder_attention_mask.unsqueeze(1)

    timestep, embedded_timestep = self.adaln_single(timestep, batch_size=batch_size, hidden_dtype=hidden_states.dtype)

    hidden_states = hidden_states.permute(0, 2, 1, 3, 4).flatten(0, 1)
    hidden_states = self.pos_embed(hidden_states)
    hidden_states = hidden_states.unflatten(0, (batch_size, -1)).flatten(1, 2)  # type: ignore[no-untyped-call]

    encoder_hidden_states = self.caption_projection(encoder_hidden_states)
    encoder_hidden_states = encoder_hidden_states.view(batch_size, -1, encoder_hidden_states.shape[-1])

    temb = timestep
    masks = (attention_mask, encoder_attention_mask)

    def call(block: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        return _diffusers.call_block(self, block, h, e, temb, *masks, image_rotary_emb)

    stack = _diffusers.block_stack(_diffusers.BlockList(self.transformer_blocks, call, "h"))
    first = self.transformer_blocks[0]

    def postprocess(h: torch.Tensor, e: torch.Tensor | None) -> Any:
        shift, scale = (self.scale_shift_table[None] + embedded_timestep[:, None]).chunk(2, dim=1)
        h = self.norm_out(h)
        h = h * (1 + scale) + shift
        h = self.proj_out(h)
        h = h.squeeze(1)
        h = h.reshape(batch_size, post_patch_num_frames, post_patch_height, post_patch_width, p_t, p, p, -1)
        h = h.permute(0, 7, 1, 4, 2, 5, 3, 6)
        output = h.reshape(batch_size, -1, num_frames, height, width)
        return _diffusers.model_output(output, return_dict)

    return CacheContext(
        modulated_input=_diffusers.scale_shift_input(first.norm1, first.scale_shift_table, hidden_states, temb),
        hidden_states=hidden_states,
        encoder_hidden_states=encoder_hidden_states,
        temb=temb,
        blocks=stack,
        postprocess=postprocess,
        extra_states={"embedded_timestep": embedded_timestep},
        timestep=raw_timestep,
        condition=condition,
    )
