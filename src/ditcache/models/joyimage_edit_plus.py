"""Extractor for diffusers ``JoyImageEditPlusTransformer3DModel`` (JoyImage-Edit-Plus).

Mirrors ``JoyImageEditPlusTransformer3DModel.forward`` of diffusers 0.42: the condition embedder (the timestep
vector as 6 modulation rows, and the text), the per-patch embedding of the ``(batch, patches, c, pt, ph, pw)``
input, RoPE per sample over its components with temporal offsets (padded to the longest sample), the joint
image/text mask from ``shape_list`` and the text mask, then the dual-stream ``double_blocks`` (returning
``(hidden_states, encoder_hidden_states)``), then ``norm_out``, ``proj_out`` and the reshape back to patches.

Modulated input (TeaCache's indicator): the first block's image stream after its first modulation,
``img_norm1(h) * (1 + scale) + shift`` with ``shift, scale`` the first two outputs of ``img_mod(vec)``.
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
    "JoyImageEditPlusTransformer3DModel",
    name="joyimage-edit-plus",
    blocks=("double_blocks",),
    attention_kwargs=None,
    teacache=none_published("no TeaCache coefficients are published for JoyImage-Edit-Plus"),
    magcache=none_published("no MagCache ratios are published for JoyImage-Edit-Plus"),
)
def extract(
    self: Any,
    hidden_states: torch.Tensor,
    timestep: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    encoder_hidden_states_mask: torch.Tensor | None = None,
    shape_list: list[list[tuple[int, int, int]]] | None = None,
    return_dict: bool = True,
) -> CacheContext:
    if shape_list is None:
        raise ValueError("JoyImageEditPlusTransformer3DModel call: shape_list is required")
    condition = encoder_hidden_states
    raw_timestep = timestep
    batch_size, max_num_patches, channels, pt, ph, pw = hidden_states.shape
    device = hidden_states.device

    _, vec, txt = self.condition_embedder(timestep, encoder_hidden_states)
    vec = vec.unflatten(1, (6, -1))

    x = hidden_states.reshape(batch_size * max_num_patches, channels, pt, ph, pw)
    x = self.img_in(x)  # (B * N, D, 1, 1, 1)
    img = x.reshape(batch_size, max_num_patches, -1)

    # RoPE per sample: its components one after the other in time, padded to the longest sample
    cos_list, sin_list = [], []
    for i in range(batch_size):
        cos_parts, sin_parts = [], []
        t_offset = 0
        for t, h, w in shape_list[i]:
            cos_emb, sin_emb = self._get_rotary_pos_embed_for_range((t_offset, 0, 0), (t_offset + t, h, w))
            cos_parts.append(cos_emb)
            sin_parts.append(sin_emb)
            t_offset += t
        s_cos = torch.cat(cos_parts, dim=0).to(device)
        s_sin = torch.cat(sin_parts, dim=0).to(device)
        pad_len = max_num_patches - s_cos.shape[0]
        if pad_len > 0:
            s_cos = F.pad(s_cos, (0, 0, 0, pad_len), value=1.0)
            s_sin = F.pad(s_sin, (0, 0, 0, pad_len), value=0.0)
        cos_list.append(s_cos)
        sin_list.append(s_sin)
    vis_freqs = (torch.stack(cos_list), torch.stack(sin_list))

    attention_mask = None
    if encoder_hidden_states_mask is not None:  # (B, 1, 1, patches + text): the real patches and text tokens
        img_mask = torch.zeros(batch_size, max_num_patches, device=device, dtype=encoder_hidden_states_mask.dtype)
        for i in range(batch_size):
            img_mask[i, : sum(t * h * w for t, h, w in shape_list[i])] = 1.0
        full_mask = torch.cat([img_mask, encoder_hidden_states_mask], dim=1)
        attention_mask = full_mask.unsqueeze(1).unsqueeze(1).bool()

    def call(block: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        return _diffusers.call_block(self, block, h, e, vec, vis_freqs, attention_mask)

    stack = _diffusers.block_stack(_diffusers.BlockList(self.double_blocks, call, "he"))
    first = self.double_blocks[0]

    def modulated_input() -> torch.Tensor:
        shift, scale = first.img_mod(vec)[:2]
        return first.img_norm1(img) * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)  # type: ignore[no-any-return]

    def postprocess(h: torch.Tensor, e: torch.Tensor | None) -> Any:
        out = self.proj_out(self.norm_out(h))
        out = out.reshape(batch_size, max_num_patches, pt, ph, pw, self.out_channels).permute(0, 1, 5, 2, 3, 4)
        return _diffusers.model_output(out, return_dict)

    return CacheContext(
        modulated_input=modulated_input,
        hidden_states=img,
        encoder_hidden_states=txt,
        temb=vec,
        blocks=stack,
        postprocess=postprocess,
        extra_states={"image_rotary_emb": vis_freqs, "attention_mask": attention_mask},
        timestep=raw_timestep,
        condition=condition,
    )
