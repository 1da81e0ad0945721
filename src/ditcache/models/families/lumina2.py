"""Extractor for diffusers ``Lumina2Transformer2DModel`` (Lumina-Image-2.0, Illustrious-Lumina, NewBie).

Mirrors ``Lumina2Transformer2DModel.forward`` of diffusers 0.42: the timestep/caption embedding, RoPE and patching,
the ``context_refiner`` and ``noise_refiner`` lists (preprocessing, not cached), the per-sample packing of
``[caption; image]`` into one padded sequence (with a mask when lengths differ), then the cached ``layers`` on that
one stream, ``norm_out`` and the per-sample unpacking.

Modulated input (TeaCache's indicator): ``layers[0].norm1(h, temb)[0]`` on the packed sequence (TeaCache4Lumina2).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ditcache.core.context import CacheContext
from ditcache.models import _diffusers
from ditcache.presets.rules import fixed, none_published


@_diffusers.diffusers_extractor(
    "Lumina2Transformer2DModel",
    name="lumina2",
    blocks=("layers",),
    teacache=fixed(
        "lumina2-v1",
        {"num_layers": 26, "hidden_size": 2304},
        "TeaCache4Lumina2's default set; the README's v2 set and ComfyUI's set by name ('lumina2-v2', "
        "'lumina2-comfyui')",
    ),
    magcache=none_published("no MagCache curve is published for Lumina-Image-2.0"),
)
def extract(
    self: Any,
    hidden_states: torch.Tensor,
    timestep: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    encoder_attention_mask: torch.Tensor,
    attention_kwargs: dict[str, Any] | None = None,
    return_dict: bool = True,
) -> CacheContext:
    condition, raw_timestep = encoder_hidden_states, timestep
    batch_size, _, height, width = hidden_states.shape
    temb, encoder_hidden_states = self.time_caption_embed(hidden_states, timestep, encoder_hidden_states)
    hidden_states, context_rotary_emb, noise_rotary_emb, rotary_emb, encoder_seq_lengths, seq_lengths = (
        self.rope_embedder(hidden_states, encoder_attention_mask)
    )
    hidden_states = self.x_embedder(hidden_states)
    for layer in self.context_refiner:
        encoder_hidden_states = layer(encoder_hidden_states, encoder_attention_mask, context_rotary_emb)
    for layer in self.noise_refiner:
        hidden_states = layer(hidden_states, None, noise_rotary_emb, temb)

    max_seq_len = max(seq_lengths)
    attention_mask = hidden_states.new_zeros(batch_size, max_seq_len, dtype=torch.bool)
    joint = hidden_states.new_zeros(batch_size, max_seq_len, self.config.hidden_size)
    for i, (encoder_seq_len, seq_len) in enumerate(zip(encoder_seq_lengths, seq_lengths)):
        attention_mask[i, :seq_len] = True
        joint[i, :encoder_seq_len] = encoder_hidden_states[i, :encoder_seq_len]
        joint[i, encoder_seq_len:seq_len] = hidden_states[i]
    mask = attention_mask if len(set(seq_lengths)) > 1 else None

    def call(block: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        return _diffusers.call_block(self, block, h, mask, rotary_emb, temb)

    def postprocess(h: torch.Tensor, e: torch.Tensor | None) -> Any:
        h = self.norm_out(h, temb)
        p = self.config.patch_size
        output = [
            h[i][encoder_seq_len:seq_len]
            .view(height // p, width // p, p, p, self.out_channels)
            .permute(4, 0, 2, 1, 3)
            .flatten(3, 4)
            .flatten(1, 2)
            for i, (encoder_seq_len, seq_len) in enumerate(zip(encoder_seq_lengths, seq_lengths))
        ]
        return _diffusers.model_output(torch.stack(output, dim=0), return_dict)

    def modulated_input() -> torch.Tensor:
        return self.layers[0].norm1(joint, temb)[0]  # type: ignore[no-any-return]

    return CacheContext(
        modulated_input=modulated_input,
        hidden_states=joint,
        encoder_hidden_states=None,
        temb=temb,
        blocks=_diffusers.block_stack(_diffusers.BlockList(self.layers, call, "h")),
        postprocess=postprocess,
        extra_states={"attention_mask": mask, "rotary_emb": rotary_emb},
        timestep=raw_timestep,
        condition=condition,
    )
