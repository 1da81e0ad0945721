"""Extractor for diffusers ``CogView3PlusTransformer2DModel`` (CogView3-Plus-3B).

Mirrors ``CogView3PlusTransformer2DModel.forward`` of diffusers 0.42: the joint patch embedding of text and image
(positional embedding included), the timestep/size/crop condition embedding, the split back into the two streams,
then the dual-stream blocks (returning ``(hidden_states, encoder_hidden_states)``), then ``norm_out``, ``proj_out``
and unpatchify.

Modulated input (TeaCache's indicator): the first block's AdaLN-Zero output
``transformer_blocks[0].norm1(hidden_states, encoder_hidden_states, emb)[0]``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ditcache.core.context import CacheContext
from ditcache.models import _diffusers
from ditcache.presets.rules import none_published


@_diffusers.diffusers_extractor(
    "CogView3PlusTransformer2DModel",
    name="cogview3plus",
    blocks=("transformer_blocks",),
    attention_kwargs=None,
    teacache=none_published("no TeaCache coefficients are published for CogView3-Plus"),
    magcache=none_published("no MagCache ratios are published for CogView3-Plus"),
)
def extract(
    self: Any,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    timestep: torch.Tensor,
    original_size: torch.Tensor,
    target_size: torch.Tensor,
    crop_coords: torch.Tensor,
    return_dict: bool = True,
) -> CacheContext:
    condition = encoder_hidden_states
    raw_timestep = timestep
    height, width = hidden_states.shape[-2:]
    text_seq_length = encoder_hidden_states.shape[1]

    hidden_states = self.patch_embed(hidden_states, encoder_hidden_states)  # adds the positional embedding too
    emb = self.time_condition_embed(timestep, original_size, target_size, crop_coords, hidden_states.dtype)

    encoder_hidden_states = hidden_states[:, :text_seq_length]
    hidden_states = hidden_states[:, text_seq_length:]

    def call(block: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        return _diffusers.call_block(self, block, h, e, emb)

    stack = _diffusers.block_stack(_diffusers.BlockList(self.transformer_blocks, call, "he"))
    first = self.transformer_blocks[0]
    h0, e0 = hidden_states, encoder_hidden_states

    def modulated_input() -> torch.Tensor:
        return first.norm1(h0, e0, emb)[0]  # type: ignore[no-any-return]

    def postprocess(h: torch.Tensor, e: torch.Tensor | None) -> Any:
        h = self.norm_out(h, emb)
        h = self.proj_out(h)  # (batch_size, height*width, patch_size*patch_size*out_channels)

        patch_size = self.config.patch_size
        post_height = height // patch_size
        post_width = width // patch_size
        h = h.reshape(shape=(h.shape[0], post_height, post_width, self.out_channels, patch_size, patch_size))
        h = torch.einsum("nhwcpq->nchpwq", h)
        output = h.reshape(shape=(h.shape[0], self.out_channels, post_height * patch_size, post_width * patch_size))
        return _diffusers.model_output(output, return_dict)

    return CacheContext(
        modulated_input=modulated_input,
        hidden_states=hidden_states,
        encoder_hidden_states=encoder_hidden_states,
        temb=emb,
        blocks=stack,
        postprocess=postprocess,
        timestep=raw_timestep,
        condition=condition,
    )
