"""Extractor for diffusers ``SD3Transformer2DModel`` (SD3 Medium, SD3.5 Large / Medium / Large-Turbo).

Mirrors ``SD3Transformer2DModel.forward`` of diffusers 0.42: patch + position embedding, the timestep/pooled
embedding, the context embedder, IP-Adapter image projection, then the joint blocks (return ``(e, h)``; the last one
is ``context_pre_only`` and returns no text stream, so the stack carries the text stream it was given: the same
object, no residual), ControlNet residuals (not after the last block), ``norm_out``, ``proj_out`` and unpatchify.

Refused: ``skip_layers`` (skip-layer guidance). SLG is a third call per step with the conditional inputs and some
blocks skipped; it would share the conditional branch's cache state, so a call with ``skip_layers`` raises.

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
    "SD3Transformer2DModel",
    name="sd3",
    blocks=("transformer_blocks",),
    attention_kwargs="joint_attention_kwargs",
    teacache=none_published("no TeaCache set is published for SD3 / SD3.5"),
    magcache=none_published("no MagCache curve is published for SD3 / SD3.5"),
)
def extract(
    self: Any,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    pooled_projections: torch.Tensor,
    timestep: torch.Tensor,
    block_controlnet_hidden_states: Sequence[torch.Tensor] | None = None,
    joint_attention_kwargs: dict[str, Any] | None = None,
    return_dict: bool = True,
    skip_layers: list[int] | None = None,
) -> CacheContext:
    if skip_layers is not None:
        raise ValueError(
            "SD3Transformer2DModel call: skip_layers (skip-layer guidance) cannot be cached: the perturbed call "
            "shares the conditional branch's inputs and would corrupt its cache state; run the pipeline with "
            "skip_guidance_layers=None, or remove the cache"
        )
    condition, raw_timestep = encoder_hidden_states, timestep
    height, width = hidden_states.shape[-2:]
    hidden_states = self.pos_embed(hidden_states).contiguous()
    temb = self.time_text_embed(timestep, pooled_projections)
    encoder_hidden_states = self.context_embedder(encoder_hidden_states)

    if joint_attention_kwargs is not None and "ip_adapter_image_embeds" in joint_attention_kwargs:
        ip_adapter_image_embeds = joint_attention_kwargs.pop("ip_adapter_image_embeds")
        ip_hidden_states, ip_temb = self.image_proj(ip_adapter_image_embeds, timestep)
        joint_attention_kwargs.update(ip_hidden_states=ip_hidden_states, temb=ip_temb)

    blocks = self.transformer_blocks

    def call(block: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        e_out, h_out = _diffusers.call_block(self, block, h, e, temb, joint_attention_kwargs)
        return h_out, (e if e_out is None else e_out)  # context_pre_only: the text stream ends here

    add = None
    if block_controlnet_hidden_states is not None:
        samples = block_controlnet_hidden_states
        interval = len(blocks) / len(samples)

        def add(index: int, h: torch.Tensor) -> torch.Tensor:
            return h if blocks[index].context_pre_only else h + samples[int(index / interval)]

    def postprocess(h: torch.Tensor, e: torch.Tensor | None) -> Any:
        h = self.proj_out(self.norm_out(h, temb))
        p = self.config.patch_size
        hh, ww = height // p, width // p
        h = h.reshape(shape=(h.shape[0], hh, ww, p, p, self.out_channels))
        h = torch.einsum("nhwpqc->nchpwq", h)
        return _diffusers.model_output(h.reshape(shape=(h.shape[0], self.out_channels, hh * p, ww * p)), return_dict)

    return CacheContext(
        modulated_input=_diffusers.adaln_input(blocks[0].norm1, hidden_states, temb),
        hidden_states=hidden_states,
        encoder_hidden_states=encoder_hidden_states,
        temb=temb,
        blocks=_diffusers.block_stack(_diffusers.BlockList(blocks, call, "he", add)),
        postprocess=postprocess,
        timestep=raw_timestep,
        condition=condition,
    )
