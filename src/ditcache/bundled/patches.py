"""The bundled photo-patches diffusion transformer: a diffusers ``QwenImageTransformer2DModel`` that paints 16x16
colour patches of scikit-learn's two sample photos, conditioned on a 2x2 thumbnail.

The second bundled model, of another diffusers class and another data set than the digits model
(:mod:`ditcache.bundled.model`), so that caches are judged on more than one model. A real
``QwenImageTransformer2DModel`` (four dual-stream blocks, width 64) trained with rectified flow on 16x16 RGB crops
of ``china.jpg`` and ``flower.jpg`` (:mod:`ditcache.bundled.patch_data`). Images are packed the way
``QwenImagePipeline._pack_latents`` packs latents: 2x2 patches of the 3 channels become 64 tokens of 12 channels,
and ``img_shapes`` is ``[(1, 8, 8)]`` per image; the transformer is built with ``patch_size=2``,
``out_channels=3`` so that its output has the tokens' 12 channels, as Qwen-Image's (64 = 2 x 2 x 16).

The condition plays the part of the text prompt: :class:`ThumbnailConditioner` turns the patch's 2x2 thumbnail
(the mean colour of each 8x8 quarter) into 4 "text" tokens (one per thumbnail pixel: a linear map of its colour
plus a learned position embedding), passed as ``encoder_hidden_states`` (no mask, as ``QwenImagePipeline`` passes
when every token is valid). Its learned "empty prompt" (4 null tokens, used in training with probability 0.1) is
the unconditional branch of classifier-free guidance. A 2x2 thumbnail leaves the model much to invent (edges,
texture, where the colours meet), and the two branches predict very different things: on the 104 held-out
references, unguided samples match their thumbnails at 32.5 dB PSNR, unconditional ones at 7.6 dB. Guidance
extrapolates from the second to the first and, past about 1.5, overshoots the thumbnail colours (28.2 dB at 2.0,
25.6 dB at 3.0): more contrast, not more fidelity (figures in ``patches_dit.json``).

Labels, as for the digits model, are ints: label ``i`` (0-103) is the thumbnail of held-out reference patch ``i``
(:func:`~ditcache.bundled.patch_data.reference_patches`), :data:`NULL_PATCH` (104) is "no condition".
:func:`sample_patches` also takes thumbnails ``(B, 3, 4, 4)`` or patches ``(B, 3, 16, 16)`` directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import attrs
import torch
from torch import nn

from ditcache.bundled._weights import (
    BundledModule,
    RopeConfig,
    bundled_file,
    check_rope_axes,
    load_bundled,
    load_json_object,
    rope_axes,
)
from ditcache.bundled.patch_data import NUM_REFERENCE_PATCHES, PATCH_SIZE, THUMB_SIZE, reference_patches, thumbnails
from ditcache.bundled.sampler import StepCallback, euler_flow_sample, initial_noise
from ditcache.core.validators import int_ge

__all__ = [
    "METADATA_FILE",
    "NULL_PATCH",
    "NUM_TOKENS",
    "WEIGHTS_FILE",
    "PatchConditioning",
    "PatchesDiT",
    "PatchesDiTConfig",
    "ThumbnailConditioner",
    "as_thumbnails",
    "load_patches_dit",
    "load_patches_metadata",
    "pack_patches",
    "patches_weights_path",
    "sample_patches",
    "unpack_patch_tokens",
]

NULL_PATCH = NUM_REFERENCE_PATCHES
"""The "no condition" label (104): the unconditional branch of classifier-free guidance."""
_GRID = PATCH_SIZE // 2
NUM_TOKENS = _GRID * _GRID
"""Image tokens per patch (64: an 8x8 grid of 2x2 pixel blocks)."""
TOKEN_CHANNELS = 3 * 2 * 2
"""Channels of an image token (12: RGB x 2 x 2)."""
WEIGHTS_FILE = "patches_dit.safetensors"
"""File name of the bundled weights, inside the ``ditcache.bundled`` package."""
METADATA_FILE = "patches_dit.json"
"""File name of the bundled metadata, next to the weights."""


@attrs.frozen(kw_only=True)
class PatchesDiTConfig(RopeConfig):
    """Architecture of :class:`PatchesDiT`: the ``QwenImageTransformer2DModel`` settings plus the conditioner's."""

    num_layers: int = attrs.field(default=4, validator=int_ge(1))
    """Dual-stream blocks."""
    num_attention_heads: int = attrs.field(default=4, validator=int_ge(1))
    """Attention heads."""
    attention_head_dim: int = attrs.field(default=16, validator=int_ge(1))
    """Width of one head; the model width is ``num_attention_heads * attention_head_dim``."""
    joint_attention_dim: int = attrs.field(default=32, validator=int_ge(1))
    """Width of the conditioning ("text") tokens."""
    axes_dims_rope: tuple[int, int, int] = attrs.field(
        default=(4, 6, 6), converter=rope_axes, validator=check_rope_axes
    )
    """RoPE dimensions per axis (frame, row, column); even, summing to ``attention_head_dim``."""

    def __attrs_post_init__(self) -> None:
        if sum(self.axes_dims_rope) != self.attention_head_dim or any(d % 2 for d in self.axes_dims_rope):
            raise ValueError(
                f"PatchesDiTConfig.axes_dims_rope: expected even entries summing to attention_head_dim="
                f"{self.attention_head_dim}, got {self.axes_dims_rope}"
            )

    def transformer_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``QwenImageTransformer2DModel`` for this config."""
        return {
            "patch_size": 2,
            "in_channels": TOKEN_CHANNELS,
            "out_channels": 3,
            "num_layers": self.num_layers,
            "attention_head_dim": self.attention_head_dim,
            "num_attention_heads": self.num_attention_heads,
            "joint_attention_dim": self.joint_attention_dim,
            "guidance_embeds": False,
            "axes_dims_rope": self.axes_dims_rope,
        }


class PatchConditioning(NamedTuple):
    """The conditioning inputs of one ``QwenImageTransformer2DModel`` call, as ``QwenImagePipeline`` prepares them."""

    encoder_hidden_states: torch.Tensor
    """``(B, 4, joint_attention_dim)``: the "text" tokens (one per thumbnail pixel)."""
    encoder_hidden_states_mask: torch.Tensor | None
    """None: every conditioning token is valid (the pipeline drops an all-ones mask the same way)."""
    img_shapes: list[list[tuple[int, int, int]]]
    """``[[(1, 8, 8)]] * B``: the token grid of each image, for RoPE."""


class ThumbnailConditioner(nn.Module):
    """Turns thumbnails ``(B, 3, 2, 2)`` in [0, 1] into 4 conditioning tokens, or the learned null tokens."""

    def __init__(self, token_dim: int) -> None:
        super().__init__()
        n = THUMB_SIZE * THUMB_SIZE
        self.colour = nn.Linear(3, token_dim)
        self.position = nn.Parameter(torch.randn(n, token_dim) * 0.5)
        self.null = nn.Parameter(torch.randn(n, token_dim) * 0.5)

    def forward(self, thumbs: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
        """Tokens ``(B, 4, token_dim)``; where ``drop`` (B,) bool is set, the null tokens instead."""
        pixels = (thumbs * 2 - 1).flatten(2).transpose(1, 2)  # (B, 4, 3), row-major thumbnail pixels
        tokens: torch.Tensor = self.colour(pixels) + self.position
        if drop is not None:
            tokens = torch.where(drop[:, None, None], self.null.expand_as(tokens), tokens)
        return tokens


def pack_patches(images: torch.Tensor) -> torch.Tensor:
    """Patches ``(B, 3, 16, 16)`` in [0, 1] -> tokens ``(B, 64, 12)`` in [-1, 1] (``QwenImagePipeline._pack_latents``
    order: token ``(r, c)`` holds channels x 2 x 2 of the pixel block at rows ``2r..2r+1``, columns ``2c..2c+1``)."""
    if images.ndim != 4 or images.shape[1:] != (3, PATCH_SIZE, PATCH_SIZE):
        raise ValueError(f"images: expected shape (B, 3, {PATCH_SIZE}, {PATCH_SIZE}), got {tuple(images.shape)}")
    b = images.shape[0]
    x = (images * 2 - 1).reshape(b, 3, _GRID, 2, _GRID, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, NUM_TOKENS, TOKEN_CHANNELS)


def unpack_patch_tokens(tokens: torch.Tensor) -> torch.Tensor:
    """Tokens ``(B, 64, 12)`` -> patches ``(B, 3, 16, 16)`` in the tokens' scale (inverse of :func:`pack_patches`)."""
    if tokens.ndim != 3 or tokens.shape[1:] != (NUM_TOKENS, TOKEN_CHANNELS):
        raise ValueError(f"tokens: expected shape (B, {NUM_TOKENS}, {TOKEN_CHANNELS}), got {tuple(tokens.shape)}")
    b = tokens.shape[0]
    x = tokens.reshape(b, _GRID, _GRID, 3, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, 3, PATCH_SIZE, PATCH_SIZE)


