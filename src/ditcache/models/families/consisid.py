"""Extractor for diffusers ``ConsisIDTransformer3DModel`` (ConsisID, identity-preserving CogVideoX).

Mirrors ``ConsisIDTransformer3DModel.forward`` of diffusers 0.42: the local facial extractor (face embedding from
``id_cond`` / ``id_vit_hidden``), the timestep embedding, the joint text+video patch embedding split into the two
streams, then the blocks (return ``(h, e)``) with the face-ID perceiver cross-attention added after every
``cross_attn_interval``-th block (the ``i // interval``-th perceiver, as diffusers counts them: an add-on by block
index, so it is applied on every block slice, which cache-dit's adapter misses), ``norm_final`` over the joined
sequence, ``norm_out``, ``proj_out`` and unpatchify.

Modulated input (TeaCache's indicator): the timestep embedding ``emb`` (TeaCache4CogVideoX).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ditcache.core.context import CacheContext
from ditcache.models import _diffusers
from ditcache.presets.rules import fixed, none_published


@_diffusers.diffusers_extractor(
    "ConsisIDTransformer3DModel",
    name="consisid",
    blocks=("transformer_blocks",),
    teacache=fixed(
        "consisid",
        {"num_layers": 42, "num_attention_heads": 48},
        "TeaCache4ConsisID publishes its own set (the same numbers as CogVideoX-5b's)",
    ),
    magcache=none_published("no MagCache curve is published for ConsisID"),
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
    id_vit_hidden: Any = None,
    return_dict: bool = True,
) -> CacheContext:
    condition, raw_timestep = encoder_hidden_states, timestep
    face = None
    if self.is_train_face:
        assert id_cond is not None and id_vit_hidden is not None
        id_cond = id_cond.to(device=hidden_states.device, dtype=hidden_states.dtype)
        id_vit_hidden = [t.to(device=hidden_states.device, dtype=hidden_states.dtype) for t in id_vit_hidden]
        face = self.local_facial_extractor(id_cond, id_vit_hidden)
    batch_size, num_frames, _, height, width = hidden_states.shape
    emb = self.time_embedding(self.time_proj(timestep).to(dtype=hidden_states.dtype), timestep_cond)
    hidden_states = self.embedding_dropout(self.patch_embed(encoder_hidden_states, hidden_states))
    text_len = encoder_hidden_states.shape[1]
    encoder_hidden_states, hidden_states = hidden_states[:, :text_len], hidden_states[:, text_len:]

    def call(block: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        return _diffusers.call_block(self, block, h, e, emb, image_rotary_emb)

    add = None
    if self.is_train_face and face is not None:
        interval = self.cross_attn_interval

        def add(index: int, h: torch.Tensor) -> torch.Tensor:
            if index % interval:
                return h
            return h + self.local_face_scale * self.perceiver_cross_attention[index // interval](face, h)  # type: ignore[no-any-return]

    def postprocess(h: torch.Tensor, e: torch.Tensor | None) -> Any:
        assert e is not None
        h = self.norm_final(torch.cat([e, h], dim=1))[:, text_len:]
        h = self.proj_out(self.norm_out(h, temb=emb))
        p = self.config.patch_size
        out = h.reshape(batch_size, num_frames, height // p, width // p, -1, p, p)
        return _diffusers.model_output(out.permute(0, 1, 4, 2, 5, 3, 6).flatten(5, 6).flatten(3, 4), return_dict)

    return CacheContext(
        modulated_input=emb,
        hidden_states=hidden_states,
        encoder_hidden_states=encoder_hidden_states,
        temb=emb,
        blocks=_diffusers.block_stack(_diffusers.BlockList(self.transformer_blocks, call, "he", add)),
        postprocess=postprocess,
        extra_states={"rotary_emb": image_rotary_emb},
        timestep=raw_timestep if isinstance(raw_timestep, torch.Tensor) else None,
        condition=condition,
    )
