"""Fixtures shared by the test modules (helpers live in ``_support/``: ``flux.py`` builds the tiny Flux and its
denoising loop, ``probes.py`` reads decisions, errors and block calls).

The Flux fixtures are module-scoped: ``base`` is a tiny random ``FluxTransformer2DModel`` (never cached: deep-copy
it before applying a cache), ``inputs`` its loop inputs, and ``uncached`` the final latents of the uncached loop
with the test module's ``STEPS`` steps.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import pytest
import torch
from diffusers import FluxTransformer2DModel

from _support.flux import FluxInputs, denoise, make_flux, make_inputs

# Tiny models run fastest on one thread, and the suite's results must not depend on the machine's core count.
torch.set_num_threads(1)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Run the test with one torch CPU thread (steadier on a shared machine), restoring the count afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def base() -> FluxTransformer2DModel:
    """The tiny random Flux of ``_support.flux.make_flux()`` (seed 0); deep-copy it before caching."""
    return make_flux()


@pytest.fixture(scope="module")
def inputs(base: FluxTransformer2DModel) -> FluxInputs:
    """The loop inputs of ``base`` (``_support.flux.make_inputs``)."""
    return make_inputs(base)


@pytest.fixture(scope="module")
def uncached(request: pytest.FixtureRequest, base: FluxTransformer2DModel, inputs: FluxInputs) -> torch.Tensor:
    """The final latents of the uncached loop, with the requesting module's ``STEPS`` steps."""
    steps = getattr(request.module, "STEPS", None)
    if not isinstance(steps, int):
        raise TypeError(f"{request.module.__name__}: the 'uncached' fixture needs a module-level int STEPS")
    return denoise(copy.deepcopy(base), steps, inputs=inputs)
