"""Extractors for diffusers ``CogView4Transformer2DModel`` (CogView4-6B, CogView4-Control) and
``CogView3PlusTransformer2DModel`` (CogView3-Plus-3B).

Both mirror their diffusers 0.42 forward: patch embedding of image and text, the timestep + size/crop condition
embedding (CogView4 applies SiLU), the dual-stream blocks (return ``(h, e)``), ``norm_out``, ``proj_out`` and
unpatchify. CogView4 adds RoPE (or the caller's per-sample rotary embeddings) and text masks; CogView3-Plus has no
LoRA scale.

Modulated input (TeaCache's indicator): ``transformer_blocks[0].norm1(h, e, temb)[0]``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ditcache.core.context import CacheContext
from ditcache.models import _diffusers
from ditcache.presets.rules import none_published


def _context(
    self: Any, h: torch.Tensor, e: torch.Tensor, temb: torch.Tensor, call: Any, post: Any, **kw: Any
) -> CacheContext:
    def modulated_input() -> torch.Tensor:
        return self.transformer_blocks[0].norm1(h, e, temb)[0]  # type: ignore[no-any-return]

    return CacheContext(
        modulated_input=modulated_input,
        hidden_states=h,
        encoder_hidden_states=e,
        temb=temb,
        blocks=_diffusers.block_stack(_diffusers.BlockList(self.transformer_blocks, call, "he")),
        postprocess=post,
        **kw,
    )


@_diffusers.diffusers_extractor(
    "CogView4Transformer2DModel",
    name="cogview4",
    blocks=("transformer_blocks",),
    teacache=none_published("no TeaCache set is published for CogView4"),
    magcache=none_published("no MagCache curve is published for CogView4"),
)
def extract_cogview4(
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
    condition, raw_timestep = encoder_hidden_states, timestep
    batch_size, _, height, width = hidden_states.shape
    rope = self.rope(hidden_states) if image_rotary_emb is None else image_rotary_emb
    p = self.config.patch_size
    post_h, post_w = height // p, width // p
    hidden_states, encoder_hidden_states = self.patch_embed(hidden_states, encoder_hidden_states)
    temb = F.silu(self.time_condition_embed(timestep, original_size, target_size, crop_coords, hidden_states.dtype))

    def call(block: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        return _diffusers.call_block(self, block, h, e, temb, rope, attention_mask, attention_kwargs)

    def postprocess(h: torch.Tensor, e: torch.Tensor | None) -> Any:
        h = self.proj_out(self.norm_out(h, temb)).reshape(batch_size, post_h, post_w, -1, p, p)
        return _diffusers.model_output(h.permute(0, 3, 1, 4, 2, 5).flatten(4, 5).flatten(2, 3), return_dict)

    return _context(
        self, hidden_states, encoder_hidden_states, temb, call, postprocess, timestep=raw_timestep, condition=condition
    )


@_diffusers.diffusers_extractor(
    "CogView3PlusTransformer2DModel",
    name="cogview3plus",
    blocks=("transformer_blocks",),
    attention_kwargs=None,
    teacache=none_published("no TeaCache set is published for CogView3-Plus"),
    magcache=none_published("no MagCache curve is published for CogView3-Plus"),
)
def extract_cogview3plus(
    self: Any,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    timestep: torch.Tensor,
    original_size: torch.Tensor,
    target_size: torch.Tensor,
    crop_coords: torch.Tensor,
    return_dict: bool = True,
) -> CacheContext:
    condition, raw_timestep = encoder_hidden_states, timestep
    height, width = hidden_states.shape[-2:]
    text_len = encoder_hidden_states.shape[1]
    hidden_states = self.patch_embed(hidden_states, encoder_hidden_states)
    emb = self.time_condition_embed(timestep, original_size, target_size, crop_coords, hidden_states.dtype)
    encoder_hidden_states, hidden_states = hidden_states[:, :text_len], hidden_states[:, text_len:]

    def call(block: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        return _diffusers.call_block(self, block, h, e, emb)

    def postprocess(h: torch.Tensor, e: torch.Tensor | None) -> Any:
        h = self.proj_out(self.norm_out(h, emb))
        p = self.config.patch_size
        hh, ww = height // p, width // p
        h = torch.einsum("nhwcpq->nchpwq", h.reshape(shape=(h.shape[0], hh, ww, self.out_channels, p, p)))
        return _diffusers.model_output(h.reshape(shape=(h.shape[0], self.out_channels, hh * p, ww * p)), return_dict)

    return _context(
        self, hidden_states, encoder_hidden_states, emb, call, postprocess, timestep=raw_timestep, condition=condition
    )
