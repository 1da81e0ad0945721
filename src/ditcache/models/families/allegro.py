"""Extractor for diffusers ``AllegroTransformer3DModel`` (Allegro, Allegro-TI2V).

Mirrors ``AllegroTransformer3DModel.forward`` of diffusers 0.42: the video mask max-pooled to patches and the text
mask made additive, ``adaln_single``, per-frame patch embedding, the caption projection, then the blocks (video
tokens; text as K/V), the output modulation from ``scale_shift_table``, ``proj_out`` and unpatchify. The forward has
no LoRA scale.

Modulated input (TeaCache's indicator): ``norm1(h) * (1 + scale_msa) + shift_msa`` of the first block.
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
    teacache=none_published("no TeaCache set is published for Allegro"),
    magcache=none_published("no MagCache curve is published for Allegro"),
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
    condition, raw_timestep = encoder_hidden_states, timestep
    batch_size, _, num_frames, height, width = hidden_states.shape
    p_t, p = self.config.patch_size_t, self.config.patch_size
    post_f, post_h, post_w = num_frames // p_t, height // p, width // p
    if attention_mask is not None and attention_mask.ndim == 4:
        attention_mask = attention_mask.to(hidden_states.dtype)[:, :num_frames]
        if attention_mask.numel() > 0:
            attention_mask = F.max_pool3d(attention_mask.unsqueeze(1), kernel_size=(p_t, p, p), stride=(p_t, p, p))
            attention_mask = _diffusers.additive_mask(attention_mask.flatten(1).bool(), hidden_states.dtype)
        else:
            attention_mask = None
    encoder_attention_mask = _diffusers.additive_mask(encoder_attention_mask, self.dtype)
    mask, text_mask = attention_mask, encoder_attention_mask

    temb, embedded_timestep = self.adaln_single(timestep, batch_size=batch_size, hidden_dtype=hidden_states.dtype)
    hidden_states = self.pos_embed(hidden_states.permute(0, 2, 1, 3, 4).flatten(0, 1))
    hidden_states = hidden_states.unflatten(0, (batch_size, -1)).flatten(1, 2)  # type: ignore[no-untyped-call]
    encoder_hidden_states = self.caption_projection(encoder_hidden_states)
    encoder_hidden_states = encoder_hidden_states.view(batch_size, -1, encoder_hidden_states.shape[-1])

    def call(block: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        return _diffusers.call_block(self, block, h, e, temb, mask, text_mask, image_rotary_emb)

    def postprocess(h: torch.Tensor, e: torch.Tensor | None) -> Any:
        shift, scale = (self.scale_shift_table[None] + embedded_timestep[:, None]).chunk(2, dim=1)
        h = self.proj_out(self.norm_out(h) * (1 + scale) + shift).squeeze(1)
        h = h.reshape(batch_size, post_f, post_h, post_w, p_t, p, p, -1).permute(0, 7, 1, 4, 2, 5, 3, 6)
        return _diffusers.model_output(h.reshape(batch_size, -1, num_frames, height, width), return_dict)

    first = self.transformer_blocks[0]
    return CacheContext(
        modulated_input=_diffusers.scale_shift_input(first.norm1, first.scale_shift_table, hidden_states, temb),
        hidden_states=hidden_states,
        encoder_hidden_states=encoder_hidden_states,
        temb=temb,
        blocks=_diffusers.block_stack(_diffusers.BlockList(self.transformer_blocks, call, "h")),
        postprocess=postprocess,
        extra_states={"embedded_timestep": embedded_timestep},
        timestep=raw_timestep,
        condition=condition,
    )
