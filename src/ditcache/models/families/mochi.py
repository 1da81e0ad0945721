"""Extractor for diffusers ``MochiTransformer3DModel`` (Mochi-1-preview).

Mirrors ``MochiTransformer3DModel.forward`` of diffusers 0.42: the timestep + caption embedding (attention-pooled
text), per-frame patch embedding, RoPE, then the dual-stream blocks (return ``(h, e)``; the last one is
``context_pre_only``), ``norm_out``, ``proj_out`` and unpatchify.

Modulated input (TeaCache's indicator): ``transformer_blocks[0].norm1(h, temb)[0]`` (TeaCache4Mochi).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ditcache.core.context import CacheContext
from ditcache.models import _diffusers
from ditcache.presets.rules import fixed, none_published


@_diffusers.diffusers_extractor(
    "MochiTransformer3DModel",
    name="mochi",
    blocks=("transformer_blocks",),
    teacache=fixed("mochi-1-preview", {"num_layers": 48, "num_attention_heads": 24}),
    magcache=none_published("no MagCache curve is published for Mochi"),
)
def extract(
    self: Any,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    timestep: torch.Tensor,
    encoder_attention_mask: torch.Tensor,
    attention_kwargs: dict[str, Any] | None = None,
    return_dict: bool = True,
) -> CacheContext:
    condition, raw_timestep = encoder_hidden_states, timestep
    batch_size, _, num_frames, height, width = hidden_states.shape
    p = self.config.patch_size
    post_h, post_w = height // p, width // p
    temb, encoder_hidden_states = self.time_embed(
        timestep, encoder_hidden_states, encoder_attention_mask, hidden_dtype=hidden_states.dtype
    )
    hidden_states = self.patch_embed(hidden_states.permute(0, 2, 1, 3, 4).flatten(0, 1))
    hidden_states = hidden_states.unflatten(0, (batch_size, -1)).flatten(1, 2)  # type: ignore[no-untyped-call]
    image_rotary_emb = self.rope(
        self.pos_frequencies, num_frames, post_h, post_w, device=hidden_states.device, dtype=torch.float32
    )

    def call(block: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        return _diffusers.call_block(self, block, h, e, temb, encoder_attention_mask, image_rotary_emb)

    def postprocess(h: torch.Tensor, e: torch.Tensor | None) -> Any:
        h = self.proj_out(self.norm_out(h, temb))
        h = h.reshape(batch_size, num_frames, post_h, post_w, p, p, -1).permute(0, 6, 1, 2, 4, 3, 5)
        return _diffusers.model_output(h.reshape(batch_size, -1, num_frames, height, width), return_dict)

    def modulated_input() -> torch.Tensor:
        return self.transformer_blocks[0].norm1(hidden_states, temb)[0]  # type: ignore[no-any-return]

    return CacheContext(
        modulated_input=modulated_input,
        hidden_states=hidden_states,
        encoder_hidden_states=encoder_hidden_states,
        temb=temb,
        blocks=_diffusers.block_stack(_diffusers.BlockList(self.transformer_blocks, call, "he")),
        postprocess=postprocess,
        extra_states={"rotary_emb": image_rotary_emb, "encoder_attention_mask": encoder_attention_mask},
        timestep=raw_timestep,
        condition=condition,
    )
