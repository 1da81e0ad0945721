"""Extractor for diffusers ``SkyReelsV2Transformer3DModel`` (SkyReels-V2 DF / T2V / I2V, 1.3B / 14B).

Mirrors ``SkyReelsV2Transformer3DModel.forward`` of diffusers 0.42: Wan-style RoPE and patch embedding, the
block-causal mask of diffusion forcing (``num_frame_per_block > 1``), the condition embedder, the fps embedding
(``inject_sample_info``), per-frame timestep embeddings expanded to tokens under diffusion forcing, the blocks
(video tokens; text as K/V), then its output modulation (per-token for diffusion forcing) and unpatchify.

Modulated input (TeaCache's indicator): ``temb``; ``extra_states["timestep_proj"]`` is the 6-way projection that
SkyReels-V2's own TeaCache (ret mode) reads.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ditcache.core.context import CacheContext
from ditcache.models import _diffusers
from ditcache.presets.rules import PresetRule, config_value, none_published


def _teacache(config: Any) -> tuple[str, bool]:
    if config_value(config, "image_dim") is None:
        raise LookupError("SkyReels-V2 reuses Wan2.1 sets for its I2V models only")
    return "wan2.1-i2v-14b-480p-ret", False


@_diffusers.diffusers_extractor(
    "SkyReelsV2Transformer3DModel",
    name="skyreels-v2",
    blocks=("blocks",),
    teacache=PresetRule(
        ("wan2.1-i2v-14b-480p-ret", "wan2.1-i2v-14b-720p-ret"),
        _teacache,
        "SkyReels-V2's initialize_teacache reuses the Wan2.1 I2V ret-mode sets for its I2V 540P / 720P models "
        "(not a fit of its own; never marked exact)",
    ),
    magcache=none_published("no MagCache curve is published for SkyReels-V2"),
)
def extract(
    self: Any,
    hidden_states: torch.Tensor,
    timestep: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    encoder_hidden_states_image: torch.Tensor | None = None,
    enable_diffusion_forcing: bool = False,
    fps: Any = None,
    return_dict: bool = True,
    attention_kwargs: dict[str, Any] | None = None,
) -> CacheContext:
    condition, raw_timestep = encoder_hidden_states, timestep
    grid = _diffusers.wan_grid(self, hidden_states)
    _, frames, height, width = grid[:4]
    rotary_emb = self.rope(hidden_states)
    hidden_states = self.patch_embedding(hidden_states).flatten(2).transpose(1, 2)

    causal_mask = None
    per_block = self.config.num_frame_per_block
    if per_block > 1:
        index = torch.arange(frames // per_block, device=hidden_states.device).repeat_interleave(per_block)
        causal_mask = (index.unsqueeze(0) <= index.unsqueeze(1)).view(frames, 1, 1, frames, 1, 1)
        causal_mask = causal_mask.repeat(1, height, width, 1, height, width)
        causal_mask = causal_mask.reshape(frames * height * width, frames * height * width).unsqueeze(0).unsqueeze(0)

    temb, timestep_proj, encoder_hidden_states, encoder_hidden_states_image = self.condition_embedder(
        timestep, encoder_hidden_states, encoder_hidden_states_image
    )
    timestep_proj = timestep_proj.unflatten(-1, (6, -1))
    if encoder_hidden_states_image is not None:
        encoder_hidden_states = torch.concat([encoder_hidden_states_image, encoder_hidden_states], dim=1)
    if self.config.inject_sample_info:
        fps = torch.tensor(fps, dtype=torch.long, device=hidden_states.device)
        fps_proj = self.fps_projection(self.fps_embedding(fps)).unflatten(1, (6, -1))
        timestep_proj = timestep_proj + (
            fps_proj.repeat(timestep.shape[1], 1, 1) if enable_diffusion_forcing else fps_proj
        )
    if enable_diffusion_forcing:
        b, f = timestep.shape
        temb = temb.view(b, f, 1, 1, -1).repeat(1, 1, height, width, 1).flatten(1, 3)
        timestep_proj = timestep_proj.view(b, f, 1, 1, 6, -1).repeat(1, 1, height, width, 1, 1).flatten(1, 3)
        timestep_proj = timestep_proj.transpose(1, 2).contiguous()

    def call(block: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        return _diffusers.call_block(self, block, h, e, timestep_proj, rotary_emb, causal_mask)

    def postprocess(h: torch.Tensor, e: torch.Tensor | None) -> Any:
        if temb.dim() == 2:
            shift, scale = (self.scale_shift_table + temb.unsqueeze(1)).chunk(2, dim=1)
        else:
            shift, scale = (self.scale_shift_table.unsqueeze(2) + temb.unsqueeze(1)).chunk(2, dim=1)
            shift, scale = shift.squeeze(1), scale.squeeze(1)
        shift, scale = shift.to(h.device), scale.to(h.device)
        h = self.proj_out((self.norm_out(h.float()) * (1 + scale) + shift).type_as(h))
        return _diffusers.model_output(_diffusers.wan_unpatchify(h, grid), return_dict)

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
