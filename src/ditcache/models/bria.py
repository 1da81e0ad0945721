"""Extractor for diffusers ``BriaTransformer2DModel`` (Bria 3.2, a FLUX.1-like model without pooled conditioning).

Mirrors ``BriaTransformer2DModel.forward`` of diffusers 0.42: ``time_embed(t)`` (plus ``guidance_embed`` when a
truthy ``guidance`` is passed, tested the way diffusers tests it; ``guidance_embeds=True`` cannot be built in
diffusers 0.42, so that branch is unreachable there), RoPE over the text and image ids, then the
double-stream blocks followed by the single-stream blocks (both return ``(encoder_hidden_states,
hidden_states)``), with the ControlNet residuals diffusers adds after each block, then ``norm_out`` and
``proj_out``.

Two diffusers details are kept as they are: the attention kwargs reach the blocks only on the
gradient-checkpointing path, and a single-list ControlNet sample is added to the image tokens from index
``text_len`` on (``hidden_states[:, encoder_hidden_states.shape[1]:]``).

Modulated input (TeaCache's indicator): ``transformer_blocks[0].norm1(hidden_states, emb=temb)[0]``, as for FLUX.1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ditcache.core.context import CacheContext
from ditcache.models import _diffusers
from ditcache.presets.rules import none_published


def _single_controlnet(
    samples: Sequence[torch.Tensor] | None, num_blocks: int, text_len: int
) -> _diffusers.AddOn | None:
    """diffusers' single-list residual: added to ``h[:, text_len:]`` (the image tokens past the text length)."""
    if samples is None:
        return None
    n = len(samples)

    def add(index: int, h: torch.Tensor) -> torch.Tensor:
        sample = samples[_diffusers.controlnet_index(index, num_blocks, n)]
        return torch.cat([h[:, :text_len], h[:, text_len:] + sample], dim=1)

    return add


@_diffusers.diffusers_extractor(
    "BriaTransformer2DModel",
    name="bria",
    blocks=("transformer_blocks", "single_transformer_blocks"),
    attention_kwargs="attention_kwargs",
    teacache=none_published("no TeaCache coefficients are published for Bria"),
    magcache=none_published("no MagCache ratios are published for Bria"),
)
def extract(
    self: Any,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor | None = None,
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
    if timestep is None or encoder_hidden_states is None or img_ids is None or txt_ids is None:
        raise ValueError(
            "BriaTransformer2DModel call: timestep, encoder_hidden_states, img_ids and txt_ids are required"
        )
    condition = encoder_hidden_states
    raw_timestep = timestep
    hidden_states = self.x_embedder(hidden_states)

    timestep = timestep.to(hidden_states.dtype)
    if guidance is not None:
        guidance = guidance.to(hidden_states.dtype)

    temb = self.time_embed(timestep, dtype=hidden_states.dtype)
    if guidance:  # diffusers tests the tensor's truth value
        temb = temb + self.guidance_embed(guidance, dtype=hidden_states.dtype)

    encoder_hidden_states = self.context_embedder(encoder_hidden_states)

    if len(txt_ids.shape) == 3:
        txt_ids = txt_ids[0]
    if len(img_ids.shape) == 3:
        img_ids = img_ids[0]

    ids = torch.cat((txt_ids, img_ids), dim=0)
    image_rotary_emb = self.pos_embed(ids)

    double = self.transformer_blocks
    single = self.single_transformer_blocks

    def call(block: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        if torch.is_grad_enabled() and self.gradient_checkpointing:
            return _diffusers.call_block(self, block, h, e, temb, image_rotary_emb, attention_kwargs)
        return block(h, e, temb, image_rotary_emb)

    stack = _diffusers.block_stack(
        _diffusers.BlockList(
            double, call, "eh", _diffusers.controlnet_residuals(controlnet_block_samples, len(double))
        ),
        _diffusers.BlockList(
            single,
            call,
            "eh",
            _single_controlnet(controlnet_single_block_samples, len(single), encoder_hidden_states.shape[1]),
        ),
    )
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
