"""Extractor for diffusers ``WanTransformer3DModel`` (Wan 2.1 T2V/I2V, Wan 2.2 A14B and TI2V-5B).

Mirrors ``WanTransformer3DModel.forward`` of diffusers 0.42: RoPE, patch embedding, the time/text/image
condition embedder (a 2-D ``(batch, seq)`` timestep is Wan 2.2 TI2V's per-token timestep), the I2V image
tokens prepended to the text tokens, then the blocks, then the output modulation, ``proj_out`` and
unpatchify.

Wan's blocks only update the video tokens: the block stack returns the *same* text tensor object it was
given, so caches can tell that the second stream has no residual.

Modulated input (TeaCache's indicator): the timestep embedding ``temb`` (TeaCache4Wan2.1's ``e``, its default
mode). ``extra_states`` also holds ``"temb"`` and ``"timestep_proj"`` (the 6-way projection, TeaCache4Wan2.1's
``e0``, the indicator of its ``use_ret_steps`` mode).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ditcache.core.context import CacheContext
from ditcache.models import _diffusers
from ditcache.presets.rules import PresetRule, config_value


def _teacache(config: Any) -> tuple[str, bool]:
    dim = (config_value(config, "num_attention_heads") or 0) * (config_value(config, "attention_head_dim") or 0)
    if dim == 3072 or config_value(config, "in_channels") == 48:
        raise LookupError("none for Wan 2.2 TI2V-5B")
    if config_value(config, "image_dim") is not None:
        return "wan2.1-i2v-14b-480p", dim == 5120
    if dim == 5120:
        return "wan2.1-t2v-14b", True
    return "wan2.1-t2v-1.3b", dim == 1536


def _magcache(config: Any) -> tuple[str, bool]:
    dim = (config_value(config, "num_attention_heads") or 0) * (config_value(config, "attention_head_dim") or 0)
    in_channels = config_value(config, "in_channels")
    if dim == 3072 or in_channels == 48:
        return "wan2.2-ti2v-5b", dim == 3072 and in_channels == 48
    if config_value(config, "image_dim") is not None:  # Wan 2.1 I2V: CLIP image tokens
        return "wan2.1-i2v-14b-480p", dim == 5120
    if in_channels == 36:  # Wan 2.2 I2V-A14B: image latents by channel concatenation, no CLIP tokens
        return "wan2.2-i2v-a14b", dim == 5120
    if dim == 5120:
        return "wan2.1-t2v-14b", True
    return "wan2.1-t2v-1.3b", dim == 1536


WAN_TEACACHE = PresetRule(
    ("wan2.1-t2v-1.3b", "wan2.1-t2v-14b", "wan2.1-i2v-14b-480p"),
    _teacache,
    "by size and I2V image tokens; the 720p and use_ret_steps ('-ret') sets by name; none for Wan 2.2 TI2V-5B",
)
WAN_MAGCACHE = PresetRule(
    ("wan2.1-t2v-1.3b", "wan2.1-t2v-14b", "wan2.1-i2v-14b-480p", "wan2.2-i2v-a14b", "wan2.2-ti2v-5b"),
    _magcache,
    "by size, I2V image tokens and input channels; the other Wan 2.1/2.2 curves by name",
)


@_diffusers.diffusers_extractor(
    "WanTransformer3DModel", name="wan", blocks=("blocks",), teacache=WAN_TEACACHE, magcache=WAN_MAGCACHE
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
    condition = encoder_hidden_states
    raw_timestep = timestep
    grid = _diffusers.wan_grid(self, hidden_states)
    rotary_emb, hidden_states, temb, timestep_proj, encoder_hidden_states = _diffusers.wan_preprocess(
        self, hidden_states, timestep, encoder_hidden_states, encoder_hidden_states_image, contiguous=True
    )

    def call(block: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        return _diffusers.call_block(self, block, h, e, timestep_proj, rotary_emb)

    stack = _diffusers.block_stack(_diffusers.BlockList(self.blocks, call, "h"))

    def postprocess(h: torch.Tensor, e: torch.Tensor | None) -> Any:
        return _diffusers.wan_output(self, temb, h, grid, return_dict)

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
