"""FluxPipeline with precomputed batch-1 prompt embeddings and num_images_per_prompt=2 (the model broadcasts the
encoder batch): works with every cache, and equals the run with the embeddings repeated per image."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

import ditcache
from _support import pipelines


def _run(pipe: Any, repeat: int, images: int) -> torch.Tensor:
    with torch.no_grad():
        return pipe(  # type: ignore[no-any-return]
            prompt_embeds=torch.randn(1, 8, 32, generator=torch.Generator().manual_seed(3)).repeat(repeat, 1, 1),
            pooled_prompt_embeds=torch.randn(1, 32, generator=torch.Generator().manual_seed(4)).repeat(repeat, 1),
            height=48,
            width=48,
            num_inference_steps=12,
            num_images_per_prompt=images,
            generator=torch.Generator().manual_seed(7),
            output_type="latent",
        ).images


APPLY: dict[str, Callable[[torch.nn.Module], Any]] = {
    "teacache": lambda m: ditcache.apply_teacache_hook(m, ditcache.TeaCacheConfig(rel_l1_thresh=0.4)),
    "magcache": lambda m: ditcache.apply_magcache_hook(m, ditcache.MagCacheConfig(num_inference_steps=12)),
    "dbcache": lambda m: ditcache.apply_dbcache_hook(
        m,
        ditcache.DBCacheConfig(
            fn_compute_blocks=1, bn_compute_blocks=1, residual_diff_threshold=0.5, max_warmup_steps=2
        ),
    ),
}


@pytest.mark.parametrize("cache", sorted(APPLY))
def test_a_batch_one_encoder_broadcast_by_the_model_is_accepted(cache: str) -> None:
    broadcast, repeated = pipelines.flux(), pipelines.flux()
    native = _run(broadcast.pipe, repeat=1, images=2)  # works uncached
    assert native.shape[0] == 2
    a, b = APPLY[cache](broadcast.pipe.transformer), APPLY[cache](repeated.pipe.transformer)
    out_broadcast = _run(broadcast.pipe, repeat=1, images=2)
    out_repeated = _run(repeated.pipe, repeat=2, images=1)
    assert [s.skipped_steps for s in a.stats()] == [s.skipped_steps for s in b.stats()]
    assert any(s.skipped_steps for s in a.stats())
    torch.testing.assert_close(out_broadcast, out_repeated, rtol=1e-5, atol=1e-5)
