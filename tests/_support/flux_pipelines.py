"""Tiny real diffusers Flux pipelines (text-to-image and image-to-image) from random components.

Import with ``from _support.flux_pipelines import ...``::

    pipe = make_flux_pipeline()                 # FluxPipeline: the tiny Flux of _support.flux, a tiny VAE
    img2img = make_flux_pipeline(img2img=True)  # FluxImg2ImgPipeline over the same kind of components
    out = run_pipeline(pipe, steps=6, seed=3)   # final packed latents (output_type="latent")

The text encoders and tokenizers are None: every call passes precomputed prompt embeddings (:func:`prompt_kwargs`),
as a serving engine does. Everything is deterministic on CPU: the same seeds give bit-identical pipelines and outputs.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxImg2ImgPipeline, FluxPipeline

from _support.flux import FLUX_TINY, make_flux

__all__ = ["IMAGE_SIZE", "make_flux_pipeline", "prompt_kwargs", "run_pipeline"]

IMAGE_SIZE = 16
"""Pixel height and width of the pipelines' images (8x8 latents, 4x4 packed tokens)."""


def _vae(seed: int) -> AutoencoderKL:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
            block_out_channels=(8, 8),
            layers_per_block=1,
            latent_channels=FLUX_TINY["in_channels"] // 4,
            norm_num_groups=4,
            sample_size=IMAGE_SIZE,
            shift_factor=0.0,
            scaling_factor=1.0,
        )
    return vae.eval()


def make_flux_pipeline(*, img2img: bool = False, seed: int = 0) -> FluxPipeline | FluxImg2ImgPipeline:
    """A tiny ``FluxPipeline`` (or ``FluxImg2ImgPipeline``) with random weights and no text encoders."""
    cls = FluxImg2ImgPipeline if img2img else FluxPipeline
    pipe = cls(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=_vae(seed + 1),
        text_encoder=None,
        tokenizer=None,
        text_encoder_2=None,
        tokenizer_2=None,
        transformer=make_flux(seed),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def prompt_kwargs(seed: int = 1, *, cfg: bool = True) -> dict[str, Any]:
    """Precomputed prompt embeddings (and negative ones for true CFG when ``cfg``) for the tiny Flux."""
    gen = torch.Generator().manual_seed(seed)
    dim, pooled = FLUX_TINY["joint_attention_dim"], FLUX_TINY["pooled_projection_dim"]
    kw: dict[str, Any] = {
        "prompt_embeds": torch.randn(1, 8, dim, generator=gen),
        "pooled_prompt_embeds": torch.randn(1, pooled, generator=gen),
    }
    if cfg:
        kw["negative_prompt_embeds"] = torch.randn(1, 8, dim, generator=gen)
        kw["negative_pooled_prompt_embeds"] = torch.randn(1, pooled, generator=gen)
        kw["true_cfg_scale"] = 3.0
    return kw


def run_pipeline(
    pipe: FluxPipeline | FluxImg2ImgPipeline,
    steps: int,
    *,
    seed: int = 3,
    strength: float | None = None,
    prompts: dict[str, Any] | None = None,
    **extra: Any,
) -> torch.Tensor:
    """One ``pipe(...)`` call with ``steps`` steps; returns the final packed latents. ``strength`` (img2img only)
    noises a fixed random image to that level."""
    kw: dict[str, Any] = dict(prompts if prompts is not None else prompt_kwargs())
    kw.update(extra)
    if strength is not None:
        kw["image"] = torch.rand(1, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(7))
        kw["strength"] = strength
    with torch.no_grad():
        out = pipe(
            num_inference_steps=steps,
            height=IMAGE_SIZE,
            width=IMAGE_SIZE,
            generator=torch.Generator().manual_seed(seed),
            output_type="latent",
            **kw,
        )
    return out.images
