"""Extractor for diffusers ``NucleusMoEImageTransformer2DModel`` (Nucleus-MoE-Image).

Mirrors ``NucleusMoEImageTransformer2DModel.forward`` of diffusers 0.42: the image projection, the text norm and
the text-mask normalisation, the timestep embedding, RoPE over the image shapes and the text length, the joint
image/text attention mask (passed to every block in its attention kwargs), then the mixture-of-experts blocks (the
text is cross-attention K/V: each block returns the image tokens only and the stack hands the *same* text tensor
back), then ``norm_out`` and ``proj_out``. diffusers scales the LoRA layers by hand inside this forward; the
extractor's LoRA scope does the same around the whole cached forward.

Modulated input (TeaCache's indicator): the first block's attention input ``pre_attn_norm(h) * (1 + scale1)`` with
``scale1`` the first chunk of its ``img_mod(temb)``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ditcache.core.context import CacheContext
from ditcache.models import _diffusers
from ditcache.presets.rules import none_published


@_diffusers.diffusers_extractor(
    "NucleusMoEImageTransformer2DModel",
    name="nucleusmoe-image",
    blocks=("transformer_blocks",),
    teacache=none_published("no TeaCache coefficients are published for Nucleus-MoE-Image"),
    magcache=none_published("no MagCache ratios are published for Nucleus-MoE-Image"),
)
def extract(
    self: Any,
    hidden_states: torch.Tensor,
    img_shapes: Any,
    encoder_hidden_states: torch.Tensor | None = None,
    encoder_hidden_states_mask: torch.Tensor | None = None,
    timestep: torch.Tensor | None = None,
    attention_kwargs: dict[str, Any] | None = None,
    return_dict: bool = True,
) -> CacheContext:
    from diffusers.models.transformers.transformer_nucleusmoe_image import _compute_text_seq_len_from_mask

    if timestep is None or encoder_hidden_states is None:
        raise ValueError("NucleusMoEImageTransformer2DModel call: timestep and encoder_hidden_states are required")
    condition = encoder_hidden_states
    raw_timestep = timestep
    hidden_states = self.img_in(hidden_states)
    timestep = timestep.to(hidden_states.dtype)
    encoder_hidden_states = self.txt_norm(encoder_hidden_states)
    text_seq_len, _, encoder_hidden_states_mask = _compute_text_seq_len_from_mask(
        encoder_hidden_states, encoder_hidden_states_mask
    )
    temb = self.time_text_embed(timestep, hidden_states)
    image_rotary_emb = self.pos_embed(img_shapes, max_txt_seq_len=text_seq_len, device=hidden_states.device)

    # (the LoRA scope already removed "scale" from this copy, as diffusers does)
    block_attention_kwargs = attention_kwargs.copy() if attention_kwargs is not None else {}
    if encoder_hidden_states_mask is not None:
        batch_size, image_seq_len = hidden_states.shape[:2]
        image_mask = torch.ones((batch_size, image_seq_len), dtype=torch.bool, device=hidden_states.device)
        block_attention_kwargs["attention_mask"] = torch.cat([image_mask, encoder_hidden_states_mask], dim=1)

    def call(block: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        return _diffusers.call_block(self, block, h, e, temb, image_rotary_emb, block_attention_kwargs)

    stack = _diffusers.block_stack(_diffusers.BlockList(self.transformer_blocks, call, "h"))
    first = self.transformer_blocks[0]
    h0 = hidden_states

    def modulated_input() -> torch.Tensor:
        scale1 = first.img_mod(temb).unsqueeze(1).chunk(4, dim=-1)[0]
        return first.pre_attn_norm(h0) * (1 + scale1)  # type: ignore[no-any-return]

    def postprocess(h: torch.Tensor, e: torch.Tensor | None) -> Any:
        h = self.norm_out(h, temb)
        return _diffusers.model_output(self.proj_out(h), return_dict)

    return CacheContext(
        modulated_input=modulated_input,
        hidden_states=hidden_states,
        encoder_hidden_states=encoder_hidden_states,
        temb=temb,
        blocks=stack,
        postprocess=postprocess,
        extra_states={"image_rotary_emb": image_rotary_emb, "attention_kwargs": block_attention_kwargs},
        timestep=raw_timestep,
        condition=condition,
    )
