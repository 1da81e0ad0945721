"""Extractor for diffusers ``ChronoEditTransformer3DModel`` (NVIDIA ChronoEdit-14B, Wan-based image editing).

Mirrors ``ChronoEditTransformer3DModel.forward`` of diffusers 0.42, which is Wan's forward without the
``contiguous()`` of the patch tokens: the Wan family preprocessing and output helpers, blocks on the video tokens
with the text as K/V. Modulated input: ``temb`` (as Wan); ``extra_states`` has ``"timestep_proj"``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ditcache.core.context import CacheContext
from ditcache.models import _diffusers
from ditcache.presets.rules import none_published


@_diffusers.diffusers_extractor(
    "ChronoEditTransformer3DModel",
    name="chronoedit",
    blocks=("blocks",),
    teacache=none_published("no TeaCache set is published for ChronoEdit"),
    magcache=none_published("no MagCache curve is published for ChronoEdit"),
)
def extract(
    self: Any,
    hidden_states: torch.Tensor,
    timestep: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    encoder_hidden_states_image: torch.Tensor | None = None,
    return_dict: bool = True,
    attention_kwargs: dict[str, Any] | None = None,
) -> CacheContext:
    condition, raw_timestep = encoder_hidden_states, timestep
    grid = _diffusers.wan_grid(self, hidden_states)
    rotary_emb, hidden_states, temb, timestep_proj, encoder_hidden_states = _diffusers.wan_preprocess(
        self, hidden_states, timestep, encoder_hidden_states, encoder_hidden_states_image, contiguous=False
    )

    def call(block: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        return _diffusers.call_block(self, block, h, e, timestep_proj, rotary_emb)

    return CacheContext(
        modulated_input=temb,
        hidden_states=hidden_states,
        encoder_hidden_states=encoder_hidden_states,
        temb=temb,
        blocks=_diffusers.block_stack(_diffusers.BlockList(self.blocks, call, "h")),
        postprocess=lambda h, e: _diffusers.wan_output(self, temb, h, grid, return_dict),
        extra_states={"temb": temb, "timestep_proj": timestep_proj, "rotary_emb": rotary_emb},
        timestep=raw_timestep,
        condition=condition,
    )
