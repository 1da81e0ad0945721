"""Extractor for diffusers ``OvisImageTransformer2DModel`` (Ovis-Image; a FLUX clone).

Mirrors ``OvisImageTransformer2DModel.forward`` of diffusers 0.42: ``x_embedder``, the timestep embedding, the
normed context embedder, RoPE, then the double- and single-stream blocks (both return ``(e, h)``), ``norm_out`` and
``proj_out``.

Modulated input (TeaCache's indicator): ``transformer_blocks[0].norm1(h, emb=temb)[0]``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ditcache.core.context import CacheContext
from ditcache.models import _diffusers
from ditcache.presets.rules import none_published


@_diffusers.diffusers_extractor(
    "OvisImageTransformer2DModel",
    name="ovis-image",
    blocks=("transformer_blocks", "single_transformer_blocks"),
    attention_kwargs="joint_attention_kwargs",
    teacache=none_published("no TeaCache set is published for Ovis-Image"),
    magcache=none_published("no MagCache curve is published for Ovis-Image"),
)
def extract(
    self: Any,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    timestep: torch.Tensor,
    img_ids: torch.Tensor,
    txt_ids: torch.Tensor,
    joint_attention_kwargs: dict[str, Any] | None = None,
    return_dict: bool = True,
) -> CacheContext:
    condition, raw_timestep = encoder_hidden_states, timestep
    hidden_states = self.x_embedder(hidden_states)
    timestep = timestep.to(hidden_states.dtype) * 1000
    temb = self.timestep_embedder(self.time_proj(timestep).to(dtype=hidden_states.dtype))
    encoder_hidden_states = self.context_embedder(self.context_embedder_norm(encoder_hidden_states))
    txt_ids = txt_ids[0] if txt_ids.ndim == 3 else txt_ids
    img_ids = img_ids[0] if img_ids.ndim == 3 else img_ids
    image_rotary_emb = self.pos_embed(torch.cat((txt_ids, img_ids), dim=0))

    def call(block: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        return _diffusers.call_block(self, block, h, e, temb, image_rotary_emb, joint_attention_kwargs)

    double = self.transformer_blocks
    return CacheContext(
        modulated_input=_diffusers.adaln_input(double[0].norm1, hidden_states, temb),
        hidden_states=hidden_states,
        encoder_hidden_states=encoder_hidden_states,
        temb=temb,
        blocks=_diffusers.block_stack(
            _diffusers.BlockList(double, call, "eh"), _diffusers.BlockList(self.single_transformer_blocks, call, "eh")
        ),
        postprocess=lambda h, e: _diffusers.model_output(self.proj_out(self.norm_out(h, temb)), return_dict),
        extra_states={"image_rotary_emb": image_rotary_emb},
        timestep=raw_timestep,
        condition=condition,
    )