def as_thumbnails(conditions: torch.Tensor | Sequence[int] | int) -> tuple[torch.Tensor, torch.Tensor]:
    """Conditions -> ``(thumbnails (B, 3, 2, 2) float32, null (B,) bool)`` on the CPU.

    ``conditions`` is labels (ints: 0-103 index the reference patches, 104 = no condition), thumbnails
    ``(B, 3, 2, 2)`` in [0, 1], or patches ``(B, 3, 16, 16)`` in [0, 1] (their thumbnails are used).
    """
    if isinstance(conditions, torch.Tensor) and conditions.is_floating_point():
        c = conditions.detach().float().cpu()
        if c.ndim == 4 and c.shape[1:] == (3, PATCH_SIZE, PATCH_SIZE):
            c = thumbnails(c)
        if c.ndim != 4 or c.shape[1:] != (3, THUMB_SIZE, THUMB_SIZE) or c.shape[0] == 0:
            raise ValueError(
                f"conditions: expected labels, thumbnails (B, 3, {THUMB_SIZE}, {THUMB_SIZE}) or patches "
                f"(B, 3, {PATCH_SIZE}, {PATCH_SIZE}), got a float tensor of shape {tuple(conditions.shape)}"
            )
        return c, torch.zeros(len(c), dtype=torch.bool)
    if isinstance(conditions, bool) or (isinstance(conditions, torch.Tensor) and conditions.dtype == torch.bool):
        raise TypeError(f"conditions: expected int labels 0..{NULL_PATCH} or float thumbnails, got {conditions!r}")
    t = torch.as_tensor([conditions] if isinstance(conditions, int) else conditions)
    if t.ndim != 1 or t.numel() == 0 or t.is_floating_point() or t.is_complex():
        raise ValueError(
            f"conditions: expected a non-empty 1-D sequence of int labels, got {t.dtype} of shape {tuple(t.shape)}"
        )
    lo, hi = int(t.min()), int(t.max())
    if lo < 0 or hi > NULL_PATCH:
        raise ValueError(
            f"conditions: allowed labels are 0..{NULL_PATCH - 1} (reference patches) and {NULL_PATCH} "
            f"(no condition), got values in [{lo}, {hi}]"
        )
    labels = t.long()
    null = labels == NULL_PATCH
    thumbs = thumbnails(reference_patches()[labels.clamp_max(NULL_PATCH - 1)])
    return thumbs, null


