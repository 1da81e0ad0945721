"""Extractor for diffusers ``ConsisIDTransformer3DModel`` (ConsisID, identity-preserving CogVideoX).

Mirrors ``ConsisIDTransformer3DModel.forward`` of diffusers 0.42: the face embedding (local facial extractor over
the ID condition and ViT hidden states, when ``is_train_face``), the timestep embedding, the joint patch embedding
of text and video split back into the two streams, then the CogVideoX blocks (returning ``(hidden_states,
encoder_hidden_states)``) with the face perceiver cross-attention added after every ``cross_attn_interval``-th
block (a per-index add-on, so it runs exactly where diffusers runs it, also inside a block slice), then
``norm_final`` over ``[text; video]``, ``norm_out``, ``proj_out`` and unpatchify.

Modulated input (TeaCache's indicator): the timestep embedding ``emb`` (not modulated), as TeaCache4ConsisID and
TeaCache4CogVideoX use.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ditcache.core.context import CacheContext
from ditcache.models import _diffusers
from ditcache.presets.rules import fixed, none_published


def _face_injection(model: Any, face_emb: torch.Tensor | None) -> _diffusers.AddOn | None:
    """After block ``i`` with ``i % cross_attn_interval == 0``: ``h + local_face_scale * perceiver[i // interval]``."""
    if not model.is_train_face or face_emb is None:
        return None
    interval = model.cross_attn_interval

    def add(index: int, h: torch.Tensor) -> torch.Tensor:
        if index % interval != 0:
            return h
        return h + model.local_face_scale * model.perceiver_cross_attention[index // interval](face_emb, h)  # type: ignore[no-any-return]

    return add


@_diffusers.diffusers_extractor(
    "ConsisIDTransformer3DModel",
    name="consisid",
    blocks=("transformer_blocks",),
    teacache=fixed("consisid", num_layers=42, num_attention_heads=48, attention_head_dim=64),
    magcache=none_published("no MagCache ratios are published for ConsisID"),
)
def extract(
    self: Any,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    timestep: Any,
    timestep_cond: torch.Tensor | None = None,
    image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    attention_kwargs: dict[str, Any] | None = None,
    id_cond: torch.Tensor | None = None,
    id_vit_hidden: list[torch.Tensor] | None = None,
    return_dict: bool = True,
) -> CacheContext:
    condition = encoder_hidden_states
    raw_timestep = timestep

    valid_face_emb = None
    if self.is_train_face:
        if id_cond is None or id_vit_hidden is None:
            raise ValueError("ConsisIDTransformer3DModel call: id_cond and id_vit_hidden are required (is_train_face)")
        id_cond = id_cond.to(device=hidden_states.device, dtype=hidden_states.dtype)
        id_vit_hidden = [t.to(device=hidden_states.device, dtype=hidden_states.dtype) for t in id_vit_hidden]
        valid_face_emb = self.local_facial_extractor(id_cond, id_vit_hidden)

    batch_size, num_frames, _channels, height, width = hidden_states.shape

    t_emb = self.time_proj(timestep)
    t_emb = t_emb.to(dtype=hidden_states.dtype)  # time_proj returns float32
    emb = self.time_embedding(t_emb, timestep_cond)

    hidden_states = self.patch_embed(encoder_hidden_states, hidden_states)
    hidden_states = self.embedding_dropout(hidden_states)

    text_seq_length = encoder_hidden_states.shape[1]
    encoder_hidden_states = hidden_states[:, :text_seq_length]
    hidden_states = hidden_states[:, text_seq_length:]

    def call(block: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        if torch.is_grad_enabled() and self.gradient_checkpointing:
            return _diffusers.call_block(self, block, h, e, emb, image_rotary_emb)
        return block(hidden_states=h, encoder_hidden_states=e, temb=emb, image_rotary_emb=image_rotary_emb)

    stack = _diffusers.block_stack(
        _diffusers.BlockList(self.transformer_blocks, call, "he", _face_injection(self, valid_face_emb))
    )

    def postprocess(h: torch.Tensor, e: torch.Tensor | None) -> Any:
        assert e is not None
        h = torch.cat([e, h], dim=1)
        h = self.norm_final(h)
        h = h[:, text_seq_length:]
        h = self.norm_out(h, temb=emb)
        h = self.proj_out(h)
        p = self.config.patch_size
        output = h.reshape(batch_size, num_frames, height // p, width // p, -1, p, p)
        output = output.permute(0, 1, 4, 2, 5, 3, 6).flatten(5, 6).flatten(3, 4)
        return _diffusers.model_output(output, return_dict)

    return CacheContext(
        modulated_input=emb,
        hidden_states=hidden_states,
        encoder_hidden_states=encoder_hidden_states,
        temb=emb,
        blocks=stack,
        postprocess=postprocess,
        extra_states={"image_rotary_emb": image_rotary_emb},
        timestep=raw_timestep if isinstance(raw_timestep, torch.Tensor | float) else None,
        condition=condition,
    )
