"""Extractor for diffusers ``QwenImageTransformer2DModel`` (Qwen-Image, Qwen-Image-Edit and variants).

Mirrors ``QwenImageTransformer2DModel.forward`` of diffusers 0.42: ``img_in``, the ``zero_cond_t`` timestep
doubling and ``modulate_index`` (Qwen-Image-Edit-2511: the first image of each sample is modulated with the
real timestep, the reference images with timestep 0), ``txt_norm`` / ``txt_in``, the text-mask normalisation
(``compute_text_seq_len_from_mask``), guidance and ``additional_t_cond`` conditioning, RoPE, then the
dual-stream blocks (ControlNet residuals added per block as diffusers does), then ``norm_out`` and
``proj_out``.

Modulated input (TeaCache's indicator): the first block's ``img_norm1`` output modulated with the first half
of its ``img_mod(temb)`` parameters,
``blocks[0]._modulate(blocks[0].img_norm1(h), img_mod1, modulate_index)[0]`` (the choice of vLLM-Omni's
Qwen-Image TeaCache extractor).
"""

from __future__ import annotations

from collections.abc import Sequence
from math import prod
from typing import Any

import torch
from torch import nn

from ditcache.core.context import CacheContext
from ditcache.models import _diffusers
from ditcache.presets.rules import fixed


@_diffusers.diffusers_extractor(
    "QwenImageTransformer2DModel",
    name="qwenimage",
    blocks=("transformer_blocks",),
    attention_kwargs="attention_kwargs",
    teacache=fixed("qwen-image", {"num_layers": 60}),
    magcache=fixed("qwen-image", {"num_layers": 60}),
)
def extract(
    self: Any,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor | None = None,
    encoder_hidden_states_mask: torch.Tensor | None = None,
    timestep: torch.Tensor | None = None,
    img_shapes: list[Any] | None = None,
    guidance: torch.Tensor | None = None,
    attention_kwargs: dict[str, Any] | None = None,
    controlnet_block_samples: Sequence[torch.Tensor] | None = None,
    additional_t_cond: torch.Tensor | None = None,
    return_dict: bool = True,
) -> CacheContext:
    from diffusers.models.transformers.transformer_qwenimage import compute_text_seq_len_from_mask

    if timestep is None or encoder_hidden_states is None:
        raise ValueError("QwenImageTransformer2DModel call: timestep and encoder_hidden_states are required")
    condition = encoder_hidden_states
    raw_timestep = timestep
    hidden_states = self.img_in(hidden_states)

    timestep = timestep.to(hidden_states.dtype)

    modulate_index: torch.Tensor | None
    if self.zero_cond_t:
        if img_shapes is None:
            raise ValueError("QwenImageTransformer2DModel call: img_shapes is required when zero_cond_t is set")
        timestep = torch.cat([timestep, timestep * 0], dim=0)
        modulate_index = torch.tensor(
            [[0] * prod(sample[0]) + [1] * sum([prod(s) for s in sample[1:]]) for sample in img_shapes],
            device=timestep.device,
            dtype=torch.int,
        )
    else:
        modulate_index = None

    encoder_hidden_states = self.txt_norm(encoder_hidden_states)
    encoder_hidden_states = self.txt_in(encoder_hidden_states)

    # The RoPE length is the padded text length; the mask is normalised to bool (or None).
    text_seq_len, _, encoder_hidden_states_mask = compute_text_seq_len_from_mask(
        encoder_hidden_states, encoder_hidden_states_mask
    )

    if guidance is not None:
        guidance = guidance.to(hidden_states.dtype) * 1000

    temb = (
        self.time_text_embed(timestep, hidden_states, additional_t_cond)
        if guidance is None
        else self.time_text_embed(timestep, guidance, hidden_states, additional_t_cond)
    )

    image_rotary_emb = self.pos_embed(img_shapes, max_txt_seq_len=text_seq_len, device=hidden_states.device)

    blocks = self.transformer_blocks
    mask = encoder_hidden_states_mask

    def call(block: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        return _diffusers.call_block(self, block, h, e, mask, temb, image_rotary_emb, attention_kwargs, modulate_index)

    stack = _diffusers.block_stack(
        _diffusers.BlockList(blocks, call, "eh", _diffusers.controlnet_residuals(controlnet_block_samples, len(blocks)))
    )

    first = blocks[0]

    def modulated_input() -> torch.Tensor:  # computed only if a cache asks for it (TeaCache)
        img_mod1 = first.img_mod(temb).chunk(2, dim=-1)[0]
        return first._modulate(first.img_norm1(hidden_states), img_mod1, modulate_index)[0]  # type: ignore[no-any-return]

    def postprocess(h: torch.Tensor, e: torch.Tensor | None) -> Any:
        out_temb = temb.chunk(2, dim=0)[0] if self.zero_cond_t else temb
        h = self.norm_out(h, out_temb)
        output = self.proj_out(h)
        return _diffusers.model_output(output, return_dict)

    return CacheContext(
        modulated_input=modulated_input,
        hidden_states=hidden_states,
        encoder_hidden_states=encoder_hidden_states,
        temb=temb,
        blocks=stack,
        postprocess=postprocess,
        extra_states={
            "image_rotary_emb": image_rotary_emb,
            "encoder_hidden_states_mask": mask,
            "modulate_index": modulate_index,
        },
        timestep=raw_timestep,
        condition=condition,
    )
