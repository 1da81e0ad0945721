"""Extractor for diffusers ``HunyuanVideoFramepackTransformer3DModel`` (FramePack, FramePack-F1).

Mirrors ``HunyuanVideoFramepackTransformer3DModel.forward`` of diffusers 0.42: patch embedding and RoPE over the
latent frame indices, the clean-latent history (1x, 2x, 4x) embedded and packed in front of the latents with
their rotary embeddings (``_pack_history_states``), the timestep/guidance/pooled condition, the token refiner over
the text, the CLIP-vision image tokens prepended to the text, the joint attention mask (at batch 1 the text is cut
to its mask length and no mask is used, as in diffusers), then HunyuanVideo's double-stream blocks followed by
its single-stream blocks (both return ``(hidden_states, encoder_hidden_states)``), then the last
``post_patch_frames * height * width`` tokens through ``norm_out``, ``proj_out`` and unpatchify.

Modulated input (TeaCache's indicator): ``transformer_blocks[0].norm1(hidden_states, emb=temb)[0]`` on the packed
sequence, as in TeaCache4HunyuanVideo (which FramePack's own TeaCache copies).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ditcache.core.context import CacheContext
from ditcache.models import _diffusers
from ditcache.presets.rules import fixed

_FRAMEPACK = {"num_layers": 20, "num_single_layers": 40, "has_clean_x_embedder": True, "has_image_proj": True}


@_diffusers.diffusers_extractor(
    "HunyuanVideoFramepackTransformer3DModel",
    name="hunyuanvideo-framepack",
    blocks=("transformer_blocks", "single_transformer_blocks"),
    teacache=fixed("framepack", _FRAMEPACK, "the HunyuanVideo set, as FramePack's own TeaCache uses it"),
    magcache=fixed("framepack", _FRAMEPACK, "FramePack-F1: pass model='framepack-f1'"),
)
def extract(
    self: Any,
    hidden_states: torch.Tensor,
    timestep: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    encoder_attention_mask: torch.Tensor,
    pooled_projections: torch.Tensor,
    image_embeds: torch.Tensor,
    indices_latents: torch.Tensor | None,
    guidance: torch.Tensor | None = None,
    latents_clean: torch.Tensor | None = None,
    indices_latents_clean: torch.Tensor | None = None,
    latents_history_2x: torch.Tensor | None = None,
    indices_latents_history_2x: torch.Tensor | None = None,
    latents_history_4x: torch.Tensor | None = None,
    indices_latents_history_4x: torch.Tensor | None = None,
    attention_kwargs: dict[str, Any] | None = None,
    return_dict: bool = True,
) -> CacheContext:
    condition = encoder_hidden_states
    raw_timestep = timestep
    batch_size, _num_channels, num_frames, height, width = hidden_states.shape
    grid = _diffusers.hunyuan_grid(self, hidden_states)
    post_patch_num_frames, post_patch_height, post_patch_width = grid[1:4]
    original_context_length = post_patch_num_frames * post_patch_height * post_patch_width

    if indices_latents is None:
        indices_latents = torch.arange(0, num_frames).unsqueeze(0).expand(batch_size, -1)

    hidden_states = self.x_embedder(hidden_states)
    device = hidden_states.device
    image_rotary_emb = self.rope(frame_indices=indices_latents, height=height, width=width, device=device)

    latents_clean, latents_history_2x, latents_history_4x = self.clean_x_embedder(
        latents_clean, latents_history_2x, latents_history_4x
    )

    def history_rope(latents: torch.Tensor | None, indices: torch.Tensor | None) -> Any:
        if latents is None or indices is None:
            return None
        return self.rope(frame_indices=indices, height=height, width=width, device=device)

    hidden_states, image_rotary_emb = self._pack_history_states(
        hidden_states,
        latents_clean,
        latents_history_2x,
        latents_history_4x,
        image_rotary_emb,
        history_rope(latents_clean, indices_latents_clean),
        history_rope(latents_history_2x, indices_latents_history_2x),
        history_rope(latents_history_4x, indices_latents_history_4x),
        post_patch_height,
        post_patch_width,
    )

    temb, _ = self.time_text_embed(timestep, pooled_projections, guidance)
    encoder_hidden_states = self.context_embedder(encoder_hidden_states, timestep, encoder_attention_mask)

    encoder_hidden_states_image = self.image_projection(image_embeds)
    attention_mask_image = encoder_attention_mask.new_ones((batch_size, encoder_hidden_states_image.shape[1]))

    # the image tokens go before the text (the text mask pads at the end)
    encoder_hidden_states = torch.cat([encoder_hidden_states_image, encoder_hidden_states], dim=1)
    encoder_attention_mask = torch.cat([attention_mask_image, encoder_attention_mask], dim=1)

    latent_sequence_length = hidden_states.shape[1]
    condition_sequence_length = encoder_hidden_states.shape[1]
    sequence_length = latent_sequence_length + condition_sequence_length
    attention_mask: torch.Tensor | None = torch.zeros(batch_size, sequence_length, device=device, dtype=torch.bool)
    effective_condition_sequence_length = encoder_attention_mask.sum(dim=1, dtype=torch.int)
    effective_sequence_length = latent_sequence_length + effective_condition_sequence_length

    if batch_size == 1:
        encoder_hidden_states = encoder_hidden_states[:, : effective_condition_sequence_length[0]]
        attention_mask = None
    else:
        assert attention_mask is not None
        for i in range(batch_size):
            attention_mask[i, : effective_sequence_length[i]] = True
        attention_mask = attention_mask.unsqueeze(1).unsqueeze(1)  # (B, 1, 1, N), broadcast over the heads

    def call(block: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        return _diffusers.call_block(self, block, h, e, temb, attention_mask, image_rotary_emb)

    stack = _diffusers.block_stack(
        _diffusers.BlockList(self.transformer_blocks, call, "he"),
        _diffusers.BlockList(self.single_transformer_blocks, call, "he"),
    )
    norm = self.transformer_blocks[0].norm1 if len(self.transformer_blocks) else self.single_transformer_blocks[0].norm

    def postprocess(h: torch.Tensor, e: torch.Tensor | None) -> Any:
        return _diffusers.hunyuan_output(self, temb, h[:, -original_context_length:], grid, return_dict)

    return CacheContext(
        modulated_input=_diffusers.adaln_input(norm, hidden_states, temb),
        hidden_states=hidden_states,
        encoder_hidden_states=encoder_hidden_states,
        temb=temb,
        blocks=stack,
        postprocess=postprocess,
        extra_states={"image_rotary_emb": image_rotary_emb, "attention_mask": attention_mask},
        timestep=raw_timestep,
        condition=condition,
    )
