"""Extractor for diffusers ``OmniGenTransformer2DModel`` (OmniGen v1).

Mirrors ``OmniGenTransformer2DModel.forward`` of diffusers 0.42: the output-image patch embedding, the timestep as
a token and as the output-norm embedding, the multimodal condition tokens (text token embeddings with the input
images' patch embeddings written over their placeholders), one packed sequence ``[condition; time; image]``, the
additive mask from a 3-D keep-mask, the LLM RoPE over ``position_ids``, then the Phi-3 decoder layers (a single
stream; there is no separate text stream), then the final norm, the output-image tokens through ``norm_out`` and
``proj_out``, and unpatchify. The model has no LoRA-scale argument.

Modulated input (TeaCache's indicator): ``layers[0].input_layernorm(hidden_states)``: OmniGen has no AdaLN, the
timestep enters as a token of the sequence.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ditcache.core.context import CacheContext
from ditcache.models import _diffusers
from ditcache.presets.rules import none_published


@_diffusers.diffusers_extractor(
    "OmniGenTransformer2DModel",
    name="omnigen",
    blocks=("layers",),
    attention_kwargs=None,
    teacache=none_published("no TeaCache coefficients are published for OmniGen"),
    magcache=none_published("no MagCache ratios are published for OmniGen (MagCache4OmniGen2 is OmniGen2)"),
)
def extract(
    self: Any,
    hidden_states: torch.Tensor,
    timestep: Any,
    input_ids: torch.Tensor,
    input_img_latents: list[torch.Tensor],
    input_image_sizes: dict[int, list[int]],
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor,
    return_dict: bool = True,
) -> CacheContext:
    condition = input_ids
    raw_timestep = timestep
    batch_size, _num_channels, height, width = hidden_states.shape
    p = self.config.patch_size
    post_patch_height, post_patch_width = height // p, width // p

    hidden_states = self.patch_embedding(hidden_states, is_input_image=False)
    num_tokens_for_output_image = hidden_states.size(1)

    timestep_proj = self.time_proj(timestep).type_as(hidden_states)
    time_token = self.time_token(timestep_proj).unsqueeze(1)
    temb = self.t_embedder(timestep_proj)

    condition_tokens = self._get_multimodal_embeddings(input_ids, input_img_latents, input_image_sizes)
    if condition_tokens is not None:
        hidden_states = torch.cat([condition_tokens, time_token, hidden_states], dim=1)
    else:
        hidden_states = torch.cat([time_token, hidden_states], dim=1)

    seq_length = hidden_states.size(1)
    position_ids = position_ids.view(-1, seq_length).long()

    if attention_mask is not None and attention_mask.dim() == 3:  # keep-mask -> additive mask
        min_dtype = torch.finfo(hidden_states.dtype).min
        attention_mask = (1 - attention_mask) * min_dtype
        attention_mask = attention_mask.unsqueeze(1).type_as(hidden_states)

    image_rotary_emb = self.rope(hidden_states, position_ids)

    def call(layer: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        if torch.is_grad_enabled() and self.gradient_checkpointing:
            return _diffusers.call_block(self, layer, h, attention_mask, image_rotary_emb)
        return layer(h, attention_mask=attention_mask, image_rotary_emb=image_rotary_emb)

    stack = _diffusers.block_stack(_diffusers.BlockList(self.layers, call, "h"))
    first = self.layers[0]
    h0 = hidden_states

    def modulated_input() -> torch.Tensor:
        return first.input_layernorm(h0)  # type: ignore[no-any-return]

    def postprocess(h: torch.Tensor, e: torch.Tensor | None) -> Any:
        h = self.norm(h)
        h = h[:, -num_tokens_for_output_image:]
        h = self.norm_out(h, temb=temb)
        h = self.proj_out(h)
        h = h.reshape(batch_size, post_patch_height, post_patch_width, p, p, -1)
        output = h.permute(0, 5, 1, 3, 2, 4).flatten(4, 5).flatten(2, 3)
        return _diffusers.model_output(output, return_dict)

    return CacheContext(
        modulated_input=modulated_input,
        hidden_states=hidden_states,
        encoder_hidden_states=None,
        temb=temb,
        blocks=stack,
        postprocess=postprocess,
        extra_states={"image_rotary_emb": image_rotary_emb, "attention_mask": attention_mask},
        timestep=raw_timestep if isinstance(raw_timestep, torch.Tensor | float) else None,
        condition=condition,
    )
