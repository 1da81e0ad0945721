"""Extractor for diffusers ``JoyImageEditTransformer3DModel`` (JoyImage-Edit).

Mirrors ``JoyImageEditTransformer3DModel.forward`` of diffusers 0.42: multi-item inputs (the target moved first and
folded into the frame axis), patch embedding, the timestep + text condition embedder, RoPE for the image (and, with
M-RoPE, the text) tokens, then the double-stream blocks (return ``(h, e)``), ``norm_out``, ``proj_out``, unpatchify
and the multi-item unfolding. The forward has no LoRA scale.

Modulated input (TeaCache's indicator): the conditioning vector ``vec``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ditcache.core.context import CacheContext
from ditcache.models import _diffusers
from ditcache.presets.rules import none_published


@_diffusers.diffusers_extractor(
    "JoyImageEditTransformer3DModel",
    name="joyimage-edit",
    blocks=("double_blocks",),
    attention_kwargs=None,
    teacache=none_published("no TeaCache set is published for JoyImage-Edit"),
    magcache=none_published("no MagCache curve is published for JoyImage-Edit"),
)
def extract(
    self: Any,
    hidden_states: torch.Tensor,
    timestep: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    return_dict: bool = True,
) -> CacheContext:
    condition, raw_timestep = encoder_hidden_states, timestep
    multi_item = hidden_states.ndim == 6
    num_items = 0
    if multi_item:
        num_items = hidden_states.shape[1]
        if num_items > 1:
            if self.patch_size[0] != 1:
                raise ValueError("For multi-item input, patch_size[0] must be 1")
            hidden_states = torch.cat([hidden_states[:, -1:], hidden_states[:, :-1]], dim=1)
        b, n, c, t, h, w = hidden_states.shape
        hidden_states = hidden_states.permute(0, 2, 1, 3, 4, 5).reshape(b, c, n * t, h, w)
    batch_size, _, ot, oh, ow = hidden_states.shape
    tt, th, tw = ot // self.patch_size[0], oh // self.patch_size[1], ow // self.patch_size[2]
    img = self.img_in(hidden_states).flatten(2).transpose(1, 2)
    _, vec, txt = self.condition_embedder(timestep, encoder_hidden_states)
    if vec.shape[-1] > self.hidden_size:
        vec = vec.unflatten(1, (6, -1))
    vis_freqs, txt_freqs = self.get_rotary_pos_embed(
        vis_rope_size=[tt, th, tw], txt_rope_size=txt.shape[1] if self.rope_type == "mrope" else None
    )
    rope = (vis_freqs, txt_freqs)

    def call(block: nn.Module, x: torch.Tensor, e: torch.Tensor | None) -> Any:
        return _diffusers.call_block(self, block, x, e, vec, rope)

    def postprocess(x: torch.Tensor, e: torch.Tensor | None) -> Any:
        out = self.unpatchify(self.proj_out(self.norm_out(x)), tt, th, tw)
        if multi_item:
            out = out.reshape(batch_size, out.shape[1], num_items, -1, oh, ow).permute(0, 2, 1, 3, 4, 5)
            if num_items > 1:
                out = torch.cat([out[:, 1:], out[:, :1]], dim=1)
        return _diffusers.model_output(out, return_dict)

    return CacheContext(
        modulated_input=vec,
        hidden_states=img,
        encoder_hidden_states=txt,
        temb=vec,
        blocks=_diffusers.block_stack(_diffusers.BlockList(self.double_blocks, call, "he")),
        postprocess=postprocess,
        extra_states={"rotary_emb": rope},
        timestep=raw_timestep,
        condition=condition,
    )
