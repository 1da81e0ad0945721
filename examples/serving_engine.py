"""A serving engine's cache loop with ditcache's vLLM-Omni-compatible backends: enable once, refresh per request.

The engine picks a backend by name with a JSON config (as vLLM-Omni's ``--cache-backend`` / ``--cache-config``),
enables it on the loaded pipeline, and refreshes it before every request with that request's step count. The
pipeline is a real diffusers ``FluxPipeline`` built from a tiny random transformer (no download; prompts are
passed as precomputed embeddings), so the numbers show the mechanics, not image quality.

Run: ``python examples/serving_engine.py``
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("CACHE_DIT_LOG_LEVEL", "warning")  # cache-dit logs every context it builds at "info"

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

from ditcache.backends import CacheBackend, get_cache_backend

REQUESTS = [(8, 0), (12, 1), (8, 2)]  # (num_inference_steps, prompt id): step counts differ between requests
BACKENDS = {
    "tea_cache": '{"rel_l1_thresh": 2.0, "coefficients": [0, 0, 0, 1, 0]}',
    "mag_cache": '{"mag_threshold": 0.5, "mag_retention_ratio": 0.2}',
    "cache_dit": '{"Fn_compute_blocks": 1, "residual_diff_threshold": 0.9, "max_warmup_steps": 2}',
    "ditcache": '{"ditcache_stack": ["tea_cache", "db_cache"], "rel_l1_thresh": 0.3, '
    '"coefficients": [0, 0, 0, 1, 0], "residual_diff_threshold": 0.9, "max_warmup_steps": 2}',
}


def load_pipeline() -> FluxPipeline:
    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=2,
        num_single_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=(4, 6, 6),
    ).eval()
    pipe = FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=None,
        text_encoder=None,
        tokenizer=None,
        text_encoder_2=None,
        tokenizer_2=None,
        transformer=transformer,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(pipe: FluxPipeline, steps: int, prompt: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(prompt)
    with torch.no_grad():
        return pipe(
            prompt_embeds=torch.randn(1, 8, 32, generator=g),
            pooled_prompt_embeds=torch.randn(1, 32, generator=g),
            height=48,
            width=48,
            num_inference_steps=steps,
            generator=torch.Generator().manual_seed(7),
            output_type="latent",
        ).images


def skipped(backend: CacheBackend, pipe: FluxPipeline) -> int:
    """Cache hits in the last request, from the backend's statistics."""
    if backend.name == "cache_dit":
        last = backend.stats(pipe)["transformer"][-1]  # type: ignore[attr-defined]
        return len(last.cached_steps or [])
    per_cache = backend.stats()["transformer"]  # type: ignore[attr-defined]
    return sum(len(stats[-1].skipped_steps) for stats in per_cache.values() if stats)


def main() -> None:
    pipe = load_pipeline()
    uncached = [generate(pipe, steps, prompt) for steps, prompt in REQUESTS]

    for name, config_json in BACKENDS.items():
        backend = get_cache_backend(name, json.loads(config_json))  # --cache-backend NAME --cache-config JSON
        assert backend is not None
        backend.enable(pipe)  # once, after loading
        hits, errors = [], []
        for (steps, prompt), reference in zip(REQUESTS, uncached, strict=True):
            backend.refresh(pipe, steps, verbose=False)  # before every request
            out = generate(pipe, steps, prompt)
            hits.append(skipped(backend, pipe))
            errors.append(float((out - reference).abs().mean() / reference.abs().mean()))
        backend.disable(pipe)
        restored = torch.equal(generate(pipe, *REQUESTS[0]), uncached[0])
        print(f"{name}: cache hits per request {hits}, relative error {[round(e, 4) for e in errors]}")
        assert all(h > 0 for h in hits), f"{name} skipped nothing"
        assert restored, f"{name}: disable did not restore the pipeline"

    print("after disable: output equals uncached: True")
    try:
        get_cache_backend("mag_cache", {"threshold": 0.06})  # vLLM-Omni stores this typo silently
    except ValueError as exc:
        print(f"config error: {exc}".split("; valid keys")[0])
    else:
        raise AssertionError("a misspelled key was accepted")
    print("OK: every backend skipped steps on every request and disable restored the pipeline exactly")


if __name__ == "__main__":
    main()
