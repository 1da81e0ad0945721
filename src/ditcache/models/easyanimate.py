"""Extractor for diffusers ``EasyAnimateTransformer3DModel`` (EasyAnimate v5 / v5.1).

Mirrors ``EasyAnimateTransformer3DModel.forward`` of diffusers 0.42: the timestep embedding, 3-D RoPE, the
inpaint and control latents concatenated on the channel axis, the per-frame patch embedding, the text projection
(plus the T5 text appended when given), then the MMDiT blocks (returning ``(hidden_states,
encoder_hidden_states)``), then ``norm_final``, ``norm_out``, ``proj_out`` and unpatchify (to the *input* channel
count, as diffusers does). The model has no LoRA-scale argument.

Modulated input (TeaCache's indicator): the first block's AdaLN-Zero output
``transformer_blocks[0].norm1(hidden_states, encoder_hidden_states, temb)[0]``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ditcache.core.context import CacheContext
from ditcache.models import _diffusers
from ditcache.presets.rules import none_published


@_diffusers.diffusers_extractor(
    "EasyAnimateTransformer3DModel",
    name="easyanimate",
    blocks=("transformer_blocks",),
    attention_kwargs=None,
    teacache=none_published("no TeaCache coefficients are published for EasyAnimate"),
    magcache=none_published("no MagCache ratios are published for EasyAnimate"),
)
def extract(
    self: Any,
    hidden_states: torch.Tensor,
    timestep: torch.Tensor,
    timestep_cond: torch.Tensor | None = None,
    encoder_hidden_states: torch.Tensor | None = None,
    encoder_hidden_states_t5: torch.Tensor | None = None,
    inpaint_latents: torch.Tensor | None = None,
    control_latents: torch.Tensor | None = None,
    return_dict: bool = True,
) -> CacheContext:
    condition = encoder_hidden_states
    raw_timestep = timestep
    batch_size, channels, video_length, height, width = hidden_states.size()
    p = self.config.patch_size
    post_patch_height = height // p
    post_patch_width = width // p

    temb = self.time_proj(timestep).to(dtype=hidden_states.dtype)
    temb = self.time_embedding(temb, timestep_cond)
    image_rotary_emb = self.rope_embedding(hidden_states)

    if inpaint_latents is not None:
        hidden_states = torch.concat([hidden_states, inpaint_latents], 1)
    if control_latents is not None:
        hidden_states = torch.concat([hidden_states, control_latents], 1)

    hidden_states = hidden_states.permute(0, 2, 1, 3, 4).flatten(0, 1)  # [B, C, F, H, W] -> [BF, C, H, W]
    hidden_states = self.proj(hidden_states)
    hidden_states = hidden_states.unflatten(0, (batch_size, -1))  # type: ignore[no-untyped-call]
    hidden_states = hidden_states.permute(0, 2, 1, 3, 4)  # [BF, C, H, W] -> [B, F, C, H, W]
    hidden_states = hidden_states.flatten(2, 4).transpose(1, 2)  # [B, F, C, H, W] -> [B, FHW, C]

    encoder_hidden_states = self.text_proj(encoder_hidden_states)
    if encoder_hidden_states_t5 is not None:
        encoder_hidden_states_t5 = self.text_proj_t5(encoder_hidden_states_t5)
        encoder_hidden_states = torch.cat([encoder_hidden_states, encoder_hidden_states_t5], dim=1).contiguous()

    def call(block: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        return _diffusers.call_block(self, block, h, e, temb, image_rotary_emb)

    stack = _diffusers.block_stack(_diffusers.BlockList(self.transformer_blocks, call, "he"))
    first = self.transformer_blocks[0]
    h0, e0 = hidden_states, encoder_hidden_states

    def modulated_input() -> torch.Tensor:
        return first.norm1(h0, e0, temb)[0]  # type: ignore[no-any-return]

    def postprocess(h: torch.Tensor, e: torch.Tensor | None) -> Any:
        h = self.norm_final(h)
        h = self.norm_out(h, temb=temb)
        h = self.proj_out(h)
        output = h.reshape(batch_size, video_length, post_patch_height, post_patch_width, channels, p, p)
        output = output.permute(0, 4, 1, 2, 5, 3, 6).flatten(5, 6).flatten(3, 4)
        return _diffusers.model_output(output, return_dict)

    return CacheContext(
        modulated_input=modulated_input,
        hidden_states=hidden_states,
        encoder_hidden_states=encoder_hidden_states,
        temb=temb,
        blocks=stack,
        postprocess=postprocess,
        extra_states={"image_rotary_emb": image_rotary_emb},
        timestep=raw_timestep,
        condition=condition,
    )
