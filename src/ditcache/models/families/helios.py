"""Extractor for diffusers ``HeliosTransformer3DModel`` (Helios, real-time long video on a Wan-style backbone).

Mirrors ``HeliosTransformer3DModel.forward`` of diffusers 0.42: patch embedding and RoPE over the latent frame
indices; the short / mid / long history latents embedded (mid and long padded and patched at 2x and 4x, their
rotary embeddings centre-down-sampled) and packed in front of the latents; the timestep embedding expanded per
token, with timestep 0 for the history tokens when ``zero_history_timestep`` is set; then the Wan-style blocks
(text as cross-attention K/V: each block returns the video tokens only and the stack hands the *same* text tensor
back), then the output norm over the last ``original_context_length`` tokens, ``proj_out`` and unpatchify.

Modulated input (TeaCache's indicator): the per-token timestep embedding ``temb``, as Wan's default indicator;
``extra_states`` also holds ``"timestep_proj"`` (the 6-way projection).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ditcache.core.context import CacheContext
from ditcache.models import _diffusers
from ditcache.presets.rules import none_published


@_diffusers.diffusers_extractor(
    "HeliosTransformer3DModel",
    name="helios",
    blocks=("blocks",),
    teacache=none_published("no TeaCache coefficients are published for Helios"),
    magcache=none_published("no MagCache ratios are published for Helios"),
)
def extract(
    self: Any,
    hidden_states: torch.Tensor,
    timestep: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    indices_hidden_states: torch.Tensor | None = None,
    indices_latents_history_short: torch.Tensor | None = None,
    indices_latents_history_mid: torch.Tensor | None = None,
    indices_latents_history_long: torch.Tensor | None = None,
    latents_history_short: torch.Tensor | None = None,
    latents_history_mid: torch.Tensor | None = None,
    latents_history_long: torch.Tensor | None = None,
    return_dict: bool = True,
    attention_kwargs: dict[str, Any] | None = None,
) -> CacheContext:
    from diffusers.models.transformers.transformer_helios import center_down_sample_3d, pad_for_3d_conv

    condition = encoder_hidden_states
    raw_timestep = timestep
    batch_size = hidden_states.shape[0]
    p_t, p_h, p_w = self.config.patch_size

    hidden_states = self.patch_embedding(hidden_states)
    _, _, post_patch_num_frames, post_patch_height, post_patch_width = hidden_states.shape

    if indices_hidden_states is None:
        indices_hidden_states = torch.arange(0, post_patch_num_frames).unsqueeze(0).expand(batch_size, -1)

    hidden_states = hidden_states.flatten(2).transpose(1, 2)
    rotary_emb = self.rope(
        frame_indices=indices_hidden_states,
        height=post_patch_height,
        width=post_patch_width,
        device=hidden_states.device,
    )
    rotary_emb = rotary_emb.flatten(2).transpose(1, 2)
    original_context_length = hidden_states.shape[1]

    # history latents, packed in front: short (1x), then mid (2x) and long (4x) on the short grid
    grid: tuple[int, int] | None = None
    if latents_history_short is not None and indices_latents_history_short is not None:
        latents_history_short = self.patch_short(latents_history_short)
        grid = latents_history_short.shape[-2], latents_history_short.shape[-1]
        latents_history_short = latents_history_short.flatten(2).transpose(1, 2)
        rope_short = self.rope(
            frame_indices=indices_latents_history_short,
            height=grid[0],
            width=grid[1],
            device=latents_history_short.device,
        )
        rope_short = rope_short.flatten(2).transpose(1, 2)
        hidden_states = torch.cat([latents_history_short, hidden_states], dim=1)
        rotary_emb = torch.cat([rope_short, rotary_emb], dim=1)

    for latents, indices, patch, factor in (
        (latents_history_mid, indices_latents_history_mid, "patch_mid", 2),
        (latents_history_long, indices_latents_history_long, "patch_long", 4),
    ):
        if latents is None or indices is None:
            continue
        if grid is None:
            raise ValueError(
                "HeliosTransformer3DModel call: the mid / long history needs latents_history_short (diffusers "
                "takes their rotary grid from it)"
            )
        latents = pad_for_3d_conv(latents, (factor, 2 * factor, 2 * factor))
        latents = getattr(self, patch)(latents).flatten(2).transpose(1, 2)
        rope = self.rope(frame_indices=indices, height=grid[0], width=grid[1], device=latents.device)
        rope = pad_for_3d_conv(rope, (factor,) * 3)
        rope = center_down_sample_3d(rope, (factor,) * 3).flatten(2).transpose(1, 2)
        hidden_states = torch.cat([latents, hidden_states], dim=1)
        rotary_emb = torch.cat([rope, rotary_emb], dim=1)

    history_context_length = hidden_states.shape[1] - original_context_length

    if self.zero_history_timestep:  # the history tokens are conditioned on timestep 0
        timestep_t0 = torch.zeros((1), dtype=timestep.dtype, device=timestep.device)
        temb_t0, timestep_proj_t0, _ = self.condition_embedder(
            timestep_t0, encoder_hidden_states, is_return_encoder_hidden_states=False
        )
        temb_t0 = temb_t0.unsqueeze(1).expand(batch_size, history_context_length, -1)
        timestep_proj_t0 = (
            timestep_proj_t0.unflatten(-1, (6, -1)).view(1, 6, 1, -1).expand(batch_size, -1, history_context_length, -1)
        )

    temb, timestep_proj, encoder_hidden_states = self.condition_embedder(timestep, encoder_hidden_states)
    timestep_proj = timestep_proj.unflatten(-1, (6, -1))

    main_repeat_size = original_context_length if self.zero_history_timestep else hidden_states.shape[1]
    temb = temb.view(batch_size, 1, -1).expand(batch_size, main_repeat_size, -1)
    timestep_proj = timestep_proj.view(batch_size, 6, 1, -1).expand(batch_size, 6, main_repeat_size, -1)

    if self.zero_history_timestep:
        temb = torch.cat([temb_t0, temb], dim=1)
        timestep_proj = torch.cat([timestep_proj_t0, timestep_proj], dim=2)

    if timestep_proj.ndim == 4:
        timestep_proj = timestep_proj.permute(0, 2, 1, 3)

    hidden_states = hidden_states.contiguous()
    encoder_hidden_states = encoder_hidden_states.contiguous()
    rotary_emb = rotary_emb.contiguous()

    def call(block: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        return _diffusers.call_block(self, block, h, e, timestep_proj, rotary_emb, original_context_length)

    stack = _diffusers.block_stack(_diffusers.BlockList(self.blocks, call, "h"))

    def postprocess(h: torch.Tensor, e: torch.Tensor | None) -> Any:
        h = self.norm_out(h, temb, original_context_length)
        h = self.proj_out(h)
        grid = (batch_size, post_patch_num_frames, post_patch_height, post_patch_width, p_t, p_h, p_w)
        return _diffusers.model_output(_diffusers.wan_unpatchify(h, grid), return_dict)

    return CacheContext(
        modulated_input=temb,
        hidden_states=hidden_states,
        encoder_hidden_states=encoder_hidden_states,
        temb=temb,
        blocks=stack,
        postprocess=postprocess,
        extra_states={"temb": temb, "timestep_proj": timestep_proj, "rotary_emb": rotary_emb},
        timestep=raw_timestep,
        condition=condition,
    )
