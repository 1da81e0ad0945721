"""Extractor for diffusers ``PRXTransformer2DModel`` (PRX by Photoroom).

Mirrors ``PRXTransformer2DModel.forward`` of diffusers 0.42: text and image input projections, image position ids
and RoPE, the timestep (and optional resolution) embedding, then the blocks (image tokens; text as K/V; the
checkpointed call passes ``block.__call__`` as diffusers does), the final layer and unpatchify. The forward has no
LoRA scale.

Modulated input (TeaCache's indicator): the timestep embedding ``vec``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ditcache.core.context import CacheContext
from ditcache.models import _diffusers
from ditcache.presets.rules import none_published


@_diffusers.diffusers_extractor(
    "PRXTransformer2DModel",
    name="prx",
    blocks=("blocks",),
    attention_kwargs=None,
    teacache=none_published("no TeaCache set is published for PRX"),
    magcache=none_published("no MagCache curve is published for PRX"),
)
def extract(
    self: Any,
    hidden_states: torch.Tensor,
    timestep: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    attention_kwargs: dict[str, Any] | None = None,
    return_dict: bool = True,
) -> CacheContext:
    from diffusers.models.transformers.transformer_prx import get_image_ids, img2seq, seq2img

    condition, raw_timestep = encoder_hidden_states, timestep
    txt = self.txt_in(encoder_hidden_states)
    img = self.img_in(img2seq(hidden_states, self.patch_size))
    bs, _, h, w = hidden_states.shape
    pe = self.pe_embedder(get_image_ids(bs, h, w, patch_size=self.patch_size, device=hidden_states.device))
    vec = self._compute_timestep_embedding(timestep, dtype=img.dtype)
    if self.resolution_embedder is not None:
        height = torch.full((bs,), h, device=hidden_states.device, dtype=torch.float32)
        width = torch.full((bs,), w, device=hidden_states.device, dtype=torch.float32)
        vec = vec + self.resolution_embedder(height, width, dtype=vec.dtype)
    shape = hidden_states.shape

    def call(block: nn.Module, x: torch.Tensor, e: torch.Tensor | None) -> Any:
        if _diffusers.checkpointing(self):
            return self._gradient_checkpointing_func(block.__call__, x, e, vec, pe, attention_mask)
        return block(
            hidden_states=x, encoder_hidden_states=e, temb=vec, image_rotary_emb=pe, attention_mask=attention_mask
        )

    return CacheContext(
        modulated_input=vec,
        hidden_states=img,
        encoder_hidden_states=txt,
        temb=vec,
        blocks=_diffusers.block_stack(_diffusers.BlockList(self.blocks, call, "h")),
        postprocess=lambda x, e: _diffusers.model_output(
            seq2img(self.final_layer(x, vec), self.patch_size, shape), return_dict
        ),
        extra_states={"rotary_emb": pe},
        timestep=raw_timestep,
        condition=condition,
    )