class PatchesDiT(BundledModule):
    """The patches model: ``transformer`` (a diffusers ``QwenImageTransformer2DModel``) plus its thumbnail
    conditioner. Call ``model.transformer(...)`` yourself (so module hooks and caches apply) with the inputs of
    :meth:`conditioning`, or use :meth:`forward` for a plain velocity prediction."""

    def __init__(self, config: PatchesDiTConfig | None = None) -> None:
        super().__init__()
        from diffusers import QwenImageTransformer2DModel

        self.config = config if config is not None else PatchesDiTConfig()
        self.transformer = QwenImageTransformer2DModel(**self.config.transformer_kwargs())
        self.conditioner = ThumbnailConditioner(self.config.joint_attention_dim)

    def conditioning(
        self, conditions: torch.Tensor | Sequence[int] | int, *, null: torch.Tensor | bool | None = None
    ) -> PatchConditioning:
        """Conditions (see :func:`as_thumbnails`) -> the ``QwenImageTransformer2DModel`` conditioning inputs.

        ``null``: True (or a ``(B,)`` bool mask) gives the "no condition" tokens (where set) instead.
        """
        thumbs, is_null = as_thumbnails(conditions)
        if null is not None:
            is_null = is_null | (torch.as_tensor(null, dtype=torch.bool).expand(len(thumbs)))
        device, dtype = self.device, self.dtype
        tokens = self.conditioner(thumbs.to(device=device, dtype=dtype), is_null.to(device))
        return PatchConditioning(tokens, None, [[(1, _GRID, _GRID)]] * len(thumbs))

    def forward(
        self, tokens: torch.Tensor, timestep: torch.Tensor, conditions: torch.Tensor | Sequence[int] | int
    ) -> torch.Tensor:
        """The predicted velocity ``noise - x0`` for ``tokens`` (B, 64, 12) at ``timestep`` (B,) in [0, 1]."""
        return self.velocity(tokens, timestep, self.conditioning(conditions))

    def velocity(self, tokens: torch.Tensor, timestep: torch.Tensor, cond: PatchConditioning) -> torch.Tensor:
        """One transformer call with prepared conditioning, with the arguments ``QwenImagePipeline`` passes."""
        out = self.transformer(
            hidden_states=tokens,
            timestep=timestep,
            encoder_hidden_states_mask=cond.encoder_hidden_states_mask,
            encoder_hidden_states=cond.encoder_hidden_states,
            img_shapes=cond.img_shapes,
            return_dict=False,
        )[0]
        assert isinstance(out, torch.Tensor)
        return out

    @staticmethod
    def decode(tokens: torch.Tensor) -> torch.Tensor:
        """Tokens ``(B, 64, 12)`` in [-1, 1] -> patches ``(B, 3, 16, 16)`` in [0, 1] (float32, clamped)."""
        return ((unpack_patch_tokens(tokens.float()) + 1) / 2).clamp(0, 1)

    @staticmethod
    def encode(images: torch.Tensor) -> torch.Tensor:
        """Patches ``(B, 3, 16, 16)`` in [0, 1] -> tokens ``(B, 64, 12)`` in [-1, 1]."""
        return pack_patches(images)


