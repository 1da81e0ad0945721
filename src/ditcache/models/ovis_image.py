"""Extractor for diffusers ``OvisImageTransformer2DModel`` (Ovis-Image).

Mirrors ``OvisImageTransformer2DModel.forward`` of diffusers 0.42: a FLUX.1 layout without pooled or guidance
conditioning (``timestep_embedder(time_proj(t * 1000))``, an RMS-normalised text projection), RoPE over the text
and image ids, then the double-stream blocks followed by the single-stream blocks (both return
``(encoder_hidden_states, hidden_states)``), then ``norm_out`` and ``proj_out``.

Modulated input (TeaCache's indicator): ``transformer_blocks[0].norm1(hidden_states, emb=temb)[0]``, as for FLUX.1.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ditcache.core.context import CacheContext
from ditcache.models import _diffusers
from ditcache.presets.rules import none_published


@_diffusers.diffusers_extractor(
    "OvisImageTransformer2DModel",
    name="ovis-image",
    blocks=("transformer_blocks", "single_transformer_blocks"),
    attention_kwargs="joint_attention_kwargs",
    teacache=none_published("no TeaCache coefficients are published for Ovis-Image"),
    magcache=none_published("no MagCache ratios are published for Ovis-Image"),
)
def extract(
    self: Any,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor | None = None,
    timestep: torch.Tensor | None = None,
    img_ids: torch.Tensor | None = None,
    txt_ids: torch.Tensor | None = None,
    joint_attention_kwargs: dict[str, Any] | None = None,
    return_dict: bool = True,
) -> CacheContext:
    from diffusers.models.transformers import transformer_ovis_image

    if timestep is None or encoder_hidden_states is None or img_ids is None or txt_ids is None:
        raise ValueError(
            "OvisImageTransformer2DModel call: timestep, encoder_hidden_states, img_ids and txt_ids are required"
        )
    condition = encoder_hidden_states
    raw_timestep = timestep
    hidden_states = self.x_embedder(hidden_states)

    timestep = timestep.to(hidden_states.dtype) * 1000
    timesteps_proj = self.time_proj(timestep)
    temb = self.timestep_embedder(timesteps_proj.to(dtype=hidden_states.dtype))

    encoder_hidden_states = self.context_embedder_norm(encoder_hidden_states)
    encoder_hidden_states = self.context_embedder(encoder_hidden_states)

    if txt_ids.ndim == 3:
        transformer_ovis_image.logger.warning(
            "Passing `txt_ids` 3d torch.Tensor is deprecated."
            "Please remove the batch dimension and pass it as a 2d torch Tensor"
        )
        txt_ids = txt_ids[0]
    if img_ids.ndim == 3:
        transformer_ovis_image.logger.warning(
            "Passing `img_ids` 3d torch.Tensor is deprecated."
            "Please remove the batch dimension and pass it as a 2d torch Tensor"
        )
        img_ids = img_ids[0]

    ids = torch.cat((txt_ids, img_ids), dim=0)
    image_rotary_emb = self.pos_embed(ids)

    double = self.transformer_blocks
    single = self.single_transformer_blocks

    def call(block: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        return _diffusers.call_block(self, block, h, e, temb, image_rotary_emb, joint_attention_kwargs)

    stack = _diffusers.block_stack(_diffusers.BlockList(double, call, "eh"), _diffusers.BlockList(single, call, "eh"))
    norm = double[0].norm1 if len(double) else single[0].norm

    def postprocess(h: torch.Tensor, e: torch.Tensor | None) -> Any:
        h = self.norm_out(h, temb)
        output = self.proj_out(h)
        return _diffusers.model_output(output, return_dict)

    return CacheContext(
        modulated_input=_diffusers.adaln_input(norm, hidden_states, temb),
        hidden_states=hidden_states,
        encoder_hidden_states=encoder_hidden_states,
        temb=temb,
        blocks=stack,
        postprocess=postprocess,
        extra_states={"image_rotary_emb": image_rotary_emb},
        timestep=raw_timestep,
        condition=condition,
    )
