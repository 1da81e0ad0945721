"""Extractor for diffusers ``AuraFlowTransformer2DModel`` (AuraFlow v0.1-v0.3, Pony v7).

Mirrors ``AuraFlowTransformer2DModel.forward`` of diffusers 0.42: patch embedding (with its positional embedding),
the timestep embedding, the caption projection with the learned register tokens prepended, then the MMDiT blocks
(``joint_transformer_blocks``, returning ``(encoder_hidden_states, hidden_states)``) followed by the single DiT
blocks, which run on the concatenated ``[text; image]`` sequence (the ``"joint"`` convention: the stack keeps the
two streams apart between blocks, which leaves every value as diffusers computes it), then ``norm_out``,
``proj_out`` and unpatchify. As in diffusers, the attention kwargs reach the blocks only when gradient
checkpointing is off.

Modulated input (TeaCache's indicator): ``joint_transformer_blocks[0].norm1(hidden_states, emb=temb)[0]``, the
AdaLN-Zero output of the first block as for FLUX.1.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ditcache.core.context import CacheContext
from ditcache.models import _diffusers
from ditcache.presets.rules import none_published


def _checkpointing(model: Any) -> bool:
    return torch.is_grad_enabled() and bool(model.gradient_checkpointing)


@_diffusers.diffusers_extractor(
    "AuraFlowTransformer2DModel",
    name="auraflow",
    blocks=("joint_transformer_blocks", "single_transformer_blocks"),
    teacache=none_published("no TeaCache coefficients are published for AuraFlow"),
    magcache=none_published("no MagCache ratios are published for AuraFlow"),
)
def extract(
    self: Any,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor | None = None,
    timestep: torch.Tensor | None = None,
    attention_kwargs: dict[str, Any] | None = None,
    return_dict: bool = True,
) -> CacheContext:
    from diffusers.models.transformers.auraflow_transformer_2d import maybe_adjust_dtype_for_device

    if timestep is None or encoder_hidden_states is None:
        raise ValueError("AuraFlowTransformer2DModel call: timestep and encoder_hidden_states are required")
    condition = encoder_hidden_states
    raw_timestep = timestep
    height, width = hidden_states.shape[-2:]

    hidden_states = self.pos_embed(hidden_states)  # adds the positional embedding too
    temb = self.time_step_embed(timestep).to(dtype=next(self.parameters()).dtype)
    temb = self.time_step_proj(temb)
    encoder_hidden_states = self.context_embedder(encoder_hidden_states)
    register_tokens_dtype = maybe_adjust_dtype_for_device(encoder_hidden_states.dtype, encoder_hidden_states.device)
    register_tokens = self.register_tokens.to(device=encoder_hidden_states.device, dtype=register_tokens_dtype)
    encoder_hidden_states = torch.cat(
        [register_tokens.repeat(encoder_hidden_states.size(0), 1, 1), encoder_hidden_states], dim=1
    )

    joint = self.joint_transformer_blocks
    single = self.single_transformer_blocks

    def call_joint(block: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        if _checkpointing(self):
            return _diffusers.call_block(self, block, h, e, temb)
        return block(h, e, temb, attention_kwargs)

    def call_single(block: nn.Module, combined: torch.Tensor, e: torch.Tensor | None) -> Any:
        if _checkpointing(self):
            return _diffusers.call_block(self, block, combined, temb)
        return block(combined, temb, attention_kwargs)

    stack = _diffusers.block_stack(
        _diffusers.BlockList(joint, call_joint, "eh"), _diffusers.BlockList(single, call_single, "joint")
    )
    norm = joint[0].norm1 if len(joint) else single[0].norm1

    def postprocess(h: torch.Tensor, e: torch.Tensor | None) -> Any:
        h = self.norm_out(h, temb)
        h = self.proj_out(h)

        patch_size = self.config.patch_size
        out_channels = self.config.out_channels
        post_height = height // patch_size
        post_width = width // patch_size
        h = h.reshape(shape=(h.shape[0], post_height, post_width, patch_size, patch_size, out_channels))
        h = torch.einsum("nhwpqc->nchpwq", h)
        output = h.reshape(shape=(h.shape[0], out_channels, post_height * patch_size, post_width * patch_size))
        return _diffusers.model_output(output, return_dict)

    return CacheContext(
        modulated_input=_diffusers.adaln_input(norm, hidden_states, temb),
        hidden_states=hidden_states,
        encoder_hidden_states=encoder_hidden_states,
        temb=temb,
        blocks=stack,
        postprocess=postprocess,
        timestep=raw_timestep,
        condition=condition,
    )
