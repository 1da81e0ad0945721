"""One quality setting on two different models: TeaCache with an error tolerance ``rtol``.

A TeaCache threshold (``rel_l1_thresh``) means a different image error on every model. ``rtol`` bounds the error
of each reused step instead, measured by the cache itself on the steps it computes, so the same number can be
used everywhere. This script applies ``TeaCacheConfig(rtol=...)`` unchanged to the two bundled trained models
(a small Flux on digits, a small Qwen-Image on photo patches) and prints, per model, the steps computed and the
PSNR of the samples against the uncached ones.

Run: ``python examples/error_tolerance.py``
"""

from __future__ import annotations

import torch

import ditcache
from ditcache.bundled import get_bundled_model
from ditcache.core.metrics import psnr

STEPS = 30
CONFIG = ditcache.TeaCacheConfig(rtol=0.05, taylorseer=True, taylorseer_target="output")


def main() -> None:
    torch.set_num_threads(1)
    for name in ("digits", "patches"):
        entry = get_bundled_model(name)
        labels = list(entry.default_labels)[:4]
        reference = entry.sample(entry.load(), labels, STEPS, None, 0)

        model = entry.load()
        cache = ditcache.apply_teacache_hook(model.transformer, CONFIG)  # the same line on both models
        images = entry.sample(model, labels, STEPS, None, 0)

        (stats,) = cache.stats()
        quality = psnr(images, reference, data_range=entry.data_range)
        print(
            f"{name} ({entry.transformer_class}): computed {len(stats.computed_steps)}/{STEPS} steps, "
            f"PSNR {quality:.1f} dB vs uncached"
        )
        assert stats.skipped_steps, f"{name}: rtol=0.05 skipped nothing"
        assert quality > 30, f"{name}: {quality:.1f} dB"
    print("OK: one rtol setting skipped steps on both models")


if __name__ == "__main__":
    main()
