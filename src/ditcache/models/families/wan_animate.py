"""Extractor for diffusers ``WanAnimateTransformer3DModel`` (Wan2.2-Animate-14B).

Mirrors ``WanAnimateTransformer3DModel.forward`` of diffusers 0.42: RoPE, the patch embedding with the pose latents
added to every frame but the first, Wan's condition embedder (with the CLIP image tokens prepended to the text),
the face motion encoder over the face frames (in batches of ``motion_encode_batch_size``) and the face encoder, then
Wan's blocks (text as cross-attention K/V: each block returns the video tokens only and the stack hands the *same*
text tensor back) with the face adapter added after every ``inject_face_latents_blocks``-th block (a per-index
add-on, so it runs exactly where diffusers runs it, also inside a block slice), then the output modulation,
``proj_out`` and unpatchify.

Wan-Animate 2 (``WanAnimate2Transformer3DModel``) is a different class and stays refused.

Modulated input (TeaCache's indicator): the timestep embedding ``temb``, as Wan's default indicator;
``extra_states`` also holds ``"timestep_proj"`` (the 6-way projection).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ditcache.core.context import CacheContext
from ditcache.models import _diffusers
from ditcache.presets.rules import none_published


def _face_adapter(model: Any, motion_vec: torch.Tensor) -> _diffusers.AddOn:
    """After block ``i`` with ``i % inject_face_latents_blocks == 0``: ``face_adapter[i // n](h, motion) + h``."""
    every = model.config.inject_face_latents_blocks

    def add(index: int, h: torch.Tensor) -> torch.Tensor:
        if index % every != 0:
            return h
        out = model.face_adapter[index // every](h, motion_vec).to(device=h.device)
        return out + h  # type: ignore[no-any-return]

    return add


@_diffusers.diffusers_extractor(
    "WanAnimateTransformer3DModel",
    name="wan-animate",
    blocks=("blocks",),
    teacache=none_published("no TeaCache coefficients are published for Wan2.2-Animate"),
    magcache=none_published("no MagCache ratios are published for Wan2.2-Animate"),
)
def extract(
    self: Any,
    hidden_states: torch.Tensor,
    timestep: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    encoder_hidden_states_image: torch.Tensor | None = None,
    pose_hidden_states: torch.Tensor | None = None,
    face_pixel_values: torch.Tensor | None = None,
    motion_encode_batch_size: int | None = None,
    return_dict: bool = True,
    attention_kwargs: dict[str, Any] | None = None,
) -> CacheContext:
    if pose_hidden_states is None or face_pixel_values is None:
        raise ValueError("WanAnimateTransformer3DModel call: pose_hidden_states and face_pixel_values are required")
    if pose_hidden_states.shape[2] + 1 != hidden_states.shape[2]:
        raise ValueError(
            f"pose_hidden_states frame dim (dim 2) is {pose_hidden_states.shape[2]} but must be one less than the"
            f" hidden_states's corresponding frame dim: {hidden_states.shape[2]}"
        )
    condition = encoder_hidden_states
    raw_timestep = timestep
    grid = _diffusers.wan_grid(self, hidden_states)

    rotary_emb = self.rope(hidden_states)
    hidden_states = self.patch_embedding(hidden_states)
    pose_hidden_states = self.pose_patch_embedding(pose_hidden_states)
    hidden_states[:, :, 1:] = hidden_states[:, :, 1:] + pose_hidden_states
    hidden_states = hidden_states.flatten(2).transpose(1, 2).contiguous()

    temb, timestep_proj, encoder_hidden_states, encoder_hidden_states_image = self.condition_embedder(
        timestep, encoder_hidden_states, encoder_hidden_states_image, timestep_seq_len=None
    )
    timestep_proj = timestep_proj.unflatten(1, (6, -1))
    if encoder_hidden_states_image is not None:
        encoder_hidden_states = torch.concat([encoder_hidden_states_image, encoder_hidden_states], dim=1)

    # face motion: encoded frame by frame in batches, then the face encoder; a zero frame goes first
    face_batch, channels, num_face_frames, face_height, face_width = face_pixel_values.shape
    face_pixel_values = face_pixel_values.permute(0, 2, 1, 3, 4).reshape(-1, channels, face_height, face_width)
    motion_encode_batch_size = motion_encode_batch_size or self.config.motion_encoder_batch_size
    motion_vec = torch.cat([self.motion_encoder(b) for b in torch.split(face_pixel_values, motion_encode_batch_size)])
    motion_vec = motion_vec.view(face_batch, num_face_frames, -1)
    motion_vec = self.face_encoder(motion_vec)
    motion_vec = torch.cat([torch.zeros_like(motion_vec[:, :1]), motion_vec], dim=1)

    def call(block: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        return _diffusers.call_block(self, block, h, e, timestep_proj, rotary_emb)

    stack = _diffusers.block_stack(_diffusers.BlockList(self.blocks, call, "h", _face_adapter(self, motion_vec)))

    def postprocess(h: torch.Tensor, e: torch.Tensor | None) -> Any:
        return _diffusers.wan_output(self, temb, h, grid, return_dict)

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
