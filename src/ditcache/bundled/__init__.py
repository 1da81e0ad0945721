"""Small trained diffusion transformers that ship with ditcache, to judge caches on real trained weights.

Two models, of two diffusers classes and two data sets, listed by name in :data:`BUNDLED_MODELS` (each entry a
:class:`BundledModel` with a loader and a sampler of one shared calling convention, for tools' ``--model NAME``):

* ``"digits"``: class-conditional handwritten digits on a ``FluxTransformer2DModel`` (below);
* ``"patches"``: 16x16 colour patches of scikit-learn's two sample photos, conditioned on a 2x2 thumbnail, on a
  ``QwenImageTransformer2DModel`` (:mod:`ditcache.bundled.patches`: :func:`load_patches_dit`,
  :func:`sample_patches`; data and quality figures in :mod:`ditcache.bundled.patch_data`).

Both samplers run the same Euler flow-matching loop (:func:`ditcache.bundled.sampler.euler_flow_sample`).

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
from ditcache.bundled.patches import (
    NULL_PATCH,
    PatchesDiT,
    PatchesDiTConfig,
    load_patches_dit,
    sample_patches,
)
from ditcache.bundled.registry import BUNDLED_MODELS, BundledModel, get_bundled_model
from ditcache.bundled.sampler import StepCallback, StepEvent, euler_flow_sample, sample, sample_tokens, sigma_schedule

__all__ = [
    "BUNDLED_MODELS",
    "IMAGE_SIZE",
    "NULL_CLASS",
    "NULL_PATCH",
    "NUM_CLASSES",
    "BundledModel",
    "ClassConditioner",
    "Conditioning",
    "DigitClassifier",
    "DigitsDiT",
    "DigitsDiTConfig",
    "PatchesDiT",
    "PatchesDiTConfig",
    "StepCallback",
    "StepEvent",
    "digits_dataset",
    "euler_flow_sample",
    "get_bundled_model",
    "load_digits_dit",
    "load_metadata",
    "load_patches_dit",
    "sample",
    "sample_patches",
    "sample_tokens",
    "sigma_schedule",
    "weights_path",
]
