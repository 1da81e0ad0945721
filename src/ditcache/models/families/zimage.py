"""Extractor for diffusers ``ZImageTransformer2DModel`` (Z-Image-Turbo, Z-Image, Z-Image-Edit/Omni).

Mirrors ``ZImageTransformer2DModel.forward`` of diffusers 0.42: patchify and embed the (lists of) latents and
captions, the ``noise_refiner`` and ``context_refiner`` lists (and the SigLIP refiner in omni mode) as
preprocessing, the unified padded sequence, then the cached ``layers`` (ControlNet residuals added by block index
from the ``controlnet_block_samples`` map), the final layer and unpatchify (a list of per-sample tensors).

The blocks see one stream: the unified ``[image; caption]`` sequence, so the context carries no text stream.

Modulated input (TeaCache's indicator): ``layers[0].attention_norm1(unified) * (1 + scale_msa)`` (vLLM-Omni's
choice), with the noisy-token modulation in omni mode.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ditcache.core.context import CacheContext
from ditcache.models import _diffusers
from ditcache.presets.rules import none_published


@_diffusers.diffusers_extractor(
    "ZImageTransformer2DModel",
    name="zimage",
    blocks=("layers",),
    attention_kwargs="joint_attention_kwargs",
    teacache=none_published(
        "vLLM-Omni copies the Qwen-Image set ('need tuning') and sglang the HunyuanVideo set; no fit for Z-Image "
        "is published"
    ),
    magcache=none_published("no curve is published for Z-Image"),
)
def extract(
    self: Any,
    x: Any,
    t: torch.Tensor,
    cap_feats: Any,
    return_dict: bool = True,
    controlnet_block_samples: dict[int, torch.Tensor] | None = None,
    siglip_feats: Any = None,
    image_noise_mask: list[list[int]] | None = None,
    patch_size: int = 2,
    f_patch_size: int = 1,
    joint_attention_kwargs: dict[str, Any] | None = None,
) -> CacheContext:
    if patch_size not in self.all_patch_size or f_patch_size not in self.all_f_patch_size:
        raise ValueError(
            f"ZImageTransformer2DModel call: patch_size={patch_size}, f_patch_size={f_patch_size}; allowed "
            f"{list(self.all_patch_size)} and {list(self.all_f_patch_size)}"
        )
    raw_timestep = t
    condition = cap_feats[0] if isinstance(cap_feats[0], torch.Tensor) else None
    omni_mode = isinstance(x[0], list)
    device = x[0][-1].device if omni_mode else x[0].device

    if omni_mode:
        t_noisy = self.t_embedder(t * self.t_scale).type_as(x[0][-1])
        t_clean = self.t_embedder(torch.ones_like(t) * self.t_scale).type_as(x[0][-1])
        adaln_input = None
        (
            x,
            cap_feats,
            siglip_feats,
            x_size,
            x_pos_ids,
            cap_pos_ids,
            siglip_pos_ids,
            x_pad_mask,
            cap_pad_mask,
            siglip_pad_mask,
            x_pos_offsets,
            x_noise_mask,
            cap_noise_mask,
            siglip_noise_mask,
        ) = self.patchify_and_embed_omni(x, cap_feats, siglip_feats, patch_size, f_patch_size, image_noise_mask)
    else:
        adaln_input = self.t_embedder(t * self.t_scale).type_as(x[0])
        t_noisy = t_clean = None
        x, cap_feats, x_size, x_pos_ids, cap_pos_ids, x_pad_mask, cap_pad_mask = self.patchify_and_embed(
            x, cap_feats, patch_size, f_patch_size
        )
        x_pos_offsets = x_noise_mask = cap_noise_mask = siglip_noise_mask = None

    x_seqlens = [len(xi) for xi in x]
    x = self.all_x_embedder[f"{patch_size}-{f_patch_size}"](torch.cat(x, dim=0))
    x, x_freqs, x_mask, _, x_noise_tensor = self._prepare_sequence(
        list(x.split(x_seqlens, dim=0)), x_pos_ids, x_pad_mask, self.x_pad_token, x_noise_mask, device
    )
    for layer in self.noise_refiner:
        x = _diffusers.call_block(self, layer, x, x_mask, x_freqs, adaln_input, x_noise_tensor, t_noisy, t_clean)

    cap_seqlens = [len(ci) for ci in cap_feats]
    cap_feats = self.cap_embedder(torch.cat(cap_feats, dim=0))
    cap_feats, cap_freqs, cap_mask, _, _ = self._prepare_sequence(
        list(cap_feats.split(cap_seqlens, dim=0)), cap_pos_ids, cap_pad_mask, self.cap_pad_token, None, device
    )
    for layer in self.context_refiner:
        cap_feats = _diffusers.call_block(self, layer, cap_feats, cap_mask, cap_freqs)

    siglip_seqlens = siglip_freqs = None
    if omni_mode and siglip_feats[0] is not None and self.siglip_embedder is not None:
        siglip_seqlens = [len(si) for si in siglip_feats]
        siglip_feats = self.siglip_embedder(torch.cat(siglip_feats, dim=0))
        siglip_feats, siglip_freqs, siglip_mask, _, _ = self._prepare_sequence(
            list(siglip_feats.split(siglip_seqlens, dim=0)),
            siglip_pos_ids,
            siglip_pad_mask,
            self.siglip_pad_token,
            None,
            device,
        )
        for layer in self.siglip_refiner:
            siglip_feats = _diffusers.call_block(self, layer, siglip_feats, siglip_mask, siglip_freqs)

    unified, unified_freqs, unified_mask, unified_noise = self._build_unified_sequence(
        x,
        x_freqs,
        x_seqlens,
        x_noise_mask,
        cap_feats,
        cap_freqs,
        cap_seqlens,
        cap_noise_mask,
        siglip_feats,
        siglip_freqs,
        siglip_seqlens,
        siglip_noise_mask,
        omni_mode,
        device,
    )

    def call(block: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        return _diffusers.call_block(
            self, block, h, unified_mask, unified_freqs, adaln_input, unified_noise, t_noisy, t_clean
        )

    stack = _diffusers.block_stack(
        _diffusers.BlockList(self.layers, call, "h", _diffusers.add_at(controlnet_block_samples))
    )
    temb = adaln_input if adaln_input is not None else t_noisy

    def modulated_input() -> torch.Tensor:
        first = self.layers[0]
        scale_msa = first.adaLN_modulation(temb).unsqueeze(1).chunk(4, dim=2)[0]
        return first.attention_norm1(unified) * (1.0 + scale_msa)  # type: ignore[no-any-return]

    def postprocess(h: torch.Tensor, e: torch.Tensor | None) -> Any:
        final = self.all_final_layer[f"{patch_size}-{f_patch_size}"]
        if omni_mode:
            h = final(h, noise_mask=unified_noise, c_noisy=t_noisy, c_clean=t_clean)
        else:
            h = final(h, c=adaln_input)
        out = self.unpatchify(list(h.unbind(dim=0)), x_size, patch_size, f_patch_size, x_pos_offsets)
        return _diffusers.model_output(out, return_dict)

    return CacheContext(
        modulated_input=modulated_input if self.layers[0].modulation else unified,
        hidden_states=unified,
        encoder_hidden_states=None,
        temb=temb,
        blocks=stack,
        postprocess=postprocess,
        extra_states={"attention_mask": unified_mask, "rotary_emb": unified_freqs},
        timestep=raw_timestep,
        condition=condition,
    )
