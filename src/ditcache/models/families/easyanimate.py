"""Extractor for diffusers ``EasyAnimateTransformer3DModel`` (EasyAnimate v5 / v5.1).

Mirrors ``EasyAnimateTransformer3DModel.forward`` of diffusers 0.42: the timestep embedding, RoPE, the inpaint and
control latents concatenated to the input, per-frame patch projection, the text projections (Qwen and optional
T5), then the dual-stream blocks (return ``(h, e)``), ``norm_final``, ``norm_out``, ``proj_out`` and unpatchify.
The forward has no LoRA scale.

Modulated input (TeaCache's indicator): ``transformer_blocks[0].norm1(h, e, temb)[0]``.
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
    teacache=none_published("no TeaCache set is published for EasyAnimate"),
    magcache=none_published("no MagCache curve is published for EasyAnimate"),
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
    condition, raw_timestep = encoder_hidden_states, timestep
    batch_size, channels, video_length, height, width = hidden_states.size()
    p = self.config.patch_size
    post_h, post_w = height // p, width // p
    temb = self.time_embedding(self.time_proj(timestep).to(dtype=hidden_states.dtype), timestep_cond)
    image_rotary_emb = self.rope_embedding(hidden_states)
    if inpaint_latents is not None:
        hidden_states = torch.concat([hidden_states, inpaint_latents], 1)
    if control_latents is not None:
        hidden_states = torch.concat([hidden_states, control_latents], 1)
    hidden_states = self.proj(hidden_states.permute(0, 2, 1, 3, 4).flatten(0, 1))
    hidden_states = hidden_states.unflatten(0, (batch_size, -1)).permute(0, 2, 1, 3, 4)  # type: ignore[no-untyped-call]
    hidden_states = hidden_states.flatten(2, 4).transpose(1, 2)
    encoder_hidden_states = self.text_proj(encoder_hidden_states)
    if encoder_hidden_states_t5 is not None:
        t5 = self.text_proj_t5(encoder_hidden_states_t5)
        encoder_hidden_states = torch.cat([encoder_hidden_states, t5], dim=1).contiguous()

    def call(block: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        return _diffusers.call_block(self, block, h, e, temb, image_rotary_emb)

    def postprocess(h: torch.Tensor, e: torch.Tensor | None) -> Any:
        h = self.proj_out(self.norm_out(self.norm_final(h), temb=temb))
        out = h.reshape(batch_size, video_length, post_h, post_w, channels, p, p)
        return _diffusers.model_output(out.permute(0, 4, 1, 2, 5, 3, 6).flatten(5, 6).flatten(3, 4), return_dict)

    def modulated_input() -> torch.Tensor:
        return self.transformer_blocks[0].norm1(hidden_states, encoder_hidden_states, temb)[0]  # type: ignore[no-any-return]

    return CacheContext(
        modulated_input=modulated_input,
        hidden_states=hidden_states,
        encoder_hidden_states=encoder_hidden_states,
        temb=temb,
        blocks=_diffusers.block_stack(_diffusers.BlockList(self.transformer_blocks, call, "he")),
        postprocess=postprocess,
        extra_states={"rotary_emb": image_rotary_emb},
        timestep=raw_timestep,
        condition=condition,
    )
