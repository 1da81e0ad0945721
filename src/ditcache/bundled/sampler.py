"""Euler flow-matching sampler for the bundled models, calling the transformer the way diffusers pipelines do.

Every denoising step calls ``model.transformer(...)`` (so module hooks and ditcache caches apply) inside
``model.transformer.cache_context("cond")``, and, with classifier-free guidance, a second, separate call with the
"no class" label inside ``cache_context("uncond")``, as ``FluxPipeline`` does with ``true_cfg_scale``. The
velocity is then ``v_uncond + guidance_scale * (v_cond - v_uncond)``.

The noise levels (sigmas) fall from 1 to 0 in ``num_steps`` equal steps, optionally warped by the static shift of
SD3/Flux (``sigma' = shift * sigma / (1 + (shift - 1) * sigma)``; shift > 1 spends more steps at high noise). The
transformer is called with ``timestep = sigma`` in [0, 1], as Flux and Qwen-Image pipelines do (the model
multiplies by 1000).

:func:`euler_flow_sample` is the loop itself, independent of the model: the digits model's :func:`sample` and the
photo-patches model's :func:`ditcache.bundled.patches.sample_patches` both run it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import attrs
import torch
from torch import nn

from ditcache.bundled.model import NULL_CLASS, DigitsDiT, as_labels

__all__ = [
    "StepCallback",
    "StepEvent",
    "euler_flow_sample",
    "initial_noise",
    "sample",
    "sample_tokens",
    "sigma_schedule",
]

C = TypeVar("C")


@attrs.frozen
class StepEvent:
    """What a per-step callback receives after each denoising step."""

    step: int
    """Index of the step, 0-based."""
    num_steps: int
    """Steps of this generation."""
    sigma: float
    """Noise level at the start of the step (the timestep the transformer saw)."""
    sigma_next: float
    """Noise level after the step."""
    latents: torch.Tensor
    """The packed latent tokens after the step (``(B, 64, 4)`` for the digits model, ``(B, 64, 12)`` for the
    patches model)."""
    velocity: torch.Tensor
    """The (guided) velocity used for the step."""
    transformer_calls: int
    """Transformer calls made during the step (1, or 2 with guidance)."""
    seconds: float
    """Wall time of the step (the device is synchronized first when it is CUDA)."""


StepCallback = Callable[[StepEvent], None]
"""A callable invoked after every step with its :class:`StepEvent`."""


def sigma_schedule(num_steps: int, shift: float = 1.0) -> torch.Tensor:
    """The ``num_steps + 1`` noise levels from 1 down to 0 (float64), warped by ``shift``."""
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps: expected an int >= 1, got {num_steps!r}")
    if isinstance(shift, bool) or not isinstance(shift, (int, float)) or not math.isfinite(shift) or shift <= 0:
        raise ValueError(f"shift: expected a finite number > 0, got {shift!r}")
    sigmas = torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float64)
    if shift != 1.0:
        sigmas = shift * sigmas / (1 + (shift - 1) * sigmas)
    return sigmas


def _check_guidance(guidance_scale: float | None) -> float | None:
    if guidance_scale is None:
        return None
    if (
        isinstance(guidance_scale, bool)
        or not isinstance(guidance_scale, (int, float))
        or not math.isfinite(guidance_scale)
        or guidance_scale < 0
    ):
        raise ValueError(f"guidance_scale: expected None or a finite number >= 0, got {guidance_scale!r}")
    return float(guidance_scale)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def initial_noise(shape: tuple[int, ...], seed: int, noise: torch.Tensor | None, what: str = "labels") -> torch.Tensor:
    """The starting noise of a generation: ``noise`` (checked against ``shape``) or a float32 normal draw from
    ``seed`` on the CPU (so the same seed gives the same noise on every device)."""
    if noise is None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed: expected an int, got {seed!r}")
        generator = torch.Generator(device="cpu").manual_seed(seed)
        return torch.randn(shape, generator=generator, dtype=torch.float32)
    if tuple(noise.shape) != shape:
        raise ValueError(f"noise: expected shape {shape} for {shape[0]} {what}, got {tuple(noise.shape)}")
    return noise


@torch.no_grad()
def euler_flow_sample(
    transformer: nn.Module,
    velocity: Callable[[torch.Tensor, torch.Tensor, C], torch.Tensor],
    cond: C,
    uncond: C | Callable[[], C] | None,
    latents: torch.Tensor,
    num_steps: int,
    guidance_scale: float | None = None,
    *,
    shift: float = 1.0,
    callback: StepCallback | None = None,
    refresh_cache: bool = True,
) -> torch.Tensor:
    """The Euler flow-matching loop shared by the bundled models, calling ``transformer`` as diffusers pipelines do.

    Args:
        transformer: the diffusers transformer ``velocity`` calls (its ``cache_context`` names the CFG branches,
            and a ditcache cache applied to it is refreshed with ``num_steps`` first when ``refresh_cache``).
        velocity: ``velocity(latents, timestep, conditioning)`` -> the predicted velocity, one transformer call.
        cond: the conditioning of the ``"cond"`` branch, prepared once and passed unchanged every step.
        uncond: the conditioning of the ``"uncond"`` branch, or a no-argument callable that builds it; used (and
            the callable called, once) only with a guidance scale other than None and 1.0.
        latents: the starting noise, already on the model's device and in its dtype.
        num_steps, guidance_scale, shift, callback, refresh_cache: as in :func:`sample`.

    Returns the final latents, in the dtype of ``latents``.
    """
    scale = _check_guidance(guidance_scale)
    sigmas = sigma_schedule(num_steps, shift)
    device, dtype = latents.device, latents.dtype
    batch = latents.shape[0]
    guided = scale is not None and scale != 1.0
    uncond_cond: C | None = None
    if guided:
        if uncond is None:
            raise ValueError("uncond: a guidance scale other than 1.0 needs the unconditional conditioning")
        uncond_cond = uncond() if callable(uncond) else uncond

    if refresh_cache:
        from ditcache.core.runtime import get_cache_runtime

        runtime = get_cache_runtime(transformer)
        if runtime is not None:
            runtime.refresh(num_steps)

    for i in range(num_steps):
        if callback is not None:
            _sync(latents.device)
        start = time.perf_counter()
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        timestep = torch.full((batch,), sigma, device=device, dtype=dtype)
        with transformer.cache_context("cond"):  # type: ignore[operator]
            v = velocity(latents, timestep, cond)
        if guided:
            assert scale is not None and uncond_cond is not None
            with transformer.cache_context("uncond"):  # type: ignore[operator]
                v_uncond = velocity(latents, timestep, uncond_cond)
            v = v_uncond + scale * (v - v_uncond)
        # Euler step in float32, as FlowMatchEulerDiscreteScheduler does, then back to the model dtype
        latents = (latents.float() + (sigma_next - sigma) * v.float()).to(dtype)
        if callback is not None:
            _sync(latents.device)
            callback(
                StepEvent(
                    step=i,
                    num_steps=num_steps,
                    sigma=sigma,
                    sigma_next=sigma_next,
                    latents=latents,
                    velocity=v,
                    transformer_calls=2 if guided else 1,
                    seconds=time.perf_counter() - start,
                )
            )
    return latents


@torch.no_grad()
def sample_tokens(
    model: DigitsDiT,
    labels: torch.Tensor | Sequence[int] | int,
    num_steps: int = 50,
    guidance_scale: float | None = None,
    seed: int = 0,
    *,
    shift: float = 1.0,
    noise: torch.Tensor | None = None,
    callback: StepCallback | None = None,
    refresh_cache: bool = True,
) -> torch.Tensor:
    """Generate tokens ``(B, 64, 4)`` for ``labels``; see :func:`sample` for the arguments."""
    if not isinstance(model, DigitsDiT):
        raise TypeError(f"model: expected a DigitsDiT (see load_digits_dit), got {type(model).__name__}")
    device, dtype = model.device, model.dtype
    y = as_labels(labels, device)
    latents = initial_noise((y.shape[0], 64, 4), seed, noise).to(device=device, dtype=dtype)
    return euler_flow_sample(
        model.transformer,
        model.velocity,
        model.conditioning(y),
        lambda: model.conditioning(torch.full_like(y, NULL_CLASS)),
        latents,
        num_steps,
        guidance_scale,
        shift=shift,
        callback=callback,
        refresh_cache=refresh_cache,
    )


def sample(
    model: DigitsDiT,
    labels: torch.Tensor | Sequence[int] | int,
    num_steps: int = 50,
    guidance_scale: float | None = None,
    seed: int = 0,
    *,
    shift: float = 1.0,
    noise: torch.Tensor | None = None,
    callback: StepCallback | None = None,
    refresh_cache: bool = True,
) -> torch.Tensor:
    """Generate digit images ``(B, 16, 16)`` in [0, 1] (float32, on the model's device) for ``labels``.

    Args:
        model: the digits model (:func:`~ditcache.bundled.load_digits_dit`).
        labels: one class label per image, 0-9 (10 = no class gives unconditional samples).
        num_steps: Euler steps.
        guidance_scale: None for no guidance (one transformer call per step); a number for classifier-free
            guidance with a separate "uncond" call per step (1.0 is the same as None and makes no extra call).
        seed: seed of the initial noise (drawn on the CPU, so the same on every device); ignored with ``noise``.
        shift: static sigma-schedule shift (1.0: uniform steps).
        noise: explicit initial noise ``(B, 64, 4)`` instead of the seeded one.
        callback: called after every step with a :class:`StepEvent`.
        refresh_cache: when a ditcache cache is applied to ``model.transformer``, start a new generation with the
            known step count first (``ditcache.refresh``), so step-count-aware policies (forced last step) apply.

    Deterministic for a given seed, device and dtype.
    """
    tokens = sample_tokens(
        model,
        labels,
        num_steps,
        guidance_scale,
        seed,
        shift=shift,
        noise=noise,
        callback=callback,
        refresh_cache=refresh_cache,
    )
    return model.decode(tokens)
