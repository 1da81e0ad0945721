"""Extractor for diffusers ``Flux2Transformer2DModel`` (FLUX.2 [dev], FLUX.2 [klein] 4B/9B).

Mirrors ``Flux2Transformer2DModel.forward`` of diffusers 0.42: the timestep/guidance embedding and the shared
modulation layers (computed once, before the blocks), the input projections, RoPE over text and image ids, the
double-stream blocks (return ``(e, h)``), then the single-stream blocks on ``cat([e, h])`` (the ``"joint"``
convention: the stack splits the sequence back after every block, so DBCache can slice anywhere), ``norm_out`` and
``proj_out``.

Refused: ``kv_cache_mode`` (FLUX.2 reference-image K/V caching: the first call extracts reference K/V that later
calls read, so a skipped step would leave the cache stale).

Modulated input (TeaCache's indicator): ``(1 + scale_msa) * transformer_blocks[0].norm1(h) + shift_msa`` with the
shift/scale of ``double_stream_modulation_img`` (the FLUX.1 choice carried over).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ditcache.core.context import CacheContext
from ditcache.models import _diffusers
from ditcache.presets.rules import fixed, none_published


@_diffusers.diffusers_extractor(
    "Flux2Transformer2DModel",
    name="flux2",
    blocks=("transformer_blocks", "single_transformer_blocks"),
    attention_kwargs="joint_attention_kwargs",
    teacache=none_published(
        "vLLM-Omni's Flux2 entry is the Qwen-Image set copied ('need tuning') and its Flux2Klein entry the FLUX.1 "
        "set; no fit for FLUX.2 is published"
    ),
    magcache=fixed(
        "flux.2-dev-vllm-omni",
        {"num_layers": 8, "num_single_layers": 48},
        "vLLM-Omni's FLUX2_MAG_RATIOS (28 steps)",
    ),
)
def extract(
    self: Any,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    timestep: torch.Tensor,
    img_ids: torch.Tensor,
    txt_ids: torch.Tensor,
    guidance: torch.Tensor | None = None,
    joint_attention_kwargs: dict[str, Any] | None = None,
    return_dict: bool = True,
    kv_cache: Any = None,
    kv_cache_mode: str | None = None,
    num_ref_tokens: int = 0,
    ref_fixed_timestep: float = 0.0,
) -> CacheContext:
    from diffusers.models.transformers.transformer_flux2 import Flux2Modulation, Flux2Transformer2DModelOutput

    if kv_cache_mode is not None or kv_cache is not None:
        raise ValueError(
            "Flux2Transformer2DModel call: kv_cache / kv_cache_mode (reference-image K/V caching) cannot be combined "
            f"with step caching (got kv_cache_mode={kv_cache_mode!r}); call without them or remove the cache"
        )
    condition, raw_timestep = encoder_hidden_states, timestep
    timestep = timestep.to(hidden_states.dtype) * 1000
    if guidance is not None:
        guidance = guidance.to(hidden_states.dtype) * 1000
    temb = self.time_guidance_embed(timestep, guidance)

    mod_img = self.double_stream_modulation_img(temb)
    mod_txt = self.double_stream_modulation_txt(temb)
    mod_single = self.single_stream_modulation(temb)

    hidden_states = self.x_embedder(hidden_states)
    encoder_hidden_states = self.context_embedder(encoder_hidden_states)

    if img_ids.ndim == 3:
        img_ids = img_ids[0]
    if txt_ids.ndim == 3:
        txt_ids = txt_ids[0]
    image_rotary_emb = self.pos_embed(img_ids)
    text_rotary_emb = self.pos_embed(txt_ids)
    rope = (
        torch.cat([text_rotary_emb[0], image_rotary_emb[0]], dim=0),
        torch.cat([text_rotary_emb[1], image_rotary_emb[1]], dim=0),
    )
    kwargs = joint_attention_kwargs

    def double(block: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        return _diffusers.call_block(self, block, h, e, mod_img, mod_txt, rope, kwargs)

    def single(block: nn.Module, joint: torch.Tensor, _: torch.Tensor | None) -> Any:
        return _diffusers.call_block(self, block, joint, None, mod_single, rope, kwargs)

    stack = _diffusers.block_stack(
        _diffusers.BlockList(self.transformer_blocks, double, "eh"),
        _diffusers.BlockList(self.single_transformer_blocks, single, "joint"),
    )

    def modulated_input() -> torch.Tensor:
        (shift_msa, scale_msa, _), _ = Flux2Modulation.split(mod_img, 2)
        return (1 + scale_msa) * self.transformer_blocks[0].norm1(hidden_states) + shift_msa  # type: ignore[no-any-return]

    def postprocess(h: torch.Tensor, e: torch.Tensor | None) -> Any:
        output = self.proj_out(self.norm_out(h, temb))
        return _diffusers.model_output(output, return_dict, Flux2Transformer2DModelOutput)

    return CacheContext(
        modulated_input=modulated_input if len(self.transformer_blocks) else temb,
        hidden_states=hidden_states,
        encoder_hidden_states=encoder_hidden_states,
        temb=temb,
        blocks=stack,
        postprocess=postprocess,
        extra_states={"rotary_emb": rope},
        timestep=raw_timestep,
        condition=condition,
    )
