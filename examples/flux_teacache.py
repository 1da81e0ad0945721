"""TeaCache on a diffusers ``FluxTransformer2DModel``: one line, then compare with the uncached run.

The transformer here is tiny and has random weights, so the script runs in seconds on a CPU; with a real
checkpoint the code is the same (``pipe.transformer`` in place of ``model``). The denoising loop is the
flow-matching Euler loop of diffusers' Flux pipelines, without the VAE and the text encoders.

Run: ``python examples/flux_teacache.py``
"""

from __future__ import annotations

import torch
from diffusers import FluxTransformer2DModel

import ditcache

STEPS = 20
SIDE = 8  # 8 x 8 latent tokens
TEXT_LEN = 8


def make_model() -> FluxTransformer2DModel:
    """A small random-weight Flux transformer (2 double-stream and 2 single-stream blocks)."""
    torch.manual_seed(0)
    model = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=2,
        num_single_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=(4, 6, 6),  # sums to attention_head_dim
    )
    return model.eval()


def make_inputs() -> dict[str, torch.Tensor]:
    """Initial noise, a stand-in prompt embedding and the position ids Flux pipelines build."""
    gen = torch.Generator().manual_seed(1)
    ids = torch.zeros(SIDE, SIDE, 3)
    ids[..., 1] = torch.arange(SIDE)[:, None]
    ids[..., 2] = torch.arange(SIDE)[None, :]
    return {
        "latents": torch.randn(1, SIDE * SIDE, 16, generator=gen),
        "prompt_embeds": torch.randn(1, TEXT_LEN, 32, generator=gen),
        "pooled_prompt_embeds": torch.randn(1, 32, generator=gen),
        "img_ids": ids.reshape(SIDE * SIDE, 3),
        "txt_ids": torch.zeros(TEXT_LEN, 3),
    }


@torch.no_grad()
def denoise(model: FluxTransformer2DModel, inputs: dict[str, torch.Tensor], steps: int) -> torch.Tensor:
    """Flow-matching Euler loop on a linear sigma schedule 1 -> 0; returns the final latents."""
    sigmas = torch.linspace(1.0, 0.0, steps + 1)
    latents = inputs["latents"]
    for i in range(steps):
        velocity = model(
            hidden_states=latents,
            encoder_hidden_states=inputs["prompt_embeds"],
            pooled_projections=inputs["pooled_prompt_embeds"],
            timestep=sigmas[i].expand(latents.shape[0]),  # Flux pipelines pass t / 1000 = sigma
            img_ids=inputs["img_ids"],
            txt_ids=inputs["txt_ids"],
            return_dict=False,
        )[0]
        latents = latents + (sigmas[i + 1] - sigmas[i]) * velocity
    return latents


def main() -> None:
    model = make_model()
    inputs = make_inputs()
    reference = denoise(model, inputs, STEPS)

    # The one line. The weights are random, so name the preset to borrow explicitly (with a published FLUX
    # checkpoint it is inferred from the model).
    config = ditcache.TeaCacheConfig(rel_l1_thresh=0.6, model="flux.1-dev")
    cache = ditcache.apply_teacache_hook(model, config)
    ditcache.refresh(model, STEPS)  # optional: the step count makes TeaCache always compute the last step
    cached = denoise(model, inputs, STEPS)

    stats = cache.stats()[-1]
    max_abs = (cached - reference).abs().max().item()
    rel = ((cached - reference).abs().mean() / reference.abs().mean()).item()
    print(f"computed steps: {stats.computed_steps}")
    print(f"skipped steps: {stats.skipped_steps} ({len(stats.skipped_steps)} of {STEPS})")
    print(f"final latent error vs uncached: max abs {max_abs:.3e}, relative L1 {rel:.3e}")

    assert stats.computed_steps[0] == 0, "the first step is always computed"
    assert stats.computed_steps[-1] == STEPS - 1, "the last step is computed once the step count is known"
    assert stats.skipped_steps, "TeaCache skipped no step at rel_l1_thresh=0.6"
    assert rel < 0.1, f"relative L1 error {rel:.3e} is unexpectedly large"

    ditcache.remove_cache(model)  # the model is exactly as before
    assert "forward" not in model.__dict__
    assert torch.equal(denoise(model, inputs, STEPS), reference)
    print("OK: TeaCache skipped steps; after remove_cache the model reproduces the uncached run exactly")


if __name__ == "__main__":
    main()
