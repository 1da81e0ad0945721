"""Extractor for diffusers ``NucleusMoEImageTransformer2DModel`` (Nucleus-MoE-Image).

Mirrors ``NucleusMoEImageTransformer2DModel.forward`` of diffusers 0.42: ``img_in``, the text norm and the text-mask
normalisation, the timestep embedding, RoPE, the joint attention mask passed in the blocks' attention kwargs, then
the (MoE) blocks (image tokens; text as K/V), ``norm_out`` and ``proj_out``. The forward scales LoRA layers itself
(without the decorator); the declaration's LoRA scope does the same around the cached forward.

Modulated input (TeaCache's indicator): the timestep embedding ``temb``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ditcache.core.context import CacheContext
from ditcache.models import _diffusers
from ditcache.presets.rules import none_published


@_diffusers.diffusers_extractor(
    "NucleusMoEImageTransformer2DModel",
    name="nucleus-moe",
    blocks=("transformer_blocks",),
    teacache=none_published("no TeaCache set is published for Nucleus-MoE-Image"),
    magcache=none_published("no MagCache curve is published for Nucleus-MoE-Image"),
)
def extract(
    self: Any,
    hidden_states: torch.Tensor,
    img_shapes: Any,
    encoder_hidden_states: torch.Tensor,
    encoder_hidden_states_mask: torch.Tensor | None = None,
    timestep: torch.Tensor | None = None,
    attention_kwargs: dict[str, Any] | None = None,
    return_dict: bool = True,
) -> CacheContext:
    from diffusers.models.transformers.transformer_nucleusmoe_image import _compute_text_seq_len_from_mask

    if timestep is None:
        raise ValueError("NucleusMoEImageTransformer2DModel call: timestep is required")
    condition, raw_timestep = encoder_hidden_states, timestep
    hidden_states = self.img_in(hidden_states)
    timestep = timestep.to(hidden_states.dtype)
    encoder_hidden_states = self.txt_norm(encoder_hidden_states)
    text_seq_len, _, mask = _compute_text_seq_len_from_mask(encoder_hidden_states, encoder_hidden_states_mask)
    temb = self.time_text_embed(timestep, hidden_states)
    image_rotary_emb = self.pos_embed(img_shapes, max_txt_seq_len=text_seq_len, device=hidden_states.device)
    block_kwargs = attention_kwargs.copy() if attention_kwargs is not None else {}
    if mask is not None:
        batch_size, image_seq_len = hidden_states.shape[:2]
        image_mask = torch.ones((batch_size, image_seq_len), dtype=torch.bool, device=hidden_states.device)
        block_kwargs["attention_mask"] = torch.cat([image_mask, mask], dim=1)

    def call(block: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        return _diffusers.call_block(self, block, h, e, temb, image_rotary_emb, block_kwargs)

    return CacheContext(
        modulated_input=temb,
        hidden_states=hidden_states,
        encoder_hidden_states=encoder_hidden_states,
        temb=temb,
        blocks=_diffusers.block_stack(_diffusers.BlockList(self.transformer_blocks, call, "h")),
        postprocess=lambda h, e: _diffusers.model_output(self.proj_out(self.norm_out(h, temb)), return_dict),
        extra_states={"rotary_emb": image_rotary_emb},
        timestep=raw_timestep,
        condition=condition,
    )
