"""Extractor for diffusers ``LongCatImageTransformer2DModel`` (LongCat-Image, LongCat-Image-Edit; a FLUX clone).

Mirrors ``LongCatImageTransformer2DModel.forward`` of diffusers 0.42: ``x_embedder``, the timestep embedding, the
context embedder, RoPE, then the double- and single-stream blocks (both return ``(e, h)``; gradient checkpointing
per block as the model's ``use_checkpoint`` lists say), ``norm_out`` and ``proj_out``. The forward has no LoRA
scale.

Modulated input (TeaCache's indicator): ``transformer_blocks[0].norm1(h, emb=temb)[0]`` (vLLM-Omni's choice).
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
    teacache=fixed("longcat-image-vllm-omni", {"num_layers": 19, "num_single_layers": 38}),
    magcache=none_published("no MagCache curve is published for LongCat-Image"),
)
def extract(
    self: Any,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    timestep: torch.Tensor,
    img_ids: torch.Tensor,
    txt_ids: torch.Tensor,
    guidance: torch.Tensor | None = None,
    return_dict: bool = True,
) -> CacheContext:
    condition, raw_timestep = encoder_hidden_states, timestep
    hidden_states = self.x_embedder(hidden_states)
    timestep = timestep.to(hidden_states.dtype) * 1000
    temb = self.time_embed(timestep, hidden_states.dtype)
    encoder_hidden_states = self.context_embedder(encoder_hidden_states)
    image_rotary_emb = self.pos_embed(torch.cat((txt_ids, img_ids), dim=0))
    double, single = self.transformer_blocks, self.single_transformer_blocks
    ckpt = {id(b): flag for b, flag in zip(double, self.use_checkpoint)}
    ckpt |= {id(b): flag for b, flag in zip(single, self.use_single_checkpoint)}

    def call(block: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        if _diffusers.checkpointing(self) and ckpt[id(block)]:
            return self._gradient_checkpointing_func(block, h, e, temb, image_rotary_emb)
        return block(h, e, temb, image_rotary_emb)

    return CacheContext(
        modulated_input=_diffusers.adaln_input(double[0].norm1, hidden_states, temb),
        hidden_states=hidden_states,
        encoder_hidden_states=encoder_hidden_states,
        temb=temb,
        blocks=_diffusers.block_stack(
            _diffusers.BlockList(double, call, "eh"), _diffusers.BlockList(single, call, "eh")
        ),
        postprocess=lambda h, e: _diffusers.model_output(self.proj_out(self.norm_out(h, temb)), return_dict),
        extra_states={"image_rotary_emb": image_rotary_emb},
        timestep=raw_timestep,
        condition=condition,
    )
