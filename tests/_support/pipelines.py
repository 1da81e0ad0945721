"""Tiny real diffusers pipelines (for the serving-backend tests): random weights, no text encoder, no download.

Each builder returns a :class:`TinyPipeline`: the diffusers pipeline (text encoder, tokenizer and VAE are None;
prompts are passed as precomputed embeddings) and ``run(steps, prompt=0, images=1)``, which calls the pipeline
the way a serving engine does and returns its latents (``output_type="latent"``).

* ``flux()``: ``FluxPipeline``, 2 double + 2 single blocks, no CFG;
* ``qwen()``: ``QwenImagePipeline`` with true CFG (negative prompt embeddings, ``true_cfg_scale=4``);
* ``wan22()``: ``WanPipeline`` with two transformers (high- and low-noise experts) split at ``boundary_ratio``;
* ``wan21()``: ``WanPipeline`` with one transformer and classifier-free guidance;
* ``flux2_klein()``: ``Flux2KleinPipeline`` (distilled, 3 double + 3 single blocks, a tiny VAE for its latent
  statistics); not in :data:`BUILDERS` because ditcache has no FLUX.2 extractor: the cache-dit tests use it.

Several images per prompt: ``QwenImagePipeline`` repeats precomputed embeddings itself (``num_images_per_prompt``);
``FluxPipeline`` and ``WanPipeline`` use precomputed embeddings as given (only their text-encoder path repeats
them), so for those the builders pass the repeated batch their ``encode_prompt`` would have produced.

Everything is deterministic on CPU: the same seed gives the same weights, the same prompt index the same
embeddings, and every run starts from the same seeded noise.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import torch
from diffusers import (
    AutoencoderKLFlux2,
    FlowMatchEulerDiscreteScheduler,
    Flux2KleinPipeline,
    Flux2Transformer2DModel,
    FluxPipeline,
    FluxTransformer2DModel,
    QwenImagePipeline,
    QwenImageTransformer2DModel,
    UniPCMultistepScheduler,
    WanPipeline,
    WanTransformer3DModel,
)

__all__ = ["BUILDERS", "TinyPipeline", "flux", "flux2_klein", "qwen", "wan21", "wan22"]


@attrs.define
class TinyPipeline:
    """A tiny pipeline and the engine-style call that runs it."""

    name: str
    pipe: Any
    call: Callable[[Any, int, int, int], torch.Tensor]
    transformers: tuple[str, ...] = ("transformer",)

    def run(self, steps: int, prompt: int = 0, images: int = 1) -> torch.Tensor:
        """Run ``steps`` denoising steps for prompt number ``prompt`` with ``images`` images per prompt."""
        with torch.no_grad():
            return self.call(self.pipe, steps, prompt, images)


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _embeds(prompt: int, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=_seeded(1000 + prompt))


def _build(seed: int, cls: type, **config: Any) -> Any:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cls(**config).eval()


# ------------------------------------------------------------------------------------------------ Flux
def flux(seed: int = 0) -> TinyPipeline:
    transformer = _build(
        seed,
        FluxTransformer2DModel,
        patch_size=1,
        in_channels=16,
        num_layers=2,
        num_single_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=(4, 6, 6),
    )
    pipe = FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=None,
        text_encoder=None,
        tokenizer=None,
        text_encoder_2=None,
        tokenizer_2=None,
        transformer=transformer,
    )

    def call(p: Any, steps: int, prompt: int, images: int) -> torch.Tensor:
        out = p(
            # FluxPipeline does not repeat precomputed embeddings per image (its text-encoder path does), so
            # several images per prompt are passed as the batch encode_prompt would have produced.
            prompt_embeds=_embeds(prompt, 1, 8, 32).repeat(images, 1, 1),
            pooled_prompt_embeds=_embeds(prompt + 500, 1, 32).repeat(images, 1),
            height=48,
            width=48,
            num_inference_steps=steps,
            num_images_per_prompt=1,
            generator=_seeded(7),
            output_type="latent",
        )
        return out.images

    pipe.set_progress_bar_config(disable=True)
    return TinyPipeline("flux", pipe, call)


def flux2_klein(seed: int = 0) -> TinyPipeline:
    transformer = _build(
        seed,
        Flux2Transformer2DModel,
        patch_size=1,
        in_channels=16,
        num_layers=3,
        num_single_layers=3,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        timestep_guidance_channels=32,
        axes_dims_rope=(4, 4, 4, 4),
        guidance_embeds=False,
    )
    vae = _build(
        seed,
        AutoencoderKLFlux2,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 8),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        mid_block_add_attention=False,
    )
    pipe = Flux2KleinPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=None,
        tokenizer=None,
        transformer=transformer,
        is_distilled=True,
    )

    def call(p: Any, steps: int, prompt: int, images: int) -> torch.Tensor:
        out = p(
            prompt_embeds=_embeds(prompt, 1, 8, 32),
            guidance_scale=1.0,
            height=32,
            width=32,
            num_inference_steps=steps,
            num_images_per_prompt=images,
            generator=_seeded(7),
            output_type="latent",
        )
        return out.images

    pipe.set_progress_bar_config(disable=True)
    return TinyPipeline("flux2_klein", pipe, call)


# ------------------------------------------------------------------------------------------- Qwen-Image
def qwen(seed: int = 0) -> TinyPipeline:
    transformer = _build(
        seed,
        QwenImageTransformer2DModel,
        patch_size=2,
        in_channels=16,
        out_channels=4,
        num_layers=3,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=24,
        axes_dims_rope=(4, 6, 6),
    )
    pipe = QwenImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=None,
        text_encoder=None,
        tokenizer=None,
        transformer=transformer,
    )

    def call(p: Any, steps: int, prompt: int, images: int) -> torch.Tensor:
        out = p(
            prompt_embeds=_embeds(prompt, 1, 7, 24),
            prompt_embeds_mask=torch.ones(1, 7, dtype=torch.long),
            negative_prompt_embeds=_embeds(prompt + 300, 1, 5, 24),
            negative_prompt_embeds_mask=torch.ones(1, 5, dtype=torch.long),
            true_cfg_scale=4.0,
            height=64,
            width=64,
            num_inference_steps=steps,
            num_images_per_prompt=images,
            generator=_seeded(7),
            output_type="latent",
        )
        return out.images

    pipe.set_progress_bar_config(disable=True)
    return TinyPipeline("qwen", pipe, call)


# ------------------------------------------------------------------------------------------------- Wan
def _wan_transformer(seed: int) -> WanTransformer3DModel:
    return _build(
        seed,
        WanTransformer3DModel,
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=16,
        out_channels=16,
        text_dim=16,
        freq_dim=32,
        ffn_dim=48,
        num_layers=3,
        cross_attn_norm=True,
        rope_max_seq_len=32,
    )


def _wan(name: str, seed: int, two: bool) -> TinyPipeline:
    pipe = WanPipeline(
        tokenizer=None,
        text_encoder=None,
        vae=None,
        scheduler=UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0),
        transformer=_wan_transformer(seed),
        transformer_2=_wan_transformer(seed + 1) if two else None,
        boundary_ratio=0.6 if two else None,
    )

    def call(p: Any, steps: int, prompt: int, images: int) -> torch.Tensor:
        out = p(
            # Like FluxPipeline, WanPipeline does not repeat precomputed embeddings per video.
            prompt_embeds=_embeds(prompt, 1, 6, 16).repeat(images, 1, 1),
            negative_prompt_embeds=_embeds(prompt + 300, 1, 6, 16).repeat(images, 1, 1),
            guidance_scale=3.0,
            guidance_scale_2=2.0 if two else None,
            height=32,
            width=32,
            num_frames=5,
            num_inference_steps=steps,
            num_videos_per_prompt=1,
            generator=_seeded(7),
            output_type="latent",
        )
        return out.frames

    pipe.set_progress_bar_config(disable=True)
    return TinyPipeline(name, pipe, call, ("transformer", "transformer_2") if two else ("transformer",))


def wan22(seed: int = 0) -> TinyPipeline:
    return _wan("wan22", seed, two=True)


def wan21(seed: int = 0) -> TinyPipeline:
    return _wan("wan21", seed, two=False)


BUILDERS: dict[str, Callable[[], TinyPipeline]] = {"flux": flux, "qwen": qwen, "wan22": wan22, "wan21": wan21}
"""Every tiny pipeline by name."""
