"""Extractor for diffusers ``CogVideoXTransformer3DModel`` (CogVideoX-2B/5B, CogVideoX1.5-5B, I2V, Fun).

Mirrors ``CogVideoXTransformer3DModel.forward`` of diffusers 0.42: the timestep embedding (plus the ``ofs`` embedding
of CogVideoX1.5 I2V), the joint text+video patch embedding split back into the two streams, the blocks (return
``(h, e)``), ``norm_final``, ``norm_out``, ``proj_out`` and unpatchify (with temporal patches for 1.5).

Modulated input (TeaCache's indicator): the timestep embedding ``emb`` (TeaCache4CogVideoX).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ditcache.core.context import CacheContext
from ditcache.models import _diffusers
from ditcache.presets.rules import PresetRule, config_value, none_published


def _teacache(config: Any) -> tuple[str, bool]:
    heads, layers = config_value(config, "num_attention_heads"), config_value(config, "num_layers")
    if config_value(config, "patch_size_t") is not None:  # CogVideoX1.5
        key = "cogvideox1.5-5b-i2v" if config_value(config, "ofs_embed_dim") is not None else "cogvideox1.5-5b"
        return key, heads == 48 and layers == 42
    if heads == 30:
        return "cogvideox-2b", layers == 30
    return "cogvideox-5b", heads == 48 and layers == 42


@_diffusers.diffusers_extractor(
    "CogVideoXTransformer3DModel",
    name="cogvideox",
    blocks=("transformer_blocks",),
    teacache=PresetRule(
        ("cogvideox-2b", "cogvideox-5b", "cogvideox1.5-5b", "cogvideox1.5-5b-i2v"),
        _teacache,
        "by generation (temporal patches: 1.5), I2V ofs embedding and size",
    ),
    magcache=none_published("the MagCache paper evaluates CogVideoX, but no curve for it is published in code"),
)
def extract(
    self: Any,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    timestep: Any,
    timestep_cond: torch.Tensor | None = None,
    ofs: Any = None,
    image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    attention_kwargs: dict[str, Any] | None = None,
    return_dict: bool = True,
) -> CacheContext:
    condition, raw_timestep = encoder_hidden_states, timestep
    batch_size, num_frames, _, height, width = hidden_states.shape
    emb = self.time_embedding(self.time_proj(timestep).to(dtype=hidden_states.dtype), timestep_cond)
    if self.ofs_embedding is not None:
        emb = emb + self.ofs_embedding(self.ofs_proj(ofs).to(dtype=hidden_states.dtype))

    hidden_states = self.embedding_dropout(self.patch_embed(encoder_hidden_states, hidden_states))
    text_seq_length = encoder_hidden_states.shape[1]
    encoder_hidden_states = hidden_states[:, :text_seq_length]
    hidden_states = hidden_states[:, text_seq_length:]

    def call(block: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        return _diffusers.call_block(self, block, h, e, emb, image_rotary_emb, attention_kwargs)

    def postprocess(h: torch.Tensor, e: torch.Tensor | None) -> Any:
        h = self.proj_out(self.norm_out(self.norm_final(h), temb=emb))
        p, p_t = self.config.patch_size, self.config.patch_size_t
        if p_t is None:
            out = h.reshape(batch_size, num_frames, height // p, width // p, -1, p, p)
            out = out.permute(0, 1, 4, 2, 5, 3, 6).flatten(5, 6).flatten(3, 4)
        else:
            out = h.reshape(batch_size, (num_frames + p_t - 1) // p_t, height // p, width // p, -1, p_t, p, p)
            out = out.permute(0, 1, 5, 4, 2, 6, 3, 7).flatten(6, 7).flatten(4, 5).flatten(1, 2)
        return _diffusers.model_output(out, return_dict)

    return CacheContext(
        modulated_input=emb,
        hidden_states=hidden_states,
        encoder_hidden_states=encoder_hidden_states,
        temb=emb,
        blocks=_diffusers.block_stack(_diffusers.BlockList(self.transformer_blocks, call, "he")),
        postprocess=postprocess,
        extra_states={"rotary_emb": image_rotary_emb},
        timestep=raw_timestep if isinstance(raw_timestep, torch.Tensor) else None,
        condition=condition,
    )
