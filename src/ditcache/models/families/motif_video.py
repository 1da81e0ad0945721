"""Extractor for diffusers ``MotifVideoTransformer3DModel`` (Motif-Video).

Mirrors ``MotifVideoTransformer3DModel.forward`` of diffusers 0.42: RoPE, the timestep embedding, the patch and
text embeddings, the optional image tokens prepended to the text (and to its mask), the joint attention mask,
then the double-stream blocks and the single-stream blocks (both return ``(hidden_states,
encoder_hidden_states)``), then ``norm_out``, ``proj_out`` and unpatchify. diffusers scales the LoRA layers by
hand inside this forward; the extractor's LoRA scope does the same around the whole cached forward.

A configuration with decoder layers (``num_decoder_layers > 0``) is refused when a cache is applied: the decoder
blocks restart from the embedded latents with the encoder's *video* output as their second stream, so the second
stream changes length inside the block loop and no residual over a block range that crosses that point exists.

Modulated input (TeaCache's indicator): ``transformer_blocks[0].norm1(hidden_states, emb=temb)[0]``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ditcache.core.context import CacheContext
from ditcache.models import _diffusers
from ditcache.presets.rules import none_published


def _refuse(model: Any) -> str | None:
    if model.num_decoder_layers > 0:
        return (
            f"num_decoder_layers={model.num_decoder_layers}: the decoder blocks take the encoder's video output as "
            "their second stream, which changes length inside the block loop, so no cache can take a residual "
            "across it; only num_decoder_layers=0 is supported"
        )
    return None


@_diffusers.diffusers_extractor(
    "MotifVideoTransformer3DModel",
    name="motif-video",
    blocks=("transformer_blocks", "single_transformer_blocks"),
    teacache=none_published("no TeaCache coefficients are published for Motif-Video"),
    magcache=none_published("no MagCache ratios are published for Motif-Video"),
    refuse=_refuse,
)
def extract(
    self: Any,
    hidden_states: torch.Tensor,
    timestep: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    encoder_attention_mask: torch.Tensor | None = None,
    image_embeds: torch.Tensor | None = None,
    attention_kwargs: dict[str, Any] | None = None,
    return_dict: bool = True,
) -> CacheContext:
    condition = encoder_hidden_states
    raw_timestep = timestep
    grid = _diffusers.hunyuan_grid(self, hidden_states)

    image_rotary_emb = self.rope(hidden_states)
    temb = self.time_text_embed(timestep)
    hidden_states = self.x_embedder(hidden_states)
    encoder_hidden_states = self.context_embedder(encoder_hidden_states)

    if image_embeds is not None:
        image_embeds = self.image_embedder(image_embeds)
        encoder_hidden_states = torch.cat([image_embeds, encoder_hidden_states], dim=1)
        if encoder_attention_mask is not None:
            image_mask = torch.ones(
                image_embeds.shape[0],
                image_embeds.shape[1],
                device=encoder_attention_mask.device,
                dtype=encoder_attention_mask.dtype,
            )
            encoder_attention_mask = torch.cat([image_mask, encoder_attention_mask], dim=1)
    image_embed_seq_len = image_embeds.shape[1] if image_embeds is not None else 0

    attention_mask = None
    if encoder_attention_mask is not None:  # (B, 1, 1, video + text), the video always attended
        attention_mask = F.pad(encoder_attention_mask.to(torch.bool), (hidden_states.shape[1], 0), value=True)
        attention_mask = attention_mask.unsqueeze(1).unsqueeze(1)

    def call(block: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        return _diffusers.call_block(self, block, h, e, temb, attention_mask, image_rotary_emb, image_embed_seq_len)

    singles = self.single_transformer_blocks
    stack = _diffusers.block_stack(
        _diffusers.BlockList(self.transformer_blocks, call, "he"), _diffusers.BlockList(singles, call, "he")
    )
    norm = self.transformer_blocks[0].norm1 if len(self.transformer_blocks) else singles[0].norm

    def postprocess(h: torch.Tensor, e: torch.Tensor | None) -> Any:
        return _diffusers.hunyuan_output(self, temb, h, grid, return_dict)

    return CacheContext(
        modulated_input=_diffusers.adaln_input(norm, hidden_states, temb),
        hidden_states=hidden_states,
        encoder_hidden_states=encoder_hidden_states,
        temb=temb,
        blocks=stack,
        postprocess=postprocess,
        extra_states={"image_rotary_emb": image_rotary_emb, "attention_mask": attention_mask},
        timestep=raw_timestep,
        condition=condition,
    )
