"""Extractor for diffusers ``HiDreamImageTransformer2DModel`` (HiDream-I1 Full / Dev / Fast, HiDream-E1).

Mirrors ``HiDreamImageTransformer2DModel.forward`` of diffusers 0.42: patchify (masks for non-square images),
the timestep + pooled embedding, the caption projections of the chosen Llama layers and T5, RoPE, then the
double-stream blocks and the single-stream blocks. Every block re-injects "its" Llama layer: a double block sees
``cat([e, llama_i])`` and the text stream keeps the first ``len(e)`` tokens of its output; a single block runs on
``cat([h, e, llama_i])`` (image first) and the stack splits its output back into ``(h, e)``. Then the final layer
and unpatchify.

Modulated input (TeaCache's indicator): the timestep embedding ``temb`` (TeaCache4HiDream-I1).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ditcache.core.context import CacheContext
from ditcache.models import _diffusers
from ditcache.presets.rules import fixed, none_published


@_diffusers.diffusers_extractor(
    "HiDreamImageTransformer2DModel",
    name="hidream",
    blocks=("double_stream_blocks", "single_stream_blocks"),
    teacache=fixed(
        "hidream-i1-full",
        {"num_layers": 16, "num_single_layers": 32},
        "Full, Dev and Fast share the architecture: pass model='hidream-i1-dev' or 'hidream-i1-fast' for those",
    ),
    magcache=none_published("no MagCache curve is published for HiDream-I1"),
)
def extract(
    self: Any,
    hidden_states: torch.Tensor,
    timesteps: torch.Tensor,
    encoder_hidden_states_t5: torch.Tensor,
    encoder_hidden_states_llama3: torch.Tensor,
    pooled_embeds: torch.Tensor,
    img_ids: torch.Tensor | None = None,
    img_sizes: Any = None,
    hidden_states_masks: torch.Tensor | None = None,
    attention_kwargs: dict[str, Any] | None = None,
    return_dict: bool = True,
) -> CacheContext:
    if hidden_states_masks is not None and (img_ids is None or img_sizes is None):
        raise ValueError("if `hidden_states_masks` is passed, `img_ids` and `img_sizes` must also be passed.")
    condition, raw_timestep = encoder_hidden_states_t5, timesteps
    batch_size, dtype = hidden_states.shape[0], hidden_states.dtype
    if hidden_states_masks is None:
        hidden_states, hidden_states_masks, img_sizes, img_ids = self.patchify(hidden_states)
    hidden_states = self.x_embedder(hidden_states)
    temb = self.t_embedder(timesteps, dtype) + self.p_embedder(pooled_embeds)

    llama = [encoder_hidden_states_llama3[k] for k in self.config.llama_layers]
    if self.caption_projection is not None:
        llama = [
            proj(x).view(batch_size, -1, hidden_states.shape[-1]) for proj, x in zip(self.caption_projection, llama)
        ]
        t5 = self.caption_projection[-1](encoder_hidden_states_t5).view(batch_size, -1, hidden_states.shape[-1])
        llama.append(t5)
    assert img_ids is not None
    txt_ids = torch.zeros(
        batch_size,
        llama[-1].shape[1] + llama[-2].shape[1] + llama[0].shape[1],
        3,
        device=img_ids.device,
        dtype=img_ids.dtype,
    )
    image_rotary_emb = self.pe_embedder(torch.cat((img_ids, txt_ids), dim=1))
    device = hidden_states.device
    encoder_hidden_states = torch.cat([llama[-1].to(device), llama[-2].to(device)], dim=1)
    text_len = encoder_hidden_states.shape[1]
    image_len = hidden_states.shape[1]

    double, single = self.double_stream_blocks, self.single_stream_blocks
    index_of = {id(block): i for i, block in enumerate(double)} | {
        id(block): len(double) + i for i, block in enumerate(single)
    }
    masks = hidden_states_masks
    single_masks = masks
    if masks is not None:
        extra = llama[len(double) - 1].shape[1] if len(double) else 0
        ones = torch.ones((batch_size, text_len + extra), device=masks.device, dtype=masks.dtype)
        single_masks = torch.cat([masks, ones], dim=1)

    def call_double(block: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        assert e is not None
        cur = torch.cat([e, llama[index_of[id(block)]].to(device)], dim=1)
        h, e_out = _diffusers.call_block(self, block, h, masks, cur, temb, image_rotary_emb)
        return h, e_out[:, :text_len]

    def call_single(block: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        assert e is not None
        x = torch.cat([h, e, llama[index_of[id(block)]].to(device)], dim=1)
        x = _diffusers.call_block(self, block, x, single_masks, None, temb, image_rotary_emb)
        return x[:, :image_len], x[:, image_len : image_len + text_len]

    def postprocess(h: torch.Tensor, e: torch.Tensor | None) -> Any:
        output = self.unpatchify(self.final_layer(h, temb), img_sizes, self.training)
        return _diffusers.model_output(output, return_dict)

    return CacheContext(
        modulated_input=temb,
        hidden_states=hidden_states,
        encoder_hidden_states=encoder_hidden_states,
        temb=temb,
        blocks=_diffusers.block_stack(
            _diffusers.BlockList(double, call_double, "he"), _diffusers.BlockList(single, call_single, "he")
        ),
        postprocess=postprocess,
        extra_states={"image_rotary_emb": image_rotary_emb, "hidden_states_masks": masks},
        timestep=raw_timestep,
        condition=condition,
    )
