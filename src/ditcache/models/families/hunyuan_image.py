"""Extractor for diffusers ``HunyuanImageTransformer2DModel`` (HunyuanImage-2.1 base, distilled, refiner).

Mirrors ``HunyuanImageTransformer2DModel.forward`` of diffusers 0.42: RoPE, the timestep/guidance/meanflow
embedding, patch embedding (2-D images or 3-D refiner latents), the token-refined MLLM text and the optional ByT5
text packed per sample (valid tokens first), the joint attention mask, then the double- and single-stream blocks
(both return ``(h, e)``), ``norm_out``, ``proj_out`` and unpatchify. The checkpointed call passes the mask and
RoPE as keywords, as diffusers does.

Modulated input (TeaCache's indicator): ``transformer_blocks[0].norm1(h, emb=temb)[0]``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ditcache.core.context import CacheContext
from ditcache.models import _diffusers
from ditcache.presets.rules import none_published


@_diffusers.diffusers_extractor(
    "HunyuanImageTransformer2DModel",
    name="hunyuanimage",
    blocks=("transformer_blocks", "single_transformer_blocks"),
    teacache=none_published("no TeaCache set is published for HunyuanImage-2.1"),
    magcache=none_published("no MagCache curve is published for HunyuanImage-2.1"),
)
def extract(
    self: Any,
    hidden_states: torch.Tensor,
    timestep: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    encoder_attention_mask: torch.Tensor,
    timestep_r: torch.Tensor | None = None,
    encoder_hidden_states_2: torch.Tensor | None = None,
    encoder_attention_mask_2: torch.Tensor | None = None,
    guidance: torch.Tensor | None = None,
    attention_kwargs: dict[str, Any] | None = None,
    return_dict: bool = True,
) -> CacheContext:
    condition, raw_timestep = encoder_hidden_states, timestep
    if hidden_states.ndim not in (4, 5):
        raise ValueError(f"hidden_states must be a 4D or 5D tensor, got {hidden_states.shape}")
    batch_size = hidden_states.shape[0]
    sizes = tuple(hidden_states.shape[2:])
    patch = self.config.patch_size
    post_sizes = tuple(d // p for d, p in zip(sizes, patch))

    image_rotary_emb = self.rope(hidden_states)
    encoder_attention_mask = encoder_attention_mask.bool()
    temb = self.time_guidance_embed(timestep, guidance=guidance, timestep_r=timestep_r)
    hidden_states = self.x_embedder(hidden_states)
    encoder_hidden_states = self.context_embedder(encoder_hidden_states, timestep, encoder_attention_mask)
    if (
        self.context_embedder_2 is not None
        and encoder_hidden_states_2 is not None
        and encoder_attention_mask_2 is not None
    ):
        text_2 = self.context_embedder_2(encoder_hidden_states_2)
        mask_2 = encoder_attention_mask_2.bool()
        states, masks = [], []
        for t1, m1, t2, m2 in zip(encoder_hidden_states, encoder_attention_mask, text_2, mask_2):
            states.append(torch.cat([t2[m2], t1[m1], t2[~m2], t1[~m1]], dim=0))
            masks.append(torch.cat([m2[m2], m1[m1], m2[~m2], m1[~m1]], dim=0))
        encoder_hidden_states, encoder_attention_mask = torch.stack(states), torch.stack(masks)
    attention_mask = torch.nn.functional.pad(encoder_attention_mask, (hidden_states.shape[1], 0), value=True)
    attention_mask = attention_mask.unsqueeze(1).unsqueeze(2)

    def call(block: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        if _diffusers.checkpointing(self):
            return self._gradient_checkpointing_func(
                block, h, e, temb, attention_mask=attention_mask, image_rotary_emb=image_rotary_emb
            )
        return block(h, e, temb, attention_mask=attention_mask, image_rotary_emb=image_rotary_emb)

    def postprocess(h: torch.Tensor, e: torch.Tensor | None) -> Any:
        h = self.proj_out(self.norm_out(h, temb))
        out_channels = self.config.out_channels
        h = h.reshape(batch_size, *post_sizes, out_channels, *patch)
        ndim = len(post_sizes)
        order = [0, ndim + 1]
        for i in range(ndim):
            order.extend([i + 1, ndim + 2 + i])
        h = h.permute(*order)
        return _diffusers.model_output(
            h.reshape(batch_size, out_channels, *(s * p for s, p in zip(post_sizes, patch))), return_dict
        )

    first = self.transformer_blocks[0] if len(self.transformer_blocks) else self.single_transformer_blocks[0]
    return CacheContext(
        modulated_input=_diffusers.adaln_input(
            first.norm1 if hasattr(first, "norm1") else first.norm, hidden_states, temb
        ),
        hidden_states=hidden_states,
        encoder_hidden_states=encoder_hidden_states,
        temb=temb,
        blocks=_diffusers.block_stack(
            _diffusers.BlockList(self.transformer_blocks, call, "he"),
            _diffusers.BlockList(self.single_transformer_blocks, call, "he"),
        ),
        postprocess=postprocess,
        extra_states={"attention_mask": attention_mask, "rotary_emb": image_rotary_emb},
        timestep=raw_timestep,
        condition=condition,
    )
