"""Extractor for diffusers ``Kandinsky5Transformer3DModel`` (Kandinsky 5.0 T2V Lite/Pro, T2I, I2V).

Mirrors ``Kandinsky5Transformer3DModel.forward`` of diffusers 0.42: the text, time (plus pooled text) and visual
embeddings, text RoPE, the ``text_transformer_blocks`` (preprocessing: the text encoder blocks, not cached), the
visual RoPE and the fractal flattening of NABLA sparse attention, then the cached ``visual_transformer_blocks``
(visual tokens; the text is K/V), the fractal unflattening and ``out_layer``. As diffusers does, the output with
``return_dict=False`` is the bare tensor, not a tuple. The forward has no LoRA scale.

Modulated input (TeaCache's indicator): the time embedding (no published TeaCache set fixes another choice).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ditcache.core.context import CacheContext
from ditcache.models import _diffusers
from ditcache.presets.rules import none_published


@_diffusers.diffusers_extractor(
    "Kandinsky5Transformer3DModel",
    name="kandinsky5",
    blocks=("visual_transformer_blocks",),
    attention_kwargs=None,
    teacache=none_published("no TeaCache set is published for Kandinsky 5"),
    magcache=none_published("no MagCache curve is published for Kandinsky 5"),
)
def extract(
    self: Any,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    timestep: torch.Tensor,
    pooled_projections: torch.Tensor,
    visual_rope_pos: Any,
    text_rope_pos: torch.Tensor,
    scale_factor: tuple[float, float, float] = (1.0, 1.0, 1.0),
    sparse_params: dict[str, Any] | None = None,
    return_dict: bool = True,
) -> CacheContext:
    from diffusers.models.transformers.transformer_kandinsky import fractal_flatten, fractal_unflatten

    condition, raw_timestep = encoder_hidden_states, timestep
    text_embed = self.text_embeddings(encoder_hidden_states)
    time_embed = self.time_embeddings(timestep) + self.pooled_text_embeddings(pooled_projections)
    visual_embed = self.visual_embeddings(hidden_states)
    text_rope = self.text_rope_embeddings(text_rope_pos).unsqueeze(dim=0)
    for block in self.text_transformer_blocks:
        text_embed = _diffusers.call_block(self, block, text_embed, time_embed, text_rope)

    visual_shape = visual_embed.shape[:-1]
    visual_rope = self.visual_rope_embeddings(visual_shape, visual_rope_pos, scale_factor)
    to_fractal = sparse_params["to_fractal"] if sparse_params is not None else False
    visual_embed, visual_rope = fractal_flatten(visual_embed, visual_rope, visual_shape, block_mask=to_fractal)

    def call(block: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        return _diffusers.call_block(self, block, h, e, time_embed, visual_rope, sparse_params)

    def postprocess(h: torch.Tensor, e: torch.Tensor | None) -> Any:
        x = self.out_layer(fractal_unflatten(h, visual_shape, block_mask=to_fractal), text_embed, time_embed)
        return _diffusers.model_output(x, True) if return_dict else x

    return CacheContext(
        modulated_input=time_embed,
        hidden_states=visual_embed,
        encoder_hidden_states=text_embed,
        temb=time_embed,
        blocks=_diffusers.block_stack(_diffusers.BlockList(self.visual_transformer_blocks, call, "h")),
        postprocess=postprocess,
        extra_states={"rotary_emb": visual_rope},
        timestep=raw_timestep,
        condition=condition,
    )
