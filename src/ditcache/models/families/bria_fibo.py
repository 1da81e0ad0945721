"""Extractor for diffusers ``BriaFiboTransformer2DModel`` (Bria FIBO).

Mirrors ``BriaFiboTransformer2DModel.forward`` of diffusers 0.42: ``time_embed(t)`` (plus the guidance embedding
when ``guidance`` is given), the text projection, RoPE over the text and image ids, one projected text-encoder
layer per block, then the double-stream blocks (returning ``(encoder_hidden_states, hidden_states)``) followed by
the single-stream blocks on ``[text; image]``, then ``norm_out`` and ``proj_out``.

Before *every* block diffusers rewrites the second half of the text stream with that block's text-encoder layer
(``cat([e[..., :D/2], layer_i], -1)``); the extractor does it inside each block's call, so it happens exactly
where diffusers does it, also for the blocks of a slice.

Modulated input (TeaCache's indicator): ``transformer_blocks[0].norm1(hidden_states, emb=temb)[0]``, as for FLUX.1.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ditcache.core.context import CacheContext
from ditcache.models import _diffusers
from ditcache.presets.rules import none_published


@_diffusers.diffusers_extractor(
    "BriaFiboTransformer2DModel",
    name="bria-fibo",
    blocks=("transformer_blocks", "single_transformer_blocks"),
    attention_kwargs="joint_attention_kwargs",
    teacache=none_published("no TeaCache coefficients are published for Bria FIBO"),
    magcache=none_published("no MagCache ratios are published for Bria FIBO"),
)
def extract(
    self: Any,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor | None = None,
    text_encoder_layers: list[torch.Tensor] | None = None,
    pooled_projections: torch.Tensor | None = None,
    timestep: torch.Tensor | None = None,
    img_ids: torch.Tensor | None = None,
    txt_ids: torch.Tensor | None = None,
    guidance: torch.Tensor | None = None,
    joint_attention_kwargs: dict[str, Any] | None = None,
    return_dict: bool = True,
) -> CacheContext:
    if timestep is None or encoder_hidden_states is None or img_ids is None or txt_ids is None:
        raise ValueError(
            "BriaFiboTransformer2DModel call: timestep, encoder_hidden_states, img_ids and txt_ids are required"
        )
    if text_encoder_layers is None:
        raise ValueError("BriaFiboTransformer2DModel call: text_encoder_layers is required (one per block)")
    condition = encoder_hidden_states
    raw_timestep = timestep
    hidden_states = self.x_embedder(hidden_states)
    timestep = timestep.to(hidden_states.dtype)
    if guidance is not None:
        guidance = guidance.to(hidden_states.dtype)

    temb = self.time_embed(timestep, dtype=hidden_states.dtype)
    if guidance is not None:
        temb = temb + self.guidance_embed(guidance, dtype=hidden_states.dtype)

    encoder_hidden_states = self.context_embedder(encoder_hidden_states)

    if len(txt_ids.shape) == 3:
        txt_ids = txt_ids[0]
    if len(img_ids.shape) == 3:
        img_ids = img_ids[0]
    ids = torch.cat((txt_ids, img_ids), dim=0)
    image_rotary_emb = self.pos_embed(ids)

    text_layers = [projection(layer) for projection, layer in zip(self.caption_projection, text_encoder_layers)]
    double = self.transformer_blocks
    single = self.single_transformer_blocks
    layer_of = {id(block): text_layers[i] for i, block in enumerate([*double, *single])}
    half = self.inner_dim // 2

    def with_layer(block: nn.Module, e: torch.Tensor | None) -> torch.Tensor:
        assert e is not None
        return torch.cat([e[:, :, :half], layer_of[id(block)]], dim=-1)

    def call_double(block: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        e = with_layer(block, e)
        return _diffusers.call_block(self, block, h, e, temb, image_rotary_emb, joint_attention_kwargs)

    def call_single(block: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        e = with_layer(block, e)
        joint = _diffusers.call_block(
            self, block, torch.cat([e, h], dim=1), temb, image_rotary_emb, joint_attention_kwargs
        )
        n_text = e.shape[1]
        return joint[:, n_text:, ...], joint[:, :n_text, ...]

    stack = _diffusers.block_stack(
        _diffusers.BlockList(double, call_double, "eh"), _diffusers.BlockList(single, call_single, "he")
    )
    norm = double[0].norm1 if len(double) else single[0].norm

    def postprocess(h: torch.Tensor, e: torch.Tensor | None) -> Any:
        h = self.norm_out(h, temb)
        return _diffusers.model_output(self.proj_out(h), return_dict)

    return CacheContext(
        modulated_input=_diffusers.adaln_input(norm, hidden_states, temb),
        hidden_states=hidden_states,
        encoder_hidden_states=encoder_hidden_states,
        temb=temb,
        blocks=stack,
        postprocess=postprocess,
        extra_states={"image_rotary_emb": image_rotary_emb},
        timestep=raw_timestep,
        condition=condition,
    )
