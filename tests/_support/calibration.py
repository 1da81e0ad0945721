"""Shared calibration test helpers: a tiny random Flux with its own CFG loop, and a user module of target factories.

``tiny_loop`` is what a user's ``run(num_steps, seed)`` would do; ``user_module_source()`` is the text of a
self-contained module (the tiny Flux, the loop and factories of every kind: a CalibrationTarget, a duck-typed
object, a silent run, no extractor, not a target, strict keyword arguments, not callable) that the command-line
tests write to a temporary directory and import through ``--model module:factory``.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

LABELS = [1, 7]
"""Digits the bundled-model target draws in the calibration tests."""
STEPS = 6
"""Denoising steps of the quick calibration runs."""

TINY_FLUX: dict[str, Any] = {
    "patch_size": 1,
    "in_channels": 4,
    "num_layers": 1,
    "num_single_layers": 1,
    "attention_head_dim": 16,
    "num_attention_heads": 2,
    "joint_attention_dim": 16,
    "pooled_projection_dim": 16,
    "axes_dims_rope": (4, 6, 6),
}


def tiny_loop(model: Any, steps: int, seed: int) -> torch.Tensor:
    """A 4x4-token flow-matching Euler loop with CFG 2: cond then uncond calls, each with its own prompt."""
    gen = torch.Generator().manual_seed(seed)
    latents = torch.randn(1, 16, 4, generator=gen)
    prompts = [torch.randn(1, 3, 16, generator=gen) for _ in range(2)]
    pooled = [torch.randn(1, 16, generator=gen) for _ in range(2)]
    ids = torch.zeros(16, 3)
    ids[:, 1], ids[:, 2] = torch.arange(16) // 4, torch.arange(16) % 4
    sigmas = torch.linspace(1.0, 0.0, steps + 1)
    with torch.no_grad():
        for i in range(steps):
            v = [
                model(
                    hidden_states=latents,
                    encoder_hidden_states=p,
                    pooled_projections=q,
                    timestep=sigmas[i].expand(1),
                    img_ids=ids,
                    txt_ids=torch.zeros(3, 3),
                    return_dict=False,
                )[0]
                for p, q in zip(prompts, pooled)
            ]
            latents = latents + (sigmas[i + 1] - sigmas[i]) * (v[1] + 2.0 * (v[0] - v[1]))
    return latents


USER_FACTORIES = """
def make(seed=0, guidance_scale=2.0):
    torch.manual_seed(seed)
    model = FluxTransformer2DModel(**TINY_FLUX).eval()
    return CalibrationTarget(transformer=model, run=lambda n, s: tiny_loop(model, n, s), name="tiny-user")


def duck():
    target = make()
    return SimpleNamespace(transformer=target.transformer, run=target.run)


def silent():
    target = make()
    return CalibrationTarget(transformer=target.transformer, run=lambda n, s: [target.run(n, s)], name="tiny-user")


def no_extractor():
    return CalibrationTarget(transformer=torch.nn.Linear(2, 2), run=lambda n, s: None)


def not_a_target():
    return 42


def strict(seed=0):
    return make(seed)


NOT_CALLABLE = 3
"""


def user_module_source() -> str:
    """A self-contained user module: the tiny Flux, its loop, and factories of every kind."""
    header = (
        "from __future__ import annotations\n"
        "from types import SimpleNamespace\n"
        "from typing import Any\n"
        "import torch\n"
        "from diffusers import FluxTransformer2DModel\n"
        "from ditcache.calibration import CalibrationTarget\n\n"
        f"TINY_FLUX = {TINY_FLUX!r}\n\n"
    )
    return header + inspect.getsource(tiny_loop) + USER_FACTORIES


@contextmanager
def restored_ditcache_logger() -> Iterator[None]:
    """Put the ``ditcache`` logger back as it was (``ditcache.tools.cli.main`` configures it)."""
    logger = logging.getLogger("ditcache")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    try:
        yield
    finally:
        logger.handlers[:] = saved[0]
        logger.setLevel(saved[1])
        logger.propagate = saved[2]
