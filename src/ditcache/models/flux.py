"""Extractor for diffusers ``FluxTransformer2DModel`` (FLUX.1 dev/schnell/Kontext and fine-tunes).

Mirrors ``FluxTransformer2DModel.forward`` of diffusers 0.42: embeddings, timestep/guidance/pooled conditioning,
RoPE, then the double-stream blocks followed by the single-stream blocks (one block stack of
``num_layers + num_single_layers`` blocks, ControlNet residuals added per block as diffusers does), then
``norm_out`` and ``proj_out``.

Modulated input (TeaCache's indicator): ``transformer_blocks[0].norm1(hidden_states, emb=temb)[0]``, as in
TeaCache4FLUX.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ditcache.core.context import CacheContext
from ditcache.models import _diffusers
from ditcache.presets.rules import fixed

_FLUX_DEV = {"num_layers": 19, "num_single_layers": 38}


@_diffusers.diffusers_extractor(
    "FluxTransformer2DModel",
    name="flux",
    blocks=("transformer_blocks", "single_transformer_blocks"),
    attention_kwargs="joint_attention_kwargs",
    teacache=fixed("flux.1-dev", _FLUX_DEV, "FLUX.1-Kontext-dev: pass model='flux.1-kontext-dev'"),
    magcache=fixed("flux.1-dev", _FLUX_DEV, "FLUX.1-Kontext-dev: pass model='flux.1-kontext-dev'"),
)
def extract(
    self: Any,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor | None = None,
    pooled_projections: torch.Tensor | None = None,
    timestep: torch.Tensor | None = None,
    img_ids: torch.Tensor | None = None,
    txt_ids: torch.Tensor | None = None,
    guidance: torch.Tensor | None = None,
    joint_attention_kwargs: dict[str, Any] | None = None,
    controlnet_block_samples: Sequence[torch.Tensor] | None = None,
    controlnet_single_block_samples: Sequence[torch.Tensor] | None = None,
    return_dict: bool = True,
    controlnet_blocks_repeat: bool = False,
) -> CacheContext:
    from diffusers.models.transformers import transformer_flux

    if timestep is None or encoder_hidden_states is None or img_ids is None or txt_ids is None:
        raise ValueError(
            "FluxTransformer2DModel call: timestep, encoder_hidden_states, img_ids and txt_ids are required"
        )
    condition = encoder_hidden_states
    raw_timestep = timestep
    hidden_states = self.x_embedder(hidden_states)

    timestep = timestep.to(hidden_states.dtype) * 1000
    if guidance is not None:
        guidance = guidance.to(hidden_states.dtype) * 1000

    temb = (
        self.time_text_embed(timestep, pooled_projections)
        if guidance is None
        else self.time_text_embed(timestep, guidance, pooled_projections)
    )
    encoder_hidden_states = self.context_embedder(encoder_hidden_states)

    if txt_ids.ndim == 3:
        transformer_flux.logger.warning(
            "Passing `txt_ids` 3d torch.Tensor is deprecated."
            "Please remove the batch dimension and pass it as a 2d torch Tensor"
        )
        txt_ids = txt_ids[0]
    if img_ids.ndim == 3:
        transformer_flux.logger.warning(
            "Passing `img_ids` 3d torch.Tensor is deprecated."
            "Please remove the batch dimension and pass it as a 2d torch Tensor"
        )
        img_ids = img_ids[0]

    ids = torch.cat((txt_ids, img_ids), dim=0)
    image_rotary_emb = _ROPE.get(self, ids)

    if joint_attention_kwargs is not None and "ip_adapter_image_embeds" in joint_attention_kwargs:
        ip_adapter_image_embeds = joint_attention_kwargs.pop("ip_adapter_image_embeds")
        ip_hidden_states = self.encoder_hid_proj(ip_adapter_image_embeds)
        joint_attention_kwargs.update({"ip_hidden_states": ip_hidden_states})

    double = self.transformer_blocks
    single = self.single_transformer_blocks

    def call(block: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        return _diffusers.call_block(self, block, h, e, temb, image_rotary_emb, joint_attention_kwargs)

    stack = _diffusers.block_stack(
        _diffusers.BlockList(
            double,
            call,
            "eh",
            _diffusers.controlnet_residuals(controlnet_block_samples, len(double), repeat=controlnet_blocks_repeat),
        ),
        _diffusers.BlockList(
            single, call, "eh", _diffusers.controlnet_residuals(controlnet_single_block_samples, len(single))
        ),
    )

    norm = double[0].norm1 if len(double) else single[0].norm

    def postprocess(h: torch.Tensor, e: torch.Tensor | None) -> Any:
        h = self.norm_out(h, temb)
        output = self.proj_out(h)
        return _diffusers.model_output(output, return_dict)

    return CacheContext(
        modulated_input=_diffusers.adaln_input(norm, hidden_states, temb),
        hidden_states=hidden_states,
        encoder_hidden_states=encoder_hidden_states,
        temb=temb,
        blocks=stack,
        postprocess=postprocess,
        extra_states={"image_rotary_emb": image_rotary_emb},
        timestep=raw_timestep,
        condition=condition,
    )


class _RopeCache:
    """The last rotary embedding of each module, reused while the position ids are equal.

    The ids of a denoising run are the same at every step (they depend on the resolution only), so recomputing the
    embedding every call is pure overhead (~0.1 ms here, a large share of a skipped step's cost on a small model).
    Reuse is keyed on the ids' *values* (``torch.equal``), so the result is the one ``pos_embed`` would return.
    """

    def __init__(self) -> None:
        self._last: weakref.WeakKeyDictionary[nn.Module, tuple[torch.Tensor, Any]] = weakref.WeakKeyDictionary()

    def get(self, module: Any, ids: torch.Tensor) -> Any:
        hit = self._last.get(module)
        if (
            hit is not None
            and hit[0].shape == ids.shape
            and hit[0].dtype == ids.dtype
            and hit[0].device == ids.device
            and torch.equal(hit[0], ids)
            and not torch.is_grad_enabled()
        ):
            return hit[1]
        rotary = module.pos_embed(ids)
        if not torch.is_grad_enabled():
            self._last[module] = (ids, rotary)
        return rotary


_ROPE = _RopeCache()
