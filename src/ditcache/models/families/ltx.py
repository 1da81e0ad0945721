"""Extractor for diffusers ``LTXVideoTransformer3DModel`` (LTX-Video 0.9.x, 2B / 13B, distilled).

Mirrors ``LTXVideoTransformer3DModel.forward`` of diffusers 0.42: RoPE from the video coordinates, the additive
text mask, ``proj_in``, the (per-token) timestep embedding, the caption projection, then the blocks (video tokens
only; the text is K/V and the stack hands it back unchanged), the output modulation from ``scale_shift_table`` and
``proj_out``.

Modulated input (TeaCache's indicator): ``norm1(h) * (1 + scale_msa) + shift_msa`` of the first block, from its
``scale_shift_table`` plus ``temb`` (TeaCache4LTX-Video).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ditcache.core.context import CacheContext
from ditcache.models import _diffusers
from ditcache.presets.rules import fixed, none_published


@_diffusers.diffusers_extractor(
    "LTXVideoTransformer3DModel",
    name="ltx",
    blocks=("transformer_blocks",),
    teacache=fixed("ltx-video-0.9.1", {"num_layers": 28, "num_attention_heads": 32, "attention_head_dim": 64}),
    magcache=none_published("no MagCache curve is published for LTX-Video"),
)
def extract(
    self: Any,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    timestep: torch.Tensor,
    encoder_attention_mask: torch.Tensor | None,
    num_frames: int | None = None,
    height: int | None = None,
    width: int | None = None,
    rope_interpolation_scale: Any = None,
    video_coords: torch.Tensor | None = None,
    attention_kwargs: dict[str, Any] | None = None,
    return_dict: bool = True,
) -> CacheContext:
    condition, raw_timestep = encoder_hidden_states, timestep
    image_rotary_emb = self.rope(hidden_states, num_frames, height, width, rope_interpolation_scale, video_coords)
    mask = _diffusers.additive_mask(encoder_attention_mask, hidden_states.dtype)

    batch_size = hidden_states.size(0)
    hidden_states = self.proj_in(hidden_states)
    temb, embedded_timestep = self.time_embed(
        timestep.flatten(), batch_size=batch_size, hidden_dtype=hidden_states.dtype
    )
    temb = temb.view(batch_size, -1, temb.size(-1))
    embedded_timestep = embedded_timestep.view(batch_size, -1, embedded_timestep.size(-1))
    encoder_hidden_states = self.caption_projection(encoder_hidden_states)
    encoder_hidden_states = encoder_hidden_states.view(batch_size, -1, hidden_states.size(-1))

    def call(block: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        return _diffusers.call_block(self, block, h, e, temb, image_rotary_emb, mask)

    def postprocess(h: torch.Tensor, e: torch.Tensor | None) -> Any:
        scale_shift_values = self.scale_shift_table[None, None] + embedded_timestep[:, :, None]
        shift, scale = scale_shift_values[:, :, 0], scale_shift_values[:, :, 1]
        h = self.norm_out(h)
        h = h * (1 + scale) + shift
        return _diffusers.model_output(self.proj_out(h), return_dict)

    first = self.transformer_blocks[0]
    return CacheContext(
        modulated_input=_diffusers.scale_shift_input(first.norm1, first.scale_shift_table, hidden_states, temb),
        hidden_states=hidden_states,
        encoder_hidden_states=encoder_hidden_states,
        temb=temb,
        blocks=_diffusers.block_stack(_diffusers.BlockList(self.transformer_blocks, call, "h")),
        postprocess=postprocess,
        extra_states={"rotary_emb": image_rotary_emb, "encoder_attention_mask": mask},
        timestep=raw_timestep,
        condition=condition,
    )
