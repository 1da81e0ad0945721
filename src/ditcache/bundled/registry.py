"""The bundled models by name, so that tools can offer ``--model digits`` / ``--model patches``.

Each :class:`BundledModel` names a loader and a sampler with one shared calling convention, so a tool treats every
bundled model alike::

    from ditcache.bundled import get_bundled_model

    entry = get_bundled_model("patches")
    model = entry.load()  # (device="cpu", dtype=torch.float32)
    images = entry.sample(model, list(entry.default_labels), 50, entry.default_guidance, 0)  # seed 0
    # model.transformer is the diffusers transformer to cache

``sample(model, labels, num_steps, guidance_scale, seed, *, shift=1.0, noise=None, callback=None,
refresh_cache=True)`` returns images in [0, 1] of shape ``(B, *image_shape)``; labels are ints in
``0..null_label`` (``null_label`` asks for an unconditional sample).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import torch
from torch import nn

__all__ = ["BUNDLED_MODELS", "BundledModel", "get_bundled_model"]


@attrs.frozen(kw_only=True)
class BundledModel:
    """One bundled model: how to load it and sample it, and what its labels and images are."""

    name: str
    """Registry key (``--model NAME``)."""
    summary: str
    """One line for ``--help`` and reports."""
    transformer_class: str
    """The diffusers class of ``model.transformer`` (the module caches are applied to)."""
    load: Callable[..., nn.Module]
    """``load(device="cpu", dtype=torch.float32)`` -> the model (eval mode, no gradients), with ``.transformer``."""
    sample: Callable[..., torch.Tensor]
    """``sample(model, labels, num_steps, guidance_scale, seed, *, shift, noise, callback, refresh_cache)`` ->
    images ``(B, *image_shape)`` in [0, 1]; calls ``model.transformer`` inside ``cache_context("cond")`` (and
    ``("uncond")`` with guidance) every step, as diffusers pipelines do."""
    default_labels: tuple[int, ...]
    """The labels a tool samples when the user names none (one image each)."""
    null_label: int
    """The "no condition" label (labels are ``0..null_label``); it gives unconditional samples."""
    default_guidance: float
    """A classifier-free guidance scale that suits the model."""
    image_shape: tuple[int, ...]
    """Shape of one generated image: ``(16, 16)`` grey or ``(3, 16, 16)`` RGB."""
    profile: str | None = None
    """Name of the calibrated cache profiles shipped for it (``TeaCacheConfig(profile=...)``), if any."""
    data_range: float = 1.0
    """Range of the image values, for PSNR."""


def _load_digits(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> nn.Module:
    from ditcache.bundled.model import load_digits_dit

    return load_digits_dit(device, dtype)


def _sample_digits(model: Any, labels: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
    from ditcache.bundled.sampler import sample

    return sample(model, labels, *args, **kwargs)


def _load_patches(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> nn.Module:
    from ditcache.bundled.patches import load_patches_dit

    return load_patches_dit(device, dtype)


def _sample_patches(model: Any, labels: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
    from ditcache.bundled.patches import sample_patches

    return sample_patches(model, labels, *args, **kwargs)


BUNDLED_MODELS: dict[str, BundledModel] = {
    "digits": BundledModel(
        name="digits",
        summary="class-conditional 16x16 handwritten digits (scikit-learn digits) on a diffusers "
        "FluxTransformer2DModel, 0.59 M parameters",
        transformer_class="FluxTransformer2DModel",
        load=_load_digits,
        sample=_sample_digits,
        default_labels=tuple(range(10)),
        null_label=10,
        default_guidance=3.0,
        image_shape=(16, 16),
        profile="digits-dit",
    ),
    "patches": BundledModel(
        name="patches",
        summary="16x16 colour patches of scikit-learn's two sample photos, conditioned on a 2x2 thumbnail, on a "
        "diffusers QwenImageTransformer2DModel, 0.63 M parameters",
        transformer_class="QwenImageTransformer2DModel",
        load=_load_patches,
        sample=_sample_patches,
        default_labels=tuple(range(10)),
        null_label=104,
        default_guidance=2.0,
        image_shape=(3, 16, 16),
    ),
}
"""The bundled models by name: ``"digits"`` (:mod:`ditcache.bundled.model`) and ``"patches"``
(:mod:`ditcache.bundled.patches`)."""


def get_bundled_model(name: str) -> BundledModel:
    """The registry entry called ``name``; a ValueError naming ``model`` and the allowed names otherwise."""
    entry = BUNDLED_MODELS.get(name) if isinstance(name, str) else None
    if entry is None:
        raise ValueError(f"model: unknown bundled model {name!r}; allowed values: {', '.join(sorted(BUNDLED_MODELS))}")
    return entry
