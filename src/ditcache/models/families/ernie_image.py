"""Extractor for diffusers ``ErnieImageTransformer2DModel`` (ERNIE-Image).

Mirrors ``ErnieImageTransformer2DModel.forward`` of diffusers 0.42: the image patches and the projected text in
one *sequence-first* ``(S, B, H)`` stream ``[image; text]``, 3-axis RoPE ids (text positions, then the image grid
offset by each text length), the key-padding mask from ``text_lens``, the shared AdaLN modulation computed once
from the timestep, then the layers (single-stream; there is no separate text stream), then the final norm and
projection over the image tokens and unpatchify.

The stack carries the stream batch-first, as a transposed *view* of the sequence-first tensor: every layer is
called with ``h.transpose(0, 1)``, which is the very tensor diffusers passes (same storage, same strides), and
its output is handed back transposed the same way.

Modulated input (TeaCache's indicator): the first layer's attention input
``adaLN_sa_ln(x) * (1 + scale_msa) + shift_msa`` (computed in float32, as the layer does), batch-first.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ditcache.core.context import CacheContext
from ditcache.models import _diffusers
from ditcache.presets.rules import none_published


@_diffusers.diffusers_extractor(
    "ErnieImageTransformer2DModel",
    name="ernie-image",
    blocks=("layers",),
    attention_kwargs=None,
    teacache=none_published("no TeaCache coefficients are published for ERNIE-Image"),
    magcache=none_published("no MagCache ratios are published for ERNIE-Image"),
)
def extract(
    self: Any,
    hidden_states: torch.Tensor,
    timestep: torch.Tensor,
    text_bth: torch.Tensor,
    text_lens: torch.Tensor,
    return_dict: bool = True,
) -> CacheContext:
    from diffusers.models.transformers.transformer_ernie_image import ErnieImageTransformer2DModelOutput

    condition = text_bth
    raw_timestep = timestep
    device, dtype = hidden_states.device, hidden_states.dtype
    B, _C, H, W = hidden_states.shape
    p, Hp, Wp = self.patch_size, H // self.patch_size, W // self.patch_size
    n_img = Hp * Wp

    img_sbh = self.x_embedder(hidden_states).transpose(0, 1).contiguous()
    if self.text_proj is not None and text_bth.numel() > 0:
        text_bth = self.text_proj(text_bth)
    t_max = text_bth.shape[1]
    text_sbh = text_bth.transpose(0, 1).contiguous()
    x = torch.cat([img_sbh, text_sbh], dim=0)
    S = x.shape[0]

    text_ids = (
        torch.cat(
            [
                torch.arange(t_max, device=device, dtype=torch.float32).view(1, t_max, 1).expand(B, -1, -1),
                torch.zeros((B, t_max, 2), device=device),
            ],
            dim=-1,
        )
        if t_max > 0
        else torch.zeros((B, 0, 3), device=device)
    )
    grid_yx = torch.stack(
        torch.meshgrid(
            torch.arange(Hp, device=device, dtype=torch.float32),
            torch.arange(Wp, device=device, dtype=torch.float32),
            indexing="ij",
        ),
        dim=-1,
    ).reshape(-1, 2)
    image_ids = torch.cat(
        [text_lens.float().view(B, 1, 1).expand(-1, n_img, -1), grid_yx.view(1, n_img, 2).expand(B, -1, -1)],
        dim=-1,
    )
    rotary_pos_emb = self.pos_embed(torch.cat([image_ids, text_ids], dim=1))

    # True = attend; the padded text tokens are masked out as keys
    valid_text = (
        torch.arange(t_max, device=device).view(1, t_max) < text_lens.view(B, 1)
        if t_max > 0
        else torch.zeros((B, 0), device=device, dtype=torch.bool)
    )
    attention_mask = torch.cat([torch.ones((B, n_img), device=device, dtype=torch.bool), valid_text], dim=1)[
        :, None, None, :
    ]

    sample = self.time_proj(timestep)
    sample = sample.to(dtype=dtype)
    c = self.time_embedding(sample)
    modulation = [t.unsqueeze(0).expand(S, -1, -1).contiguous() for t in self.adaLN_modulation(c).chunk(6, dim=-1)]

    def call(layer: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        out = _diffusers.call_block(self, layer, h.transpose(0, 1), rotary_pos_emb, list(modulation), attention_mask)
        return out.transpose(0, 1)

    stack = _diffusers.block_stack(_diffusers.BlockList(self.layers, call, "h"))
    first = self.layers[0]

    def modulated_input() -> torch.Tensor:
        shift_msa, scale_msa = modulation[0], modulation[1]
        m = first.adaLN_sa_ln(x)
        m = (m.float() * (1 + scale_msa.float()) + shift_msa.float()).to(m.dtype)
        return m.transpose(0, 1)  # type: ignore[no-any-return]

    def postprocess(h: torch.Tensor, e: torch.Tensor | None) -> Any:
        out = h.transpose(0, 1)
        out = self.final_norm(out, c).type_as(out)
        patches = self.final_linear(out)[:n_img].transpose(0, 1).contiguous()
        output = patches.view(B, Hp, Wp, p, p, self.out_channels).permute(0, 5, 1, 3, 2, 4).contiguous()
        output = output.view(B, self.out_channels, H, W)
        return _diffusers.model_output(output, return_dict, ErnieImageTransformer2DModelOutput)

    return CacheContext(
        modulated_input=modulated_input,
        hidden_states=x.transpose(0, 1),
        encoder_hidden_states=None,
        temb=c,
        blocks=stack,
        postprocess=postprocess,
        extra_states={"rotary_pos_emb": rotary_pos_emb, "attention_mask": attention_mask},
        timestep=raw_timestep,
        condition=condition,
    )
