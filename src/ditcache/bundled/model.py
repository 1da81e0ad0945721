"""The bundled class-conditional digits diffusion transformer.

A real diffusers ``FluxTransformer2DModel`` (two double-stream and four single-stream blocks, width 64) trained
with rectified flow on scikit-learn's 8x8 handwritten digits, upsampled to 16x16. Images are packed the way Flux
pipelines pack latents: 2x2 patches become 64 tokens of 4 channels, with ``img_ids`` the ``(0, row, col)`` grid of
``FluxPipeline._prepare_latent_image_ids``. A small :class:`ClassConditioner` stands in for the text encoder: it
turns a class label (0-9, or 10 for "no class", used by classifier-free guidance) into a few "text" tokens and a
pooled vector.

The weights (``digits_dit.safetensors``) and their metadata (``digits_dit.json``: config, training settings,
seed, final loss, quality figures, SHA-256 of the weights) ship inside the package; ``scripts/train_digits_dit.py``
reproduces them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from ditcache.bundled._weights import (
    BundledModule,
    RopeConfig,
    bundled_file,
    check_rope_axes,
    file_sha256,
    load_bundled,
    load_json_object,
    rope_axes,
)
from ditcache.core.validators import int_ge

__all__ = [
    "IMAGE_SIZE",
    "METADATA_FILE",
    "NULL_CLASS",
    "NUM_CLASSES",
    "WEIGHTS_FILE",
    "ClassConditioner",
    "DigitClassifier",
    "Conditioning",
    "DigitsDiT",
    "DigitsDiTConfig",
    "as_labels",
    "digits_dataset",
    "file_sha256",
    "image_ids",
    "load_digits_dit",
    "load_metadata",
    "pack_images",
    "unpack_tokens",
    "weights_path",
]

NUM_CLASSES = 10
"""Digit classes 0-9."""
NULL_CLASS = 10
"""The "no class" label: the unconditional branch of classifier-free guidance."""
IMAGE_SIZE = 16
"""Side of the generated images (the 8x8 digits are upsampled to this)."""
WEIGHTS_FILE = "digits_dit.safetensors"
"""File name of the bundled weights, inside the ``ditcache.bundled`` package."""
METADATA_FILE = "digits_dit.json"
"""File name of the bundled metadata, next to the weights."""


@attrs.frozen(kw_only=True)
class DigitsDiTConfig(RopeConfig):
    """Architecture of :class:`DigitsDiT`: the ``FluxTransformer2DModel`` settings plus the conditioner's."""

    num_layers: int = attrs.field(default=2, validator=int_ge(1))
    """Double-stream (joint) blocks."""
    num_single_layers: int = attrs.field(default=4, validator=int_ge(1))
    """Single-stream blocks."""
    num_attention_heads: int = attrs.field(default=4, validator=int_ge(1))
    """Attention heads."""
    attention_head_dim: int = attrs.field(default=16, validator=int_ge(1))
    """Width of one head; the model width is ``num_attention_heads * attention_head_dim``."""
    joint_attention_dim: int = attrs.field(default=32, validator=int_ge(1))
    """Width of the conditioning ("text") tokens."""
    pooled_projection_dim: int = attrs.field(default=32, validator=int_ge(1))
    """Width of the pooled conditioning vector."""
    axes_dims_rope: tuple[int, int, int] = attrs.field(
        default=(4, 6, 6), converter=rope_axes, validator=check_rope_axes
    )
    """RoPE dimensions per id axis; they must sum to ``attention_head_dim``."""
    cond_tokens: int = attrs.field(default=4, validator=int_ge(1))
    """Conditioning tokens per label."""

    def __attrs_post_init__(self) -> None:
        if sum(self.axes_dims_rope) != self.attention_head_dim:
            raise ValueError(
                f"DigitsDiTConfig.axes_dims_rope: must sum to attention_head_dim={self.attention_head_dim}, "
                f"got {self.axes_dims_rope} (sum {sum(self.axes_dims_rope)})"
            )
        if any(d % 2 for d in self.axes_dims_rope):
            raise ValueError(f"DigitsDiTConfig.axes_dims_rope: every entry must be even, got {self.axes_dims_rope}")

    def transformer_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``FluxTransformer2DModel`` for this config."""
        return {
            "patch_size": 1,
            "in_channels": 4,
            "out_channels": None,
            "num_layers": self.num_layers,
            "num_single_layers": self.num_single_layers,
            "attention_head_dim": self.attention_head_dim,
            "num_attention_heads": self.num_attention_heads,
            "joint_attention_dim": self.joint_attention_dim,
            "pooled_projection_dim": self.pooled_projection_dim,
            "guidance_embeds": False,
            "axes_dims_rope": self.axes_dims_rope,
        }


class Conditioning(NamedTuple):
    """The conditioning inputs of one ``FluxTransformer2DModel`` call, as a Flux pipeline prepares them."""

    encoder_hidden_states: torch.Tensor
    """``(B, cond_tokens, joint_attention_dim)``: the "text" tokens."""
    pooled_projections: torch.Tensor
    """``(B, pooled_projection_dim)``: the pooled vector."""
    txt_ids: torch.Tensor
    """``(cond_tokens, 3)`` zeros, as Flux's text ids."""
    img_ids: torch.Tensor
    """``(64, 3)``: the ``(0, row, col)`` grid of the 8x8 token layout."""


