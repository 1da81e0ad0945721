"""Extractor for diffusers ``Ideogram4Transformer2DModel`` (Ideogram 4).

Mirrors ``Ideogram4Transformer2DModel.forward`` of diffusers 0.42: one packed sequence of LLM-feature tokens and
output-image tokens told apart by ``indicator`` (each embedded and masked to its own positions, then summed, plus
the image-indicator embedding), the timestep conditioning ``adaln_input``, multi-axis RoPE over ``position_ids``,
the block-diagonal mask from ``segment_ids``, then the single-stream layers (there is no separate text stream),
then the final layer.

Modulated input (TeaCache's indicator): the first layer's attention input ``attention_norm1(h) * (1 + scale_msa)``
with ``scale_msa`` from its ``adaln_modulation(adaln_input)``.
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
    teacache=none_published("no TeaCache coefficients are published for Ideogram 4"),
    magcache=none_published("no MagCache ratios are published for Ideogram 4"),
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

    condition = encoder_hidden_states
    raw_timestep = timestep
    _batch_size, _seq_len, in_channels = hidden_states.shape
    if in_channels != self.in_channels:
        raise ValueError(f"Expected last dim {self.in_channels}, got {in_channels}.")

    llm_token_mask = (indicator == LLM_TOKEN_INDICATOR).to(hidden_states.dtype).unsqueeze(-1)
    output_image_mask = (indicator == OUTPUT_IMAGE_INDICATOR).to(hidden_states.dtype).unsqueeze(-1)
    encoder_hidden_states = encoder_hidden_states * llm_token_mask
    hidden_states = hidden_states * output_image_mask
    hidden_states = self.input_proj(hidden_states) * output_image_mask

    t_cond = self.t_embedding(timestep)
    if timestep.dim() == 1:  # one timestep per sample: (B, 1, ...)
        t_cond = t_cond.unsqueeze(1)
    adaln_input = F.silu(self.adaln_proj(t_cond))

    encoder_hidden_states = self.llm_cond_norm(encoder_hidden_states)
    encoder_hidden_states = self.llm_cond_proj(encoder_hidden_states) * llm_token_mask
    hidden_states = hidden_states + encoder_hidden_states
    image_indicator_embedding = self.embed_image_indicator((indicator == OUTPUT_IMAGE_INDICATOR).to(torch.long))
    hidden_states = hidden_states + image_indicator_embedding

    cos, sin = self.rotary_emb(position_ids)
    image_rotary_emb = (cos.to(hidden_states.dtype), sin.to(hidden_states.dtype))

    # tokens attend within their segment only
    attention_mask = (segment_ids.unsqueeze(2) == segment_ids.unsqueeze(1)).unsqueeze(1)

    def call(block: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        return _diffusers.call_block(self, block, h, attention_mask, image_rotary_emb, adaln_input)

    stack = _diffusers.block_stack(_diffusers.BlockList(self.layers, call, "h"))
    first = self.layers[0]
    h0 = hidden_states

    def modulated_input() -> torch.Tensor:
        scale_msa = first.adaln_modulation(adaln_input).chunk(4, dim=-1)[0]
        return first.attention_norm1(h0) * (1.0 + scale_msa)  # type: ignore[no-any-return]

    def postprocess(h: torch.Tensor, e: torch.Tensor | None) -> Any:
        return _diffusers.model_output(self.final_layer(h, conditioning=adaln_input), return_dict)

    return CacheContext(
        modulated_input=modulated_input,
        hidden_states=hidden_states,
        encoder_hidden_states=None,
        temb=adaln_input,
        blocks=stack,
        postprocess=postprocess,
        extra_states={"image_rotary_emb": image_rotary_emb, "attention_mask": attention_mask},
        timestep=raw_timestep,
        condition=condition,
    )
