"""Extractor for diffusers ``AuraFlowTransformer2DModel`` (AuraFlow v0.1-0.3, Pony v7).

Mirrors ``AuraFlowTransformer2DModel.forward`` of diffusers 0.42: patch + position embedding, the timestep
embedding, the context embedder with the register tokens prepended, then the joint blocks (return ``(e, h)``) and
the single blocks on ``cat([e, h])`` (``"joint"`` convention), ``norm_out``, ``proj_out`` and unpatchify. As in
diffusers, the checkpointed calls pass no ``attention_kwargs``.

Modulated input (TeaCache's indicator): ``joint_transformer_blocks[0].norm1(h, emb=temb)[0]``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ditcache.core.context import CacheContext
from ditcache.models import _diffusers
from ditcache.presets.rules import none_published


@_diffusers.diffusers_extractor(
    "AuraFlowTransformer2DModel",
    name="auraflow",
    blocks=("joint_transformer_blocks", "single_transformer_blocks"),
    teacache=none_published("no TeaCache set is published for AuraFlow"),
    magcache=none_published("no MagCache curve is published for AuraFlow"),
)
def extract(
    self: Any,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    timestep: torch.Tensor,
    attention_kwargs: dict[str, Any] | None = None,
    return_dict: bool = True,
) -> CacheContext:
    from diffusers.models.transformers.auraflow_transformer_2d import maybe_adjust_dtype_for_device

    condition, raw_timestep = encoder_hidden_states, timestep
    height, width = hidden_states.shape[-2:]
    hidden_states = self.pos_embed(hidden_states)
    temb = self.time_step_proj(self.time_step_embed(timestep).to(dtype=next(self.parameters()).dtype))
    encoder_hidden_states = self.context_embedder(encoder_hidden_states)
    dtype = maybe_adjust_dtype_for_device(encoder_hidden_states.dtype, encoder_hidden_states.device)
    register_tokens = self.register_tokens.to(device=encoder_hidden_states.device, dtype=dtype)
    encoder_hidden_states = torch.cat(
        [register_tokens.repeat(encoder_hidden_states.size(0), 1, 1), encoder_hidden_states], dim=1
    )

    def call_joint(block: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        if _diffusers.checkpointing(self):
            return self._gradient_checkpointing_func(block, h, e, temb)
        return block(hidden_states=h, encoder_hidden_states=e, temb=temb, attention_kwargs=attention_kwargs)

    def call_single(block: nn.Module, joint: torch.Tensor, _: torch.Tensor | None) -> Any:
        if _diffusers.checkpointing(self):
            return self._gradient_checkpointing_func(block, joint, temb)
        return block(hidden_states=joint, temb=temb, attention_kwargs=attention_kwargs)

    def postprocess(h: torch.Tensor, e: torch.Tensor | None) -> Any:
        h = self.proj_out(self.norm_out(h, temb))
        p, out_channels = self.config.patch_size, self.config.out_channels
        hh, ww = height // p, width // p
        h = torch.einsum("nhwpqc->nchpwq", h.reshape(shape=(h.shape[0], hh, ww, p, p, out_channels)))
        return _diffusers.model_output(h.reshape(shape=(h.shape[0], out_channels, hh * p, ww * p)), return_dict)

    joint_blocks = self.joint_transformer_blocks
    return CacheContext(
        modulated_input=_diffusers.adaln_input(joint_blocks[0].norm1, hidden_states, temb),
        hidden_states=hidden_states,
        encoder_hidden_states=encoder_hidden_states,
        temb=temb,
        blocks=_diffusers.block_stack(
            _diffusers.BlockList(joint_blocks, call_joint, "eh"),
            _diffusers.BlockList(self.single_transformer_blocks, call_single, "joint"),
        ),
        postprocess=postprocess,
        timestep=raw_timestep,
        condition=condition,
    )
