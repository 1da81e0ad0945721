"""Extractor for diffusers ``AnyFlowTransformer3DModel`` (AnyFlow text/image-to-video, a Wan backbone with flow-map
timesteps).

Mirrors ``AnyFlowTransformer3DModel.forward`` of diffusers 0.42: the ``(batch, frames, channels, H, W)`` latents
moved to channels-first, RoPE over the frame layout, the patch embedding, the dual-timestep (``t`` and ``r``)
condition embedder with text and optional image tokens (prepended to the text), then the Wan-style blocks (text as
cross-attention K/V: each block returns the video tokens only and the stack hands the *same* text tensor back),
then the output modulation, ``proj_out`` and the unpacking of the token sequence.

The chunk-autoregressive sibling ``AnyFlowFARTransformer3DModel`` (per-chunk KV caches) is a different class and
stays refused.

Modulated input (TeaCache's indicator): the per-token timestep embedding ``temb``, as Wan's default indicator;
``extra_states`` also holds ``"timestep_proj"`` (the 6-way projection).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ditcache.core.context import CacheContext
from ditcache.models import _diffusers
from ditcache.presets.rules import none_published


@_diffusers.diffusers_extractor(
    "AnyFlowTransformer3DModel",
    name="anyflow",
    blocks=("blocks",),
    teacache=none_published("no TeaCache coefficients are published for AnyFlow"),
    magcache=none_published("no MagCache ratios are published for AnyFlow"),
)
def extract(
    self: Any,
    hidden_states: torch.Tensor,
    timestep: torch.Tensor,
    r_timestep: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    encoder_hidden_states_image: torch.Tensor | None = None,
    attention_kwargs: dict[str, Any] | None = None,
    return_dict: bool = True,
) -> CacheContext:
    condition = encoder_hidden_states
    raw_timestep = timestep
    hidden_states = hidden_states.permute(0, 2, 1, 3, 4)
    _batch_size, _num_channels, num_frames, height, width = hidden_states.shape
    patch_size = self.config.patch_size

    layout_cfg = {
        "total_frames": num_frames,
        "full_frame_shape": (height // patch_size[1], width // patch_size[2]),
        "full_token_per_frame": (height * width) // (patch_size[1] * patch_size[2]),
    }
    rotary_emb = self.rope(layout_cfg=layout_cfg, device=hidden_states.device)

    hidden_states = self.patch_embedding(hidden_states)
    hidden_states = hidden_states.flatten(2).transpose(1, 2)

    temb, timestep_proj, encoder_hidden_states, encoder_hidden_states_image = self.condition_embedder(
        timestep, r_timestep, encoder_hidden_states, encoder_hidden_states_image, layout_cfg=layout_cfg
    )
    timestep_proj = timestep_proj.unflatten(2, (6, -1))

    if encoder_hidden_states_image is not None:
        encoder_hidden_states = torch.concat([encoder_hidden_states_image, encoder_hidden_states], dim=1)

    def call(block: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        return _diffusers.call_block(self, block, h, e, timestep_proj, rotary_emb, None)

    stack = _diffusers.block_stack(_diffusers.BlockList(self.blocks, call, "h"))

    def postprocess(h: torch.Tensor, e: torch.Tensor | None) -> Any:
        shift, scale = (self.scale_shift_table.unsqueeze(0) + temb.unsqueeze(2)).chunk(2, dim=2)
        shift = shift.squeeze(2).to(h.device)
        scale = scale.squeeze(2).to(h.device)
        h = (self.norm_out(h.float()) * (1 + scale) + shift).type_as(h)
        h = self.proj_out(h)
        output = self._unpack_latent_sequence(
            h, num_frames=num_frames, height=height, width=width, patch_size=patch_size[1]
        )
        return _diffusers.model_output(output, return_dict)

    return CacheContext(
        modulated_input=temb,
        hidden_states=hidden_states,
        encoder_hidden_states=encoder_hidden_states,
        temb=temb,
        blocks=stack,
        postprocess=postprocess,
        extra_states={"temb": temb, "timestep_proj": timestep_proj, "rotary_emb": rotary_emb},
        timestep=raw_timestep,
        condition=condition,
    )