def patches_weights_path() -> Path:
    """Path of the bundled weights file."""
    return bundled_file(WEIGHTS_FILE)


def load_patches_metadata(path: str | Path | None = None) -> dict[str, Any]:
    """The bundled metadata (``patches_dit.json``), or the JSON file at ``path``."""
    return load_json_object(path if path is not None else bundled_file(METADATA_FILE))


def load_patches_dit(
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    *,
    weights: str | Path | None = None,
) -> PatchesDiT:
    """Load the bundled trained patches model (or the weights at ``weights``, with their JSON next to them).

    Returns the model in eval mode on ``device`` in ``dtype``, with gradients disabled.
    """
    return load_bundled(PatchesDiT, PatchesDiTConfig, WEIGHTS_FILE, weights, device, dtype)


@torch.no_grad()
def sample_patches(
    model: PatchesDiT,
    conditions: torch.Tensor | Sequence[int] | int,
    num_steps: int = 50,
    guidance_scale: float | None = None,
    seed: int = 0,
    *,
    shift: float = 1.0,
    noise: torch.Tensor | None = None,
    callback: StepCallback | None = None,
    refresh_cache: bool = True,
) -> torch.Tensor:
    """Generate patches ``(B, 3, 16, 16)`` in [0, 1] (float32, on the model's device), one per condition.

    Args:
        model: the patches model (:func:`load_patches_dit`).
        conditions: labels (0-103: the thumbnail of that reference patch; 104 = no condition), thumbnails
            ``(B, 3, 2, 2)`` or patches ``(B, 3, 16, 16)`` in [0, 1] (see :func:`as_thumbnails`).
        num_steps: Euler steps.
        guidance_scale: None for no guidance; a number for classifier-free guidance with a separate ``"uncond"``
            call per step on the null tokens (1.0 is the same as None).
        seed: seed of the initial noise (drawn on the CPU); ignored with ``noise``.
        shift: static sigma-schedule shift (1.0: uniform steps).
        noise: explicit initial noise ``(B, 64, 12)`` instead of the seeded one.
        callback: called after every step with a :class:`~ditcache.bundled.sampler.StepEvent`.
        refresh_cache: refresh a ditcache cache applied to ``model.transformer`` with the step count first.

    The same Euler loop as the digits model's :func:`~ditcache.bundled.sample`
    (:func:`~ditcache.bundled.sampler.euler_flow_sample`). Deterministic for a given seed, device and dtype.
    """
    if not isinstance(model, PatchesDiT):
        raise TypeError(f"model: expected a PatchesDiT (see load_patches_dit), got {type(model).__name__}")
    cond = model.conditioning(conditions)
    batch = cond.encoder_hidden_states.shape[0]
    latents = initial_noise((batch, NUM_TOKENS, TOKEN_CHANNELS), seed, noise, "conditions")
    latents = latents.to(device=model.device, dtype=model.dtype)
    tokens = euler_flow_sample(
        model.transformer,
        model.velocity,
        cond,
        lambda: model.conditioning(conditions, null=True),
        latents,
        num_steps,
        guidance_scale,
        shift=shift,
        callback=callback,
        refresh_cache=refresh_cache,
    )
    return model.decode(tokens)
