"""Extractor for diffusers ``Ideogram4Transformer2DModel`` (Ideogram 4).

Mirrors ``Ideogram4Transformer2DModel.forward`` of diffusers 0.42: the LLM-token and output-image masks from the
``indicator``, the input projection, the timestep conditioning (``adaln_input``), the LLM features normed, projected
and added to the one packed sequence, the image-indicator embedding, M-RoPE from the position ids and the
segment mask, then the single-stream layers, and the final layer.

Modulated input (TeaCache's indicator): ``adaln_input``.
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
    "Ideogram4Transformer2DModel",
    name="ideogram4",
    blocks=("layers",),
    teacache=none_published("no TeaCache set is published for Ideogram 4"),
    magcache=none_published("no MagCache curve is published for Ideogram 4"),
)
def extract(
    self: Any,
    hidden_states: torch.Tensor,
    timestep: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    position_ids: torch.Tensor,
    segment_ids: torch.Tensor,
    indicator: torch.Tensor,
    attention_kwargs: dict[str, Any] | None = None,
    return_dict: bool = True,
) -> CacheContext:
    from diffusers.models.transformers.transformer_ideogram4 import LLM_TOKEN_INDICATOR, OUTPUT_IMAGE_INDICATOR

    condition, raw_timestep = encoder_hidden_states, timestep
    in_channels = hidden_states.shape[-1]
    if in_channels != self.in_channels:
        raise ValueError(f"Expected last dim {self.in_channels}, got {in_channels}.")
    llm_mask = (indicator == LLM_TOKEN_INDICATOR).to(hidden_states.dtype).unsqueeze(-1)
    image_mask = (indicator == OUTPUT_IMAGE_INDICATOR).to(hidden_states.dtype).unsqueeze(-1)
    encoder_hidden_states = encoder_hidden_states * llm_mask
    hidden_states = hidden_states * image_mask
    hidden_states = self.input_proj(hidden_states) * image_mask
    t_cond = self.t_embedding(timestep)
    if timestep.dim() == 1:
        t_cond = t_cond.unsqueeze(1)
    adaln_input = F.silu(self.adaln_proj(t_cond))
    encoder_hidden_states = self.llm_cond_proj(self.llm_cond_norm(encoder_hidden_states)) * llm_mask
    hidden_states = hidden_states + encoder_hidden_states
    hidden_states = hidden_states + self.embed_image_indicator((indicator == OUTPUT_IMAGE_INDICATOR).to(torch.long))
    cos, sin = self.rotary_emb(position_ids)
    rope = (cos.to(hidden_states.dtype), sin.to(hidden_states.dtype))
    attention_mask = (segment_ids.unsqueeze(2) == segment_ids.unsqueeze(1)).unsqueeze(1)

    def call(block: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        return _diffusers.call_block(self, block, h, attention_mask, rope, adaln_input)

    return CacheContext(
        modulated_input=adaln_input,
        hidden_states=hidden_states,
        encoder_hidden_states=None,
        temb=adaln_input,
        blocks=_diffusers.block_stack(_diffusers.BlockList(self.layers, call, "h")),
        postprocess=lambda h, e: _diffusers.model_output(self.final_layer(h, conditioning=adaln_input), return_dict),
        extra_states={"rotary_emb": rope, "attention_mask": attention_mask},
        timestep=raw_timestep,
        condition=condition,
    )
