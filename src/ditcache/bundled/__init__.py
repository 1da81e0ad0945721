"""A small trained diffusion transformer that ships with ditcache, to judge caches on real trained weights.

``load_digits_dit()`` returns a class-conditional digits model built on a real diffusers
``FluxTransformer2DModel`` (about 0.59 M parameters, trained with rectified flow on scikit-learn's handwritten
digits); :func:`sample` runs an Euler flow-matching sampler that calls ``model.transformer`` exactly as diffusers
pipelines do (``cache_context("cond")`` / ``("uncond")``), so any ditcache cache applied to the transformer acts
on it::

    import ditcache
    from ditcache.bundled import load_digits_dit, sample

    model = load_digits_dit()
    ditcache.apply_teacache_hook(model.transformer, ditcache.TeaCacheConfig(rel_l1_thresh=0.2))
    images = sample(model, labels=list(range(10)), num_steps=50, guidance_scale=3.0, seed=0)  # (10, 16, 16)

:class:`DigitClassifier` (needs scikit-learn) scores generated images against their intended digits.
"""

from __future__ import annotations

from ditcache.bundled.model import (
    IMAGE_SIZE,
    NULL_CLASS,
    NUM_CLASSES,
    ClassConditioner,
    Conditioning,
    DigitClassifier,
    DigitsDiT,
    DigitsDiTConfig,
    digits_dataset,
    load_digits_dit,
    load_metadata,
    weights_path,
)
from ditcache.bundled.sampler import StepCallback, StepEvent, sample, sample_tokens, sigma_schedule

__all__ = [
    "IMAGE_SIZE",
    "NULL_CLASS",
    "NUM_CLASSES",
    "ClassConditioner",
    "Conditioning",
    "DigitClassifier",
    "DigitsDiT",
    "DigitsDiTConfig",
    "StepCallback",
    "StepEvent",
    "digits_dataset",
    "load_digits_dit",
    "load_metadata",
    "sample",
    "sample_tokens",
    "sigma_schedule",
    "weights_path",
]
