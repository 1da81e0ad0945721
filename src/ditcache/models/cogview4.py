"""Extractor for diffusers ``CogView4Transformer2DModel`` (CogView4-6B, CogView4-Control).

Mirrors ``CogView4Transformer2DModel.forward`` of diffusers 0.42: RoPE (unless the caller passes
``image_rotary_emb``), the patch and text embedding, ``silu`` of the timestep/size/crop condition embedding, then
the dual-stream blocks (returning ``(hidden_states, encoder_hidden_states)``, with the optional text mask), then
``norm_out``, ``proj_out`` and unpatchify.

Modulated input (TeaCache's indicator): the first block's AdaLN-Zero output
``transformer_blocks[0].norm1(hidden_states, encoder_hidden_states, temb)[0]``.
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
    "CogView4Transformer2DModel",
    name="cogview4",
    blocks=("transformer_blocks",),
    teacache=none_published("no TeaCache coefficients are published for CogView4"),
    magcache=none_published("no MagCache ratios are published for CogView4"),
)
def extract(
    self: Any,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    timestep: torch.Tensor,
    original_size: torch.Tensor,
    target_size: torch.Tensor,
    crop_coords: torch.Tensor,
    attention_kwargs: dict[str, Any] | None = None,
    return_dict: bool = True,
    attention_mask: torch.Tensor | None = None,
    image_rotary_emb: Any = None,
) -> CacheContext:
    condition = encoder_hidden_states
    raw_timestep = timestep
    batch_size, _num_channels, height, width = hidden_states.shape

    if image_rotary_emb is None:
        image_rotary_emb = self.rope(hidden_states)

    p = self.config.patch_size
    post_patch_height = height // p
    post_patch_width = width // p

    hidden_states, encoder_hidden_states = self.patch_embed(hidden_states, encoder_hidden_states)

    temb = self.time_condition_embed(timestep, original_size, target_size, crop_coords, hidden_states.dtype)
    temb = F.silu(temb)

    def call(block: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        return _diffusers.call_block(self, block, h, e, temb, image_rotary_emb, attention_mask, attention_kwargs)

    stack = _diffusers.block_stack(_diffusers.BlockList(self.transformer_blocks, call, "he"))
    first = self.transformer_blocks[0]
    h0, e0 = hidden_states, encoder_hidden_states

    def modulated_input() -> torch.Tensor:
        return first.norm1(h0, e0, temb)[0]  # type: ignore[no-any-return]

    def postprocess(h: torch.Tensor, e: torch.Tensor | None) -> Any:
        h = self.norm_out(h, temb)
        h = self.proj_out(h)
        h = h.reshape(batch_size, post_patch_height, post_patch_width, -1, p, p)
        output = h.permute(0, 3, 1, 4, 2, 5).flatten(4, 5).flatten(2, 3)
        return _diffusers.model_output(output, return_dict)

    return CacheContext(
        modulated_input=modulated_input,
        hidden_states=hidden_states,
        encoder_hidden_states=encoder_hidden_states,
        temb=temb,
        blocks=stack,
        postprocess=postprocess,
        extra_states={"image_rotary_emb": image_rotary_emb, "attention_mask": attention_mask},
        timestep=raw_timestep,
        condition=condition,
    )
