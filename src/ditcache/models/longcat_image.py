"""Extractor for diffusers ``LongCatImageTransformer2DModel`` (LongCat-Image, LongCat-Image-Edit).

Mirrors ``LongCatImageTransformer2DModel.forward`` of diffusers 0.42: a FLUX.1 layout without pooled or guidance
conditioning (``time_embed(t * 1000)``; the ``guidance`` argument is accepted and unused, as in diffusers), RoPE
over the text and image ids, then the double-stream blocks followed by the single-stream blocks (both return
``(encoder_hidden_states, hidden_states)``), then ``norm_out`` and ``proj_out``. Gradient checkpointing applies to
the blocks whose ``use_checkpoint`` / ``use_single_checkpoint`` flag is set, as diffusers does. The model has no
LoRA-scale argument.

Modulated input (TeaCache's indicator): ``transformer_blocks[0].norm1(hidden_states, emb=temb)[0]``, the choice of
vLLM-Omni's LongCat-Image TeaCache extractor.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ditcache.core.context import CacheContext
from ditcache.models import _diffusers
from ditcache.presets.rules import fixed, none_published


@_diffusers.diffusers_extractor(
    "LongCatImageTransformer2DModel",
    name="longcat-image",
    blocks=("transformer_blocks", "single_transformer_blocks"),
    attention_kwargs=None,
    teacache=fixed("longcat-image", num_layers=19, num_single_layers=38, joint_attention_dim=3584),
    magcache=none_published("no MagCache ratios are published for LongCat-Image"),
)
def extract(
    self: Any,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor | None = None,
    timestep: torch.Tensor | None = None,
    img_ids: torch.Tensor | None = None,
    txt_ids: torch.Tensor | None = None,
    guidance: torch.Tensor | None = None,
    return_dict: bool = True,
) -> CacheContext:
    if timestep is None or encoder_hidden_states is None or img_ids is None or txt_ids is None:
        raise ValueError(
            "LongCatImageTransformer2DModel call: timestep, encoder_hidden_states, img_ids and txt_ids are required"
        )
    condition = encoder_hidden_states
    raw_timestep = timestep
    hidden_states = self.x_embedder(hidden_states)

    timestep = timestep.to(hidden_states.dtype) * 1000
    temb = self.time_embed(timestep, hidden_states.dtype)
    encoder_hidden_states = self.context_embedder(encoder_hidden_states)

    ids = torch.cat((txt_ids, img_ids), dim=0)
    image_rotary_emb = self.pos_embed(ids)

    double = self.transformer_blocks
    single = self.single_transformer_blocks
    # diffusers checkpoints a block only where its flag is set
    checkpointed = {
        id(block): flag
        for blocks, flags in ((double, self.use_checkpoint), (single, self.use_single_checkpoint))
        for block, flag in zip(blocks, flags)
    }

    def call(block: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        if checkpointed[id(block)]:
            return _diffusers.call_block(self, block, h, e, temb, image_rotary_emb)
        return block(h, e, temb, image_rotary_emb)

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
