"""Extractor for diffusers ``ChromaTransformer2DModel`` (Chroma1-HD / Base / Flash, FLUX.1-schnell derivative).

Mirrors ``ChromaTransformer2DModel.forward`` of diffusers 0.42: ``x_embedder``, the distilled guidance layer
(one pooled modulation tensor, sliced per block: each block's ``temb`` is computed from its index), the context
embedder, RoPE, IP-Adapter projection, then the double-stream blocks (return ``(e, h)``; ControlNet residuals as
diffusers adds them, XLabs repeat included) and the single-stream blocks on ``cat([e, h])`` (``"joint"``
convention; single-list ControlNet residuals go to the image tokens only, as diffusers does), ``norm_out`` and
``proj_out``. As in diffusers, the checkpointed path passes neither ``joint_attention_kwargs`` nor (single blocks)
the attention mask.

Modulated input (TeaCache's indicator): ``transformer_blocks[0].norm1(h, emb=temb_img_0)[0]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ditcache.core.context import CacheContext
from ditcache.models import _diffusers
from ditcache.presets.rules import fixed, none_published


@_diffusers.diffusers_extractor(
    "ChromaTransformer2DModel",
    name="chroma",
    blocks=("transformer_blocks", "single_transformer_blocks"),
    attention_kwargs="joint_attention_kwargs",
    teacache=none_published("no TeaCache set is published for Chroma"),
    magcache=fixed("chroma", {"num_layers": 19, "num_single_layers": 38}, "ComfyUI-MagCache's Chroma curve"),
)
def extract(
    self: Any,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    timestep: torch.Tensor,
    img_ids: torch.Tensor,
    txt_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    joint_attention_kwargs: dict[str, Any] | None = None,
    controlnet_block_samples: Sequence[torch.Tensor] | None = None,
    controlnet_single_block_samples: Sequence[torch.Tensor] | None = None,
    return_dict: bool = True,
    controlnet_blocks_repeat: bool = False,
) -> CacheContext:
    condition, raw_timestep = encoder_hidden_states, timestep
    hidden_states = self.x_embedder(hidden_states)
    timestep = timestep.to(hidden_states.dtype) * 1000
    pooled_temb = self.distilled_guidance_layer(self.time_text_embed(timestep))
    encoder_hidden_states = self.context_embedder(encoder_hidden_states)
    if txt_ids.ndim == 3:
        txt_ids = txt_ids[0]
    if img_ids.ndim == 3:
        img_ids = img_ids[0]
    image_rotary_emb = self.pos_embed(torch.cat((txt_ids, img_ids), dim=0))
    if joint_attention_kwargs is not None and "ip_adapter_image_embeds" in joint_attention_kwargs:
        ip_adapter_image_embeds = joint_attention_kwargs.pop("ip_adapter_image_embeds")
        joint_attention_kwargs.update({"ip_hidden_states": self.encoder_hid_proj(ip_adapter_image_embeds)})

    double, single = self.transformer_blocks, self.single_transformer_blocks
    n_double, n_single = len(double), len(single)
    index_of = {id(block): i for i, block in enumerate(double)} | {id(block): i for i, block in enumerate(single)}

    def double_temb(index: int) -> torch.Tensor:
        img = 3 * n_single + 6 * index
        txt = 3 * n_single + 6 * n_double + 6 * index
        return torch.cat((pooled_temb[:, img : img + 6], pooled_temb[:, txt : txt + 6]), dim=1)

    def call_double(block: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        temb = double_temb(index_of[id(block)])
        if _diffusers.checkpointing(self):
            return self._gradient_checkpointing_func(block, h, e, temb, image_rotary_emb, attention_mask)
        return block(h, e, temb, image_rotary_emb, attention_mask, joint_attention_kwargs)

    def call_single(block: nn.Module, joint: torch.Tensor, _: torch.Tensor | None) -> Any:
        start = 3 * index_of[id(block)]
        temb = pooled_temb[:, start : start + 3]
        if _diffusers.checkpointing(self):
            return self._gradient_checkpointing_func(block, joint, temb, image_rotary_emb)
        return block(joint, temb, image_rotary_emb, attention_mask, joint_attention_kwargs)

    stack = _diffusers.block_stack(
        _diffusers.BlockList(
            double,
            call_double,
            "eh",
            _diffusers.controlnet_residuals(controlnet_block_samples, n_double, repeat=controlnet_blocks_repeat),
        ),
        _diffusers.BlockList(
            single, call_single, "joint", _diffusers.controlnet_residuals(controlnet_single_block_samples, n_single)
        ),
    )

    def modulated_input() -> torch.Tensor:
        return double[0].norm1(hidden_states, emb=double_temb(0)[:, :6])[0]  # type: ignore[no-any-return]

    def postprocess(h: torch.Tensor, e: torch.Tensor | None) -> Any:
        output = self.proj_out(self.norm_out(h, pooled_temb[:, -2:]))
        return _diffusers.model_output(output, return_dict)

    return CacheContext(
        modulated_input=modulated_input if n_double else pooled_temb,
        hidden_states=hidden_states,
        encoder_hidden_states=encoder_hidden_states,
        temb=pooled_temb,
        blocks=stack,
        postprocess=postprocess,
        extra_states={"image_rotary_emb": image_rotary_emb, "attention_mask": attention_mask},
        timestep=raw_timestep,
        condition=condition,
    )
