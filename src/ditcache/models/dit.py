"""Extractor for diffusers ``DiTTransformer2DModel`` (DiT-XL/2, class-conditional ImageNet 256 / 512).

Mirrors ``DiTTransformer2DModel.forward`` of diffusers 0.42: the patch embedding (with its positional embedding),
then the ``BasicTransformerBlock`` list in AdaLN-Zero mode (each block embeds the timestep and class label
itself; there is no text stream), then the output modulation from the first block's embedder, ``proj_out`` and
unpatchify. The output conditioning is computed before the blocks instead of after them (the same op on the same
inputs), so the context carries it as ``temb``. The model has no LoRA-scale argument.

Modulated input (TeaCache's indicator): the first block's AdaLN-Zero output
``transformer_blocks[0].norm1(hidden_states, timestep, class_labels)[0]``.
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
    teacache=none_published("no TeaCache coefficients are published for DiT"),
    magcache=none_published("no MagCache ratios are published for DiT"),
)
def extract(
    self: Any,
    hidden_states: torch.Tensor,
    timestep: torch.Tensor | None = None,
    class_labels: torch.Tensor | None = None,
    cross_attention_kwargs: dict[str, Any] | None = None,
    return_dict: bool = True,
) -> CacheContext:
    if timestep is None or class_labels is None:
        raise ValueError("DiTTransformer2DModel call: timestep and class_labels are required")
    raw_timestep = timestep
    hidden_states = self.pos_embed(hidden_states)

    first = self.transformer_blocks[0]
    conditioning = first.norm1.emb(timestep, class_labels, hidden_dtype=hidden_states.dtype)

    def call(block: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        return _diffusers.call_block(self, block, h, None, None, None, timestep, cross_attention_kwargs, class_labels)

    stack = _diffusers.block_stack(_diffusers.BlockList(self.transformer_blocks, call, "h"))
    h0 = hidden_states

    def modulated_input() -> torch.Tensor:
        return first.norm1(h0, timestep, class_labels, hidden_dtype=h0.dtype)[0]  # type: ignore[no-any-return]

    def postprocess(h: torch.Tensor, e: torch.Tensor | None) -> Any:
        shift, scale = self.proj_out_1(F.silu(conditioning)).chunk(2, dim=1)
        h = self.norm_out(h) * (1 + scale[:, None]) + shift[:, None]
        h = self.proj_out_2(h)

        height = width = int(h.shape[1] ** 0.5)
        h = h.reshape(shape=(-1, height, width, self.patch_size, self.patch_size, self.out_channels))
        h = torch.einsum("nhwpqc->nchpwq", h)
        output = h.reshape(shape=(-1, self.out_channels, height * self.patch_size, width * self.patch_size))
        return _diffusers.model_output(output, return_dict)

    return CacheContext(
        modulated_input=modulated_input,
        hidden_states=hidden_states,
        encoder_hidden_states=None,
        temb=conditioning,
        blocks=stack,
        postprocess=postprocess,
        extra_states={"class_labels": class_labels},
        timestep=raw_timestep,
        condition=class_labels,
    )
