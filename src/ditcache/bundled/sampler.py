"""Euler flow-matching sampler for the bundled digits model, calling the transformer the way diffusers pipelines do.

Every denoising step calls ``model.transformer(...)`` (so module hooks and ditcache caches apply) inside
``model.transformer.cache_context("cond")``, and, with classifier-free guidance, a second, separate call with the
"no class" label inside ``cache_context("uncond")``, as ``FluxPipeline`` does with ``true_cfg_scale``. The
velocity is then ``v_uncond + guidance_scale * (v_cond - v_uncond)``.

The noise levels (sigmas) fall from 1 to 0 in ``num_steps`` equal steps, optionally warped by the static shift of
SD3/Flux (``sigma' = shift * sigma / (1 + (shift - 1) * sigma)``; shift > 1 spends more steps at high noise). The
transformer is called with ``timestep = sigma`` in [0, 1], as Flux pipelines do (the model multiplies by 1000).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import attrs
import torch

from ditcache.bundled.model import NULL_CLASS, DigitsDiT, as_labels

__all__ = ["StepEvent", "StepCallback", "sample", "sample_tokens", "sigma_schedule"]


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
    """The tokens ``(B, 64, 4)`` after the step."""
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
    scale = _check_guidance(guidance_scale)
    sigmas = sigma_schedule(num_steps, shift)
    device, dtype = model.device, model.dtype
    y = as_labels(labels, device)
    batch = y.shape[0]
    shape = (batch, 64, 4)
    if noise is None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed: expected an int, got {seed!r}")
        generator = torch.Generator(device="cpu").manual_seed(seed)
        noise = torch.randn(shape, generator=generator, dtype=torch.float32)
    elif tuple(noise.shape) != shape:
        raise ValueError(f"noise: expected shape {shape} for {batch} labels, got {tuple(noise.shape)}")
    latents = noise.to(device=device, dtype=dtype)

    transformer = model.transformer
    cond = model.conditioning(y)
    guided = scale is not None and scale != 1.0
    uncond = model.conditioning(torch.full_like(y, NULL_CLASS)) if guided else None

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
        with transformer.cache_context("cond"):
            velocity = model.velocity(latents, timestep, cond)
        if uncond is not None:
            assert scale is not None
            with transformer.cache_context("uncond"):
                velocity_uncond = model.velocity(latents, timestep, uncond)
            velocity = velocity_uncond + scale * (velocity - velocity_uncond)
        # Euler step in float32, as FlowMatchEulerDiscreteScheduler does, then back to the model dtype
        latents = (latents.float() + (sigma_next - sigma) * velocity.float()).to(dtype)
        if callback is not None:
            _sync(latents.device)
            callback(
                StepEvent(
                    step=i,
                    num_steps=num_steps,
                    sigma=sigma,
                    sigma_next=sigma_next,
                    latents=latents,
                    velocity=velocity,
                    transformer_calls=2 if uncond is not None else 1,
                    seconds=time.perf_counter() - start,
                )
            )
    return latents


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
