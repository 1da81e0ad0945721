"""Extractor for diffusers ``CosmosTransformer3DModel`` (Cosmos-1.0 Diffusion, Cosmos-Predict2/2.5, Transfer).

Mirrors ``CosmosTransformer3DModel.forward`` of diffusers 0.42: the condition and padding masks concatenated to
the latents (the padding mask resized with torchvision, as diffusers does), RoPE and the learnable position
embedding, patch embedding, the (per-frame) timestep embedding, the text (and image) context projections, then
the blocks (video tokens; the context is K/V, also when it is a ``(text, image)`` pair, so the context carries no
text stream), each given its ControlNet residual from the block-index map, ``norm_out``, ``proj_out`` and
unpatchify. The forward has no LoRA scale.

Modulated input (TeaCache's indicator): the first block's ``norm1(h, embedded_timestep, temb)[0]`` (TeaCache4Cosmos);
the learnable position embedding is added first, as the block does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ditcache.core.context import CacheContext
from ditcache.models import _diffusers
from ditcache.presets.rules import fixed, none_published


@_diffusers.diffusers_extractor(
    "CosmosTransformer3DModel",
    name="cosmos",
    blocks=("transformer_blocks",),
    attention_kwargs=None,
    teacache=fixed(
        "cosmos-1.0-7b",
        {"num_layers": 28, "num_attention_heads": 32, "attention_head_dim": 128},
        "published for Cosmos-1.0-Diffusion-7B; other Cosmos generations share the class",
    ),
    magcache=none_published("no MagCache curve is published for Cosmos"),
)
def extract(
    self: Any,
    hidden_states: torch.Tensor,
    timestep: torch.Tensor,
    encoder_hidden_states: Any,
    block_controlnet_hidden_states: Sequence[torch.Tensor] | None = None,
    attention_mask: torch.Tensor | None = None,
    fps: int | None = None,
    condition_mask: torch.Tensor | None = None,
    padding_mask: torch.Tensor | None = None,
    return_dict: bool = True,
) -> CacheContext:
    condition = encoder_hidden_states[0] if isinstance(encoder_hidden_states, tuple) else encoder_hidden_states
    raw_timestep = timestep
    batch_size, _, num_frames, height, width = hidden_states.shape
    if condition_mask is not None:
        hidden_states = torch.cat([hidden_states, condition_mask], dim=1)
    if self.config.concat_padding_mask:
        from diffusers.models.transformers import transformer_cosmos

        transforms = transformer_cosmos.transforms
        resized = transforms.functional.resize(
            padding_mask, list(hidden_states.shape[-2:]), interpolation=transforms.InterpolationMode.NEAREST
        )
        hidden_states = torch.cat([hidden_states, resized.unsqueeze(2).repeat(batch_size, 1, num_frames, 1, 1)], dim=1)
    if attention_mask is not None:
        attention_mask = attention_mask.unsqueeze(1).unsqueeze(1)
    mask = attention_mask

    image_rotary_emb = self.rope(hidden_states, fps=fps)
    extra_pos_emb = self.learnable_pos_embed(hidden_states) if self.config.extra_pos_embed_type else None
    p_t, p_h, p_w = self.config.patch_size
    post_f, post_h, post_w = num_frames // p_t, height // p_h, width // p_w
    hidden_states = self.patch_embed(hidden_states).flatten(1, 3)

    if timestep.ndim == 1:
        temb, embedded_timestep = self.time_embed(hidden_states, timestep)
    elif timestep.ndim == 5:
        if timestep.shape != (batch_size, 1, num_frames, 1, 1):
            raise ValueError(f"Expected timestep to have shape [B, 1, T, 1, 1], but got {timestep.shape}")
        temb, embedded_timestep = self.time_embed(hidden_states, timestep.flatten())
        temb, embedded_timestep = (
            x.view(batch_size, post_f, 1, 1, -1).expand(-1, -1, post_h, post_w, -1).flatten(1, 3)
            for x in (temb, embedded_timestep)
        )
    else:
        raise ValueError(f"Expected timestep to have shape [B, 1, T, 1, 1] or [T], but got {timestep.shape}")

    text_context, img_context = (
        encoder_hidden_states if isinstance(encoder_hidden_states, tuple) else (encoder_hidden_states, None)
    )
    if self.config.use_crossattn_projection:
        text_context = self.crossattn_proj(text_context)
    if img_context is not None and self.config.img_context_dim_in:
        img_context = self.img_context_proj(img_context)
    context = (text_context, img_context) if isinstance(encoder_hidden_states, tuple) else text_context

    residuals: dict[int, torch.Tensor] = {}
    if block_controlnet_hidden_states is not None:
        every = self.config.controlnet_block_every_n
        residuals = {
            block: block_controlnet_hidden_states[i]
            for i, block in enumerate(range(0, len(self.transformer_blocks), every))
        }
    index_of = {id(block): i for i, block in enumerate(self.transformer_blocks)}

    def call(block: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        residual = residuals.get(index_of[id(block)])
        return _diffusers.call_block(
            self, block, h, context, embedded_timestep, temb, image_rotary_emb, extra_pos_emb, mask, residual
        )

    def postprocess(h: torch.Tensor, e: torch.Tensor | None) -> Any:
        h = self.proj_out(self.norm_out(h, embedded_timestep, temb))
        h = h.unflatten(2, (p_h, p_w, p_t, -1)).unflatten(1, (post_f, post_h, post_w))  # type: ignore[no-untyped-call]
        h = h.permute(0, 7, 1, 6, 2, 4, 3, 5)
        return _diffusers.model_output(h.flatten(6, 7).flatten(4, 5).flatten(2, 3), return_dict)

    def modulated_input() -> torch.Tensor:
        x = hidden_states if extra_pos_emb is None else hidden_states + extra_pos_emb
        return self.transformer_blocks[0].norm1(x, embedded_timestep, temb)[0]  # type: ignore[no-any-return]

    return CacheContext(
        modulated_input=modulated_input,
        hidden_states=hidden_states,
        encoder_hidden_states=None,
        temb=temb,
        blocks=_diffusers.block_stack(_diffusers.BlockList(self.transformer_blocks, call, "h")),
        postprocess=postprocess,
        extra_states={"embedded_timestep": embedded_timestep, "rotary_emb": image_rotary_emb},
        timestep=raw_timestep,
        condition=condition,
    )
