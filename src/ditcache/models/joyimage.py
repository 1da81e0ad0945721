"""Extractor for diffusers ``JoyImageEditTransformer3DModel`` (JoyImage-Edit).

Mirrors ``JoyImageEditTransformer3DModel.forward`` of diffusers 0.42: the multi-item input ``(b, n, c, t, h, w)``
rearranged to one sequence (the last item first), the patch embedding, the condition embedder (timestep vector
and text), RoPE over the video grid (and the text for ``mrope``), then the dual-stream ``double_blocks``
(returning ``(hidden_states, encoder_hidden_states)``), then ``norm_out``, ``proj_out``, unpatchify and the
multi-item layout restored.

Modulated input (TeaCache's indicator): the first block's image stream after its first modulation,
``img_norm1(h) * (1 + scale) + shift`` with ``shift, scale`` the first two outputs of ``img_mod(vec)``.
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
    teacache=none_published("no TeaCache coefficients are published for JoyImage-Edit"),
    magcache=none_published("no MagCache ratios are published for JoyImage-Edit"),
)
def extract(
    self: Any,
    hidden_states: torch.Tensor,
    timestep: torch.Tensor,
    encoder_hidden_states: torch.Tensor | None = None,
    return_dict: bool = True,
) -> CacheContext:
    condition = encoder_hidden_states
    raw_timestep = timestep

    # multi-item input (b, n, c, t, h, w): the last item goes first, then (b, c, n * t, h, w)
    is_multi_item = hidden_states.ndim == 6
    num_items = 0
    if is_multi_item:
        num_items = hidden_states.shape[1]
        if num_items > 1:
            if self.patch_size[0] != 1:
                raise ValueError("For multi-item input, patch_size[0] must be 1")
            hidden_states = torch.cat([hidden_states[:, -1:], hidden_states[:, :-1]], dim=1)
        b, n, c, t, h, w = hidden_states.shape
        hidden_states = hidden_states.permute(0, 2, 1, 3, 4, 5).reshape(b, c, n * t, h, w)

    batch_size, _, ot, oh, ow = hidden_states.shape
    tt = ot // self.patch_size[0]
    th = oh // self.patch_size[1]
    tw = ow // self.patch_size[2]

    img = self.img_in(hidden_states).flatten(2).transpose(1, 2)

    _, vec, txt = self.condition_embedder(timestep, encoder_hidden_states)
    if vec.shape[-1] > self.hidden_size:
        vec = vec.unflatten(1, (6, -1))

    txt_seq_len = txt.shape[1]
    vis_freqs, txt_freqs = self.get_rotary_pos_embed(
        vis_rope_size=[tt, th, tw],
        txt_rope_size=txt_seq_len if self.rope_type == "mrope" else None,
    )
    rotary = (vis_freqs, txt_freqs)

    def call(block: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        return _diffusers.call_block(self, block, h, e, vec, rotary)

    stack = _diffusers.block_stack(_diffusers.BlockList(self.double_blocks, call, "he"))
    first = self.double_blocks[0]

    def modulated_input() -> torch.Tensor:
        shift, scale = first.img_mod(vec)[:2]
        return first.img_norm1(img) * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)  # type: ignore[no-any-return]

    def postprocess(h: torch.Tensor, e: torch.Tensor | None) -> Any:
        out = self.proj_out(self.norm_out(h))
        out = self.unpatchify(out, tt, th, tw)
        if is_multi_item:  # back to (b, n, c, t, h, w), the items in the caller's order
            c_out = out.shape[1]
            out = out.reshape(batch_size, c_out, num_items, -1, oh, ow)
            out = out.permute(0, 2, 1, 3, 4, 5)
            if num_items > 1:
                out = torch.cat([out[:, 1:], out[:, :1]], dim=1)
        return _diffusers.model_output(out, return_dict)

    return CacheContext(
        modulated_input=modulated_input,
        hidden_states=img,
        encoder_hidden_states=txt,
        temb=vec,
        blocks=stack,
        postprocess=postprocess,
        extra_states={"image_rotary_emb": rotary},
        timestep=raw_timestep,
        condition=condition,
    )
