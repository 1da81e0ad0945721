"""Extractor for diffusers ``JoyImageEditPlusTransformer3DModel`` (JoyImage-Edit-Plus).

Mirrors ``JoyImageEditPlusTransformer3DModel.forward`` of diffusers 0.42: the condition embedder, the pre-patched
tokens embedded one by one, per-sample RoPE over the items of ``shape_list`` (padded), the image + text mask, then
the double-stream blocks (return ``(h, e)``), ``norm_out``, ``proj_out`` and the patch layout. The forward has no
LoRA scale.

Modulated input (TeaCache's indicator): the conditioning vector ``vec``.
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
    teacache=none_published("no TeaCache set is published for JoyImage-Edit-Plus"),
    magcache=none_published("no MagCache curve is published for JoyImage-Edit-Plus"),
)
def extract(
    self: Any,
    hidden_states: torch.Tensor,
    timestep: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    encoder_hidden_states_mask: torch.Tensor | None = None,
    shape_list: Any = None,
    return_dict: bool = True,
) -> CacheContext:
    condition, raw_timestep = encoder_hidden_states, timestep
    batch_size, max_patches, channels, pt, ph, pw = hidden_states.shape
    device = hidden_states.device
    _, vec, txt = self.condition_embedder(timestep, encoder_hidden_states)
    vec = vec.unflatten(1, (6, -1))
    img = self.img_in(hidden_states.reshape(batch_size * max_patches, channels, pt, ph, pw))
    img = img.reshape(batch_size, max_patches, -1)

    cos_list, sin_list = [], []
    for i in range(batch_size):
        cos_parts, sin_parts, offset = [], [], 0
        for t, h, w in shape_list[i]:
            cos, sin = self._get_rotary_pos_embed_for_range((offset, 0, 0), (offset + t, h, w))
            cos_parts.append(cos)
            sin_parts.append(sin)
            offset += t
        s_cos, s_sin = torch.cat(cos_parts, dim=0).to(device), torch.cat(sin_parts, dim=0).to(device)
        pad = max_patches - s_cos.shape[0]
        if pad > 0:
            s_cos = F.pad(s_cos, (0, 0, 0, pad), value=1.0)
            s_sin = F.pad(s_sin, (0, 0, 0, pad), value=0.0)
        cos_list.append(s_cos)
        sin_list.append(s_sin)
    rope = (torch.stack(cos_list), torch.stack(sin_list))

    mask = None
    if encoder_hidden_states_mask is not None:
        img_mask = torch.zeros(batch_size, max_patches, device=device, dtype=encoder_hidden_states_mask.dtype)
        for i in range(batch_size):
            img_mask[i, : sum(t * h * w for t, h, w in shape_list[i])] = 1.0
        mask = torch.cat([img_mask, encoder_hidden_states_mask], dim=1).unsqueeze(1).unsqueeze(1).bool()

    def call(block: nn.Module, x: torch.Tensor, e: torch.Tensor | None) -> Any:
        return _diffusers.call_block(self, block, x, e, vec, rope, mask)

    def postprocess(x: torch.Tensor, e: torch.Tensor | None) -> Any:
        x = self.proj_out(self.norm_out(x))
        x = x.reshape(batch_size, max_patches, pt, ph, pw, self.out_channels).permute(0, 1, 5, 2, 3, 4)
        return _diffusers.model_output(x, return_dict)

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
