"""Extractor for diffusers ``HunyuanVideoTransformer3DModel`` (HunyuanVideo T2V, I2V, SkyReels-V1, FastHunyuan).

Mirrors ``HunyuanVideoTransformer3DModel.forward`` of diffusers 0.42: RoPE, the timestep/pooled/guidance embedding
(and I2V's ``token_replace_emb``), patch embedding, the text token refiner, the joint attention mask from the text
mask, then the double-stream and single-stream blocks (both return ``(h, e)``; the single ones concatenate inside),
``norm_out``, ``proj_out`` and unpatchify.

Modulated input (TeaCache's indicator): ``transformer_blocks[0].norm1(h, emb=temb)[0]`` (TeaCache4HunyuanVideo); the
token-replace norm of the I2V variant is called with its extra arguments.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ditcache.core.context import CacheContext
from ditcache.models import _diffusers
from ditcache.presets.rules import fixed

_HUNYUAN = {"num_layers": 20, "num_single_layers": 40}


@_diffusers.diffusers_extractor(
    "HunyuanVideoTransformer3DModel",
    name="hunyuanvideo",
    blocks=("transformer_blocks", "single_transformer_blocks"),
    teacache=fixed("hunyuanvideo", _HUNYUAN),
    magcache=fixed("hunyuanvideo-720p", _HUNYUAN, "the 544p curve by name: 'hunyuanvideo-544p'"),
)
def extract(
    self: Any,
    hidden_states: torch.Tensor,
    timestep: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    encoder_attention_mask: torch.Tensor,
    pooled_projections: torch.Tensor,
    guidance: torch.Tensor | None = None,
    attention_kwargs: dict[str, Any] | None = None,
    return_dict: bool = True,
) -> CacheContext:
    condition, raw_timestep = encoder_hidden_states, timestep
    grid = _diffusers.hunyuan_grid(self, hidden_states)
    batch_size, _, post_h, post_w = grid[:4]
    first_frame_num_tokens = 1 * post_h * post_w

    image_rotary_emb = self.rope(hidden_states)
    temb, token_replace_emb = self.time_text_embed(timestep, pooled_projections, guidance)
    hidden_states = self.x_embedder(hidden_states)
    encoder_hidden_states = self.context_embedder(encoder_hidden_states, timestep, encoder_attention_mask)

    latent_len, condition_len = hidden_states.shape[1], encoder_hidden_states.shape[1]
    sequence_length = latent_len + condition_len
    attention_mask = torch.ones(batch_size, sequence_length, device=hidden_states.device, dtype=torch.bool)
    effective_length = latent_len + encoder_attention_mask.sum(dim=1, dtype=torch.int)
    indices = torch.arange(sequence_length, device=hidden_states.device).unsqueeze(0)
    attention_mask = attention_mask.masked_fill(indices >= effective_length.unsqueeze(1), False)
    attention_mask = attention_mask.unsqueeze(1).unsqueeze(1)

    def call(block: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        return _diffusers.call_block(
            self, block, h, e, temb, attention_mask, image_rotary_emb, token_replace_emb, first_frame_num_tokens
        )

    stack = _diffusers.block_stack(
        _diffusers.BlockList(self.transformer_blocks, call, "he"),
        _diffusers.BlockList(self.single_transformer_blocks, call, "he"),
    )
    first = self.transformer_blocks[0] if len(self.transformer_blocks) else self.single_transformer_blocks[0]
    norm = first.norm1 if hasattr(first, "norm1") else first.norm

    def modulated_input() -> torch.Tensor:
        if token_replace_emb is not None:
            return norm(hidden_states, temb, token_replace_emb, first_frame_num_tokens)[0]  # type: ignore[no-any-return]
        return norm(hidden_states, emb=temb)[0]  # type: ignore[no-any-return]

    def postprocess(h: torch.Tensor, e: torch.Tensor | None) -> Any:
        return _diffusers.hunyuan_output(self, temb, h, grid, return_dict)

    return CacheContext(
        modulated_input=modulated_input,
        hidden_states=hidden_states,
        encoder_hidden_states=encoder_hidden_states,
        temb=temb,
        blocks=stack,
        postprocess=postprocess,
        extra_states={"attention_mask": attention_mask, "rotary_emb": image_rotary_emb},
        timestep=raw_timestep,
        condition=condition,
    )