class ClassConditioner(nn.Module):
    """Turns labels 0-10 (10 = no class) into conditioning tokens and a pooled vector: the "text encoder"."""

    def __init__(self, cond_tokens: int, token_dim: int, pooled_dim: int) -> None:
        super().__init__()
        self.cond_tokens = cond_tokens
        self.token_dim = token_dim
        self.tokens = nn.Embedding(NUM_CLASSES + 1, cond_tokens * token_dim)
        self.pooled = nn.Embedding(NUM_CLASSES + 1, pooled_dim)
        nn.init.normal_(self.tokens.weight, std=0.5)
        nn.init.normal_(self.pooled.weight, std=0.5)

    def forward(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(tokens (B, cond_tokens, token_dim), pooled (B, pooled_dim))`` for integer ``labels`` (B,)."""
        tokens = self.tokens(labels).view(labels.shape[0], self.cond_tokens, self.token_dim)
        return tokens, self.pooled(labels)


def pack_images(images: torch.Tensor) -> torch.Tensor:
    """Images ``(B, 16, 16)`` in [0, 1] -> tokens ``(B, 64, 4)`` in [-1, 1] (2x2 patches, Flux packing order)."""
    if images.ndim != 3 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"images: expected shape (B, {IMAGE_SIZE}, {IMAGE_SIZE}), got {tuple(images.shape)}")
    b = images.shape[0]
    x = images * 2 - 1
    half = IMAGE_SIZE // 2
    # (B, 1, H, W) -> (B, H/2, W/2, C*2*2), the order of FluxPipeline._pack_latents with C = 1
    x = x.reshape(b, 1, half, 2, half, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, half * half, 4)


def unpack_tokens(tokens: torch.Tensor) -> torch.Tensor:
    """Tokens ``(B, 64, 4)`` -> images ``(B, 16, 16)`` in the tokens' scale (inverse of :func:`pack_images`)."""
    half = IMAGE_SIZE // 2
    if tokens.ndim != 3 or tokens.shape[1:] != (half * half, 4):
        raise ValueError(f"tokens: expected shape (B, {half * half}, 4), got {tuple(tokens.shape)}")
    b = tokens.shape[0]
    x = tokens.reshape(b, half, half, 1, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, IMAGE_SIZE, IMAGE_SIZE)


def image_ids(device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The ``(64, 3)`` ``(0, row, col)`` ids of the 8x8 token grid, as ``FluxPipeline._prepare_latent_image_ids``."""
    half = IMAGE_SIZE // 2
    ids = torch.zeros(half, half, 3)
    ids[..., 1] = torch.arange(half)[:, None]
    ids[..., 2] = torch.arange(half)[None, :]
    return ids.reshape(half * half, 3).to(device=device, dtype=dtype)


def as_labels(labels: torch.Tensor | Sequence[int] | int, device: torch.device | str | None = None) -> torch.Tensor:
    """Validate class labels (0-9, or 10 = no class) and return them as a ``(B,)`` int64 tensor."""
    if isinstance(labels, bool):
        raise TypeError(f"labels: expected ints in 0..{NULL_CLASS}, got {labels!r}")
    if isinstance(labels, int):
        labels = [labels]
    t = labels if isinstance(labels, torch.Tensor) else torch.as_tensor(list(labels))
    if t.ndim != 1 or t.numel() == 0:
        raise ValueError(f"labels: expected a non-empty 1-D sequence of class labels, got shape {tuple(t.shape)}")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"labels: expected integer class labels, got dtype {t.dtype}")
    lo, hi = int(t.min()), int(t.max())
    if lo < 0 or hi > NULL_CLASS:
        raise ValueError(
            f"labels: allowed values are 0..{NUM_CLASSES - 1} (digits) and {NULL_CLASS} (no class), "
            f"got values in [{lo}, {hi}]"
        )
    return t.to(device=device, dtype=torch.long)


class DigitsDiT(BundledModule):
    """The digits model: ``transformer`` (a diffusers ``FluxTransformer2DModel``) plus its class conditioner.

    Call ``model.transformer(...)`` yourself (so that module hooks and caches apply) with the inputs of
    :meth:`conditioning`, or use :meth:`forward` for a plain velocity prediction.
    """

    def __init__(self, config: DigitsDiTConfig | None = None) -> None:
        super().__init__()
        from diffusers import FluxTransformer2DModel

        self.config = config if config is not None else DigitsDiTConfig()
        self.transformer = FluxTransformer2DModel(**self.config.transformer_kwargs())
        self.conditioner = ClassConditioner(
            self.config.cond_tokens, self.config.joint_attention_dim, self.config.pooled_projection_dim
        )

    def conditioning(self, labels: torch.Tensor | Sequence[int] | int) -> Conditioning:
        """Labels (0-9, or 10 = no class) -> ``(encoder_hidden_states, pooled_projections, txt_ids, img_ids)``."""
        device, dtype = self.device, self.dtype
        t = as_labels(labels, device)
        tokens, pooled = self.conditioner(t)
        txt_ids = torch.zeros(self.config.cond_tokens, 3, device=device, dtype=dtype)
        return Conditioning(tokens.to(dtype), pooled.to(dtype), txt_ids, image_ids(device, dtype))

    def forward(
        self, tokens: torch.Tensor, timestep: torch.Tensor, labels: torch.Tensor | Sequence[int] | int
    ) -> torch.Tensor:
        """The predicted velocity ``noise - x0`` for ``tokens`` (B, 64, 4) at ``timestep`` (B,) in [0, 1]."""
        return self.velocity(tokens, timestep, self.conditioning(labels))

    def velocity(self, tokens: torch.Tensor, timestep: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """One transformer call with prepared conditioning (a sampler prepares it once and reuses the same tensors
        every step, which is also what ditcache's automatic CFG-branch identity keys on)."""
        out = self.transformer(
            hidden_states=tokens,
            encoder_hidden_states=cond.encoder_hidden_states,
            pooled_projections=cond.pooled_projections,
            timestep=timestep,
            img_ids=cond.img_ids,
            txt_ids=cond.txt_ids,
            return_dict=False,
        )[0]
        assert isinstance(out, torch.Tensor)
        return out

    @staticmethod
    def decode(tokens: torch.Tensor) -> torch.Tensor:
        """Tokens ``(B, 64, 4)`` in [-1, 1] -> images ``(B, 16, 16)`` in [0, 1] (float32, clamped)."""
        return ((unpack_tokens(tokens.float()) + 1) / 2).clamp(0, 1)

    @staticmethod
    def encode(images: torch.Tensor) -> torch.Tensor:
        """Images ``(B, 16, 16)`` in [0, 1] -> tokens ``(B, 64, 4)`` in [-1, 1]."""
        return pack_images(images)


def digits_dataset() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's digits as ``(images (1797, 16, 16) in [0, 1] float32, labels (1797,) int64)``.

    The 8x8 images (values 0-16) are scaled to [0, 1] and upsampled bilinearly to 16x16. Needs scikit-learn.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("digits_dataset: needs scikit-learn (pip install scikit-learn)") from exc
    data = load_digits()
    small = torch.as_tensor(data.images, dtype=torch.float32) / 16.0
    images = F.interpolate(small[:, None], size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
    return images[:, 0].clamp(0, 1).contiguous(), torch.as_tensor(data.target, dtype=torch.long)


def weights_path() -> Path:
    """Path of the bundled weights file."""
    return bundled_file(WEIGHTS_FILE)


def load_metadata(path: str | Path | None = None) -> dict[str, Any]:
    """The bundled metadata (``digits_dit.json``), or the JSON file at ``path``."""
    return load_json_object(path if path is not None else bundled_file(METADATA_FILE))


def load_digits_dit(
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    *,
    weights: str | Path | None = None,
) -> DigitsDiT:
    """Load the bundled trained digits model (or the weights at ``weights``, with their JSON next to them).

    Returns the model in eval mode on ``device`` in ``dtype``, with gradients disabled.
    """
    return load_bundled(DigitsDiT, DigitsDiTConfig, WEIGHTS_FILE, weights, device, dtype)


class DigitClassifier:
    """A digit classifier fitted on the real (upsampled) digits, to score generated images.

    scikit-learn's ``SVC(C=10, gamma="scale")`` on the 256 pixels of the 16x16 images (about 97% five-fold
    cross-validated accuracy on the real digits). Needs scikit-learn.
    """

    def __init__(self) -> None:
        try:
            from sklearn.svm import SVC
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("DigitClassifier: needs scikit-learn (pip install scikit-learn)") from exc
        images, labels = digits_dataset()
        self._svc = SVC(C=10.0, gamma="scale")
        self._svc.fit(images.reshape(len(images), -1).numpy(), labels.numpy())

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Predicted digit ``(B,)`` (int64) for images ``(B, 16, 16)`` in [0, 1]."""
        if images.ndim != 3 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError(f"images: expected shape (B, {IMAGE_SIZE}, {IMAGE_SIZE}), got {tuple(images.shape)}")
        flat = images.detach().float().cpu().reshape(len(images), -1).numpy()
        return torch.as_tensor(self._svc.predict(flat), dtype=torch.long)

    def accuracy(self, images: torch.Tensor, labels: torch.Tensor | Sequence[int]) -> float:
        """Fraction of ``images`` classified as their intended ``labels`` (0-9)."""
        y = as_labels(labels)
        if int(y.max()) >= NUM_CLASSES:
            raise ValueError(f"labels: allowed values are 0..{NUM_CLASSES - 1} for scoring, got {int(y.max())}")
        if len(y) != len(images):
            raise ValueError(f"labels: expected {len(images)} labels (one per image), got {len(y)}")
        return float((self.predict(images) == y).float().mean())
