"""Extractor for diffusers ``PRXTransformer2DModel`` (PRX by Photoroom).

Mirrors ``PRXTransformer2DModel.forward`` of diffusers 0.42: the text projection, the image patch sequence and its
embedding, RoPE over the image ids, the timestep embedding (plus the resolution embedding of PRX-7B's "vec" mode),
then the blocks (the text is cross-attention K/V: each block returns the image tokens only and the stack hands the
*same* text tensor back), then the final layer and the patch sequence back to an image. The forward accepts
``attention_kwargs`` but has no LoRA scale.

Modulated input (TeaCache's indicator): the first block's image stream after its attention modulation,
``(1 + scale) * img_pre_norm(h) + shift`` from ``modulation(vec)``.
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
    teacache=none_published("no TeaCache coefficients are published for PRX"),
    magcache=none_published("no MagCache ratios are published for PRX"),
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

    condition = encoder_hidden_states
    raw_timestep = timestep
    image_shape = hidden_states.shape
    txt = self.txt_in(encoder_hidden_states)
    img = img2seq(hidden_states, self.patch_size)
    img = self.img_in(img)

    bs, _, h, w = hidden_states.shape
    img_ids = get_image_ids(bs, h, w, patch_size=self.patch_size, device=hidden_states.device)
    pe = self.pe_embedder(img_ids)

    vec = self._compute_timestep_embedding(timestep, dtype=img.dtype)
    if self.resolution_embedder is not None:  # PRX-7B: the latent size conditions every block's modulation
        height = torch.full((bs,), h, device=hidden_states.device, dtype=torch.float32)
        width = torch.full((bs,), w, device=hidden_states.device, dtype=torch.float32)
        vec = vec + self.resolution_embedder(height, width, dtype=vec.dtype)

    def call(block: nn.Module, x: torch.Tensor, e: torch.Tensor | None) -> Any:
        return _diffusers.call_block(self, block, x, e, vec, pe, attention_mask)

    stack = _diffusers.block_stack(_diffusers.BlockList(self.blocks, call, "h"))
    first = self.blocks[0]

    def modulated_input() -> torch.Tensor:
        shift, scale, _gate = first.modulation(vec)[0]
        return (1 + scale) * first.img_pre_norm(img) + shift  # type: ignore[no-any-return]

    def postprocess(x: torch.Tensor, e: torch.Tensor | None) -> Any:
        x = self.final_layer(x, vec)
        return _diffusers.model_output(seq2img(x, self.patch_size, image_shape), return_dict)

    return CacheContext(
        modulated_input=modulated_input,
        hidden_states=img,
        encoder_hidden_states=txt,
        temb=vec,
        blocks=stack,
        postprocess=postprocess,
        extra_states={"image_rotary_emb": pe, "attention_mask": attention_mask},
        timestep=raw_timestep,
        condition=condition,
    )
