"""Extractor for diffusers ``HunyuanVideo15Transformer3DModel`` (HunyuanVideo-1.5 T2V/I2V, step-distilled).

Mirrors ``HunyuanVideo15Transformer3DModel.forward`` of diffusers 0.42: RoPE, the timestep embedding (with the
meanflow ``timestep_r``), patch embedding, the three condition streams (MLLM text through the token refiner, ByT5
text, image embeddings; each tagged by ``cond_type_embed``) packed per sample as valid-first with their masks, then
the dual-stream blocks (return ``(h, e)``), ``norm_out``, ``proj_out`` and unpatchify.

Modulated input (TeaCache's indicator): ``transformer_blocks[0].norm1(h, emb=temb)[0]``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ditcache.core.context import CacheContext
from ditcache.models import _diffusers
from ditcache.presets.rules import PresetRule, none_published


def _magcache(config: Any) -> tuple[str, bool]:
    return "hunyuanvideo1.5-20steps", False


@_diffusers.diffusers_extractor(
    "HunyuanVideo15Transformer3DModel",
    name="hunyuanvideo15",
    blocks=("transformer_blocks",),
    teacache=none_published("no TeaCache set is published for HunyuanVideo-1.5"),
    magcache=PresetRule(
        ("hunyuanvideo1.5-20steps", "hunyuanvideo1.5-40steps"),
        _magcache,
        "ComfyUI-MagCache's T2V curves (20 and 40 steps; pass model='hunyuanvideo1.5-40steps' for > 20 steps); "
        "the class does not say which checkpoint it is, so the choice is never marked exact",
    ),
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
    image_embeds: torch.Tensor | None = None,
    attention_kwargs: dict[str, Any] | None = None,
    return_dict: bool = True,
) -> CacheContext:
    if encoder_hidden_states_2 is None or encoder_attention_mask_2 is None or image_embeds is None:
        raise ValueError(
            "HunyuanVideo15Transformer3DModel call: encoder_hidden_states_2, encoder_attention_mask_2 and "
            "image_embeds are required"
        )
    condition, raw_timestep = encoder_hidden_states, timestep
    grid = _diffusers.hunyuan_grid(self, hidden_states)

    image_rotary_emb = self.rope(hidden_states)
    temb = self.time_embed(timestep, timestep_r=timestep_r)
    hidden_states = self.x_embedder(hidden_states)
    encoder_hidden_states, encoder_attention_mask = _pack_conditions(
        self,
        timestep,
        encoder_hidden_states,
        encoder_attention_mask,
        encoder_hidden_states_2,
        encoder_attention_mask_2,
        image_embeds,
    )

    def call(block: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        return _diffusers.call_block(self, block, h, e, temb, encoder_attention_mask, image_rotary_emb)

    def postprocess(h: torch.Tensor, e: torch.Tensor | None) -> Any:
        return _diffusers.hunyuan_output(self, temb, h, grid, return_dict)

    return CacheContext(
        modulated_input=_diffusers.adaln_input(self.transformer_blocks[0].norm1, hidden_states, temb),
        hidden_states=hidden_states,
        encoder_hidden_states=encoder_hidden_states,
        temb=temb,
        blocks=_diffusers.block_stack(_diffusers.BlockList(self.transformer_blocks, call, "he")),
        postprocess=postprocess,
        extra_states={"attention_mask": encoder_attention_mask, "rotary_emb": image_rotary_emb},
        timestep=raw_timestep,
        condition=condition,
    )


def _pack_conditions(
    self: Any,
    timestep: torch.Tensor,
    text: torch.Tensor,
    text_mask: torch.Tensor,
    text_2: torch.Tensor,
    text_mask_2: torch.Tensor,
    image_embeds: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The three condition streams, tagged and packed per sample (valid tokens first), as diffusers does."""
    batch_size = text.shape[0]
    text = self.context_embedder(text, timestep, text_mask)
    text = text + self.cond_type_embed(torch.zeros_like(text[:, :, 0], dtype=torch.long))
    text_2 = self.context_embedder_2(text_2)
    text_2 = text_2 + self.cond_type_embed(torch.ones_like(text_2[:, :, 0], dtype=torch.long))

    image = self.image_embedder(image_embeds)
    if torch.all(image_embeds == 0):  # text-to-video: the image tokens are zeroed and masked out
        image = image * 0.0
        image_mask = torch.zeros((batch_size, image.shape[1]), dtype=text_mask.dtype, device=text_mask.device)
    else:
        image_mask = torch.ones((batch_size, image.shape[1]), dtype=text_mask.dtype, device=text_mask.device)
    image = image + self.cond_type_embed(2 * torch.ones_like(image[:, :, 0], dtype=torch.long))

    text_mask, text_mask_2, image_mask = text_mask.bool(), text_mask_2.bool(), image_mask.bool()
    states, masks = [], []
    for t1, m1, t2, m2, im, mi in zip(text, text_mask, text_2, text_mask_2, image, image_mask):
        states.append(
            torch.cat([im[mi], t2[m2], t1[m1], im[~mi], torch.zeros_like(t2[~m2]), torch.zeros_like(t1[~m1])], dim=0)
        )
        masks.append(torch.cat([mi[mi], m2[m2], m1[m1], mi[~mi], m2[~m2], m1[~m1]], dim=0))
    return torch.stack(states), torch.stack(masks)
