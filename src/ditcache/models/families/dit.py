"""Extractor for diffusers ``DiTTransformer2DModel`` (DiT-XL/2, class-conditional ImageNet 256/512).

Mirrors ``DiTTransformer2DModel.forward`` of diffusers 0.42: patch + position embedding, the
``BasicTransformerBlock`` s in ``ada_norm_zero`` mode (each embeds timestep and class label itself), then the
output modulation from the first block's conditioning embedding (computed after the blocks, as diffusers does: its
class-label dropout draws random numbers in training mode), ``proj_out_2`` and unpatchify. The context's ``temb`` is
the timestep part of that embedding. The forward has no LoRA scale.

Modulated input (TeaCache's indicator): ``transformer_blocks[0].norm1(h, timestep, class_labels)[0]``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ditcache.core.context import CacheContext
from ditcache.models import _diffusers
from ditcache.presets.rules import none_published


@_diffusers.diffusers_extractor(
    "DiTTransformer2DModel",
    name="dit",
    blocks=("transformer_blocks",),
    attention_kwargs=None,
    teacache=none_published("no TeaCache set is published for DiT"),
    magcache=none_published("no MagCache curve is published for DiT"),
)
def extract(
    self: Any,
    hidden_states: torch.Tensor,
    timestep: torch.Tensor | None = None,
    class_labels: torch.Tensor | None = None,
    cross_attention_kwargs: dict[str, Any] | None = None,
    return_dict: bool = True,
) -> CacheContext:
    raw_timestep = timestep
    hidden_states = self.pos_embed(hidden_states)
    first = self.transformer_blocks[0]
    embed = first.norm1.emb  # timestep + class-label embedding (its label dropout draws random numbers in training)
    temb = embed.timestep_embedder(embed.time_proj(timestep).to(dtype=hidden_states.dtype))

    def call(block: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        return _diffusers.call_block(self, block, h, None, None, None, timestep, cross_attention_kwargs, class_labels)

    def postprocess(h: torch.Tensor, e: torch.Tensor | None) -> Any:
        conditioning = embed(timestep, class_labels, hidden_dtype=h.dtype)
        shift, scale = self.proj_out_1(F.silu(conditioning)).chunk(2, dim=1)
        h = self.proj_out_2(self.norm_out(h) * (1 + scale[:, None]) + shift[:, None])
        size = int(h.shape[1] ** 0.5)
        p = self.patch_size
        h = torch.einsum("nhwpqc->nchpwq", h.reshape(shape=(-1, size, size, p, p, self.out_channels)))
        return _diffusers.model_output(h.reshape(shape=(-1, self.out_channels, size * p, size * p)), return_dict)

    def modulated_input() -> torch.Tensor:
        # in training mode the label dropout draws random numbers: leave the generator as the blocks will find it
        devices = [hidden_states.device] if hidden_states.is_cuda else []
        with torch.random.fork_rng(devices=devices, enabled=embed.training):
            return first.norm1(hidden_states, timestep, class_labels, hidden_dtype=hidden_states.dtype)[0]  # type: ignore[no-any-return]

    return CacheContext(
        modulated_input=modulated_input,
        hidden_states=hidden_states,
        encoder_hidden_states=None,
        temb=temb,
        blocks=_diffusers.block_stack(_diffusers.BlockList(self.transformer_blocks, call, "h")),
        postprocess=postprocess,
        timestep=raw_timestep,
        condition=class_labels,
    )
