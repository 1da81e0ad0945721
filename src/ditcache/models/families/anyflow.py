"""Extractor for diffusers ``AnyFlowTransformer3DModel`` (AnyFlow T2V: a Wan backbone with a flow-map timestep).

Mirrors ``AnyFlowTransformer3DModel.forward`` of diffusers 0.42: frames-first latents permuted to channels-first,
RoPE from the frame layout, patch embedding, the dual-timestep (``t``, ``r``) condition embedder (per-token
projections), optional image tokens prepended to the text, then the blocks (video tokens; text as K/V), the
per-token output modulation, ``proj_out`` and the model's own unpacking. (The chunk-autoregressive
``AnyFlowFARTransformer3DModel`` is refused: see the coverage page.)

Modulated input (TeaCache's indicator): ``temb``; ``extra_states`` has ``"timestep_proj"``.
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
    teacache=none_published("no TeaCache set is published for AnyFlow"),
    magcache=none_published("no MagCache curve is published for AnyFlow"),
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
    condition, raw_timestep = encoder_hidden_states, timestep
    hidden_states = hidden_states.permute(0, 2, 1, 3, 4)
    _, _, num_frames, height, width = hidden_states.shape
    patch = self.config.patch_size
    layout_cfg = {
        "total_frames": num_frames,
        "full_frame_shape": (height // patch[1], width // patch[2]),
        "full_token_per_frame": (height * width) // (patch[1] * patch[2]),
    }
    rotary_emb = self.rope(layout_cfg=layout_cfg, device=hidden_states.device)
    hidden_states = self.patch_embedding(hidden_states).flatten(2).transpose(1, 2)
    temb, timestep_proj, encoder_hidden_states, encoder_hidden_states_image = self.condition_embedder(
        timestep, r_timestep, encoder_hidden_states, encoder_hidden_states_image, layout_cfg=layout_cfg
    )
    timestep_proj = timestep_proj.unflatten(2, (6, -1))
    if encoder_hidden_states_image is not None:
        encoder_hidden_states = torch.concat([encoder_hidden_states_image, encoder_hidden_states], dim=1)

    def call(block: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        return _diffusers.call_block(self, block, h, e, timestep_proj, rotary_emb, None)

    def postprocess(h: torch.Tensor, e: torch.Tensor | None) -> Any:
        shift, scale = (self.scale_shift_table.unsqueeze(0) + temb.unsqueeze(2)).chunk(2, dim=2)
        shift, scale = shift.squeeze(2).to(h.device), scale.squeeze(2).to(h.device)
        h = self.proj_out((self.norm_out(h.float()) * (1 + scale) + shift).type_as(h))
        output = self._unpack_latent_sequence(
            h, num_frames=layout_cfg["total_frames"], height=height, width=width, patch_size=patch[1]
        )
        return _diffusers.model_output(output, return_dict)

    return CacheContext(
        modulated_input=temb,
        hidden_states=hidden_states,
        encoder_hidden_states=encoder_hidden_states,
        temb=temb,
        blocks=_diffusers.block_stack(_diffusers.BlockList(self.blocks, call, "h")),
        postprocess=postprocess,
        extra_states={"temb": temb, "timestep_proj": timestep_proj, "rotary_emb": rotary_emb},
        timestep=raw_timestep,
        condition=condition,
    )
