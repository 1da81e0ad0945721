"""Extractor for diffusers ``BriaTransformer2DModel`` (Bria 3.2, FLUX-like).

Mirrors ``BriaTransformer2DModel.forward`` of diffusers 0.42: ``x_embedder``, the timestep (and, when truthy,
guidance) embedding, the context embedder, RoPE, then the double- and single-stream blocks (both return ``(e, h)``;
as in diffusers only the checkpointed call passes ``attention_kwargs``), ControlNet residuals (the single-list ones
are added to the image stream from token ``len(text)`` on, exactly as diffusers indexes them), ``norm_out``,
``proj_out``.

Modulated input (TeaCache's indicator): ``transformer_blocks[0].norm1(h, emb=temb)[0]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ditcache.core.context import CacheContext
from ditcache.models import _diffusers
from ditcache.presets.rules import none_published


@_diffusers.diffusers_extractor(
    "BriaTransformer2DModel",
    name="bria",
    blocks=("transformer_blocks", "single_transformer_blocks"),
    teacache=none_published("no TeaCache set is published for Bria"),
    magcache=none_published("no MagCache curve is published for Bria"),
)
def extract(
    self: Any,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    pooled_projections: torch.Tensor | None = None,
    timestep: torch.Tensor | None = None,
    img_ids: torch.Tensor | None = None,
    txt_ids: torch.Tensor | None = None,
    guidance: torch.Tensor | None = None,
    attention_kwargs: dict[str, Any] | None = None,
    return_dict: bool = True,
    controlnet_block_samples: Sequence[torch.Tensor] | None = None,
    controlnet_single_block_samples: Sequence[torch.Tensor] | None = None,
) -> CacheContext:
    if timestep is None or img_ids is None or txt_ids is None:
        raise ValueError("BriaTransformer2DModel call: timestep, img_ids and txt_ids are required")
    condition, raw_timestep = encoder_hidden_states, timestep
    hidden_states = self.x_embedder(hidden_states)
    timestep = timestep.to(hidden_states.dtype)
    if guidance is not None:
        guidance = guidance.to(hidden_states.dtype)
    temb = self.time_embed(timestep, dtype=hidden_states.dtype)
    if guidance:  # diffusers tests the tensor's truth value
        temb += self.guidance_embed(guidance, dtype=hidden_states.dtype)
    encoder_hidden_states = self.context_embedder(encoder_hidden_states)
    txt_ids = txt_ids[0] if len(txt_ids.shape) == 3 else txt_ids
    img_ids = img_ids[0] if len(img_ids.shape) == 3 else img_ids
    image_rotary_emb = self.pos_embed(torch.cat((txt_ids, img_ids), dim=0))
    text_len = encoder_hidden_states.shape[1]

    def call(block: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        if _diffusers.checkpointing(self):
            return self._gradient_checkpointing_func(block, h, e, temb, image_rotary_emb, attention_kwargs)
        return block(h, e, temb, image_rotary_emb)

    single_add = None
    if controlnet_single_block_samples is not None:
        residual = _diffusers.controlnet_residuals(controlnet_single_block_samples, len(self.single_transformer_blocks))
        assert residual is not None

        def single_add(index: int, h: torch.Tensor) -> torch.Tensor:
            return torch.cat([h[:, :text_len], residual(index, h[:, text_len:])], dim=1)

    double = self.transformer_blocks
    return CacheContext(
        modulated_input=_diffusers.adaln_input(double[0].norm1, hidden_states, temb),
        hidden_states=hidden_states,
        encoder_hidden_states=encoder_hidden_states,
        temb=temb,
        blocks=_diffusers.block_stack(
            _diffusers.BlockList(
                double, call, "eh", _diffusers.controlnet_residuals(controlnet_block_samples, len(double))
            ),
            _diffusers.BlockList(self.single_transformer_blocks, call, "eh", single_add),
        ),
        postprocess=lambda h, e: _diffusers.model_output(self.proj_out(self.norm_out(h, temb)), return_dict),
        extra_states={"image_rotary_emb": image_rotary_emb},
        timestep=raw_timestep,
        condition=condition,
    )
