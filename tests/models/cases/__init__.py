"""Model cases of the conformance suite: one small file per model family, each defining ``CASES``.

A :class:`Case` builds a tiny random diffusers model (seeded, 1-3 blocks per list, tiny hidden sizes) and a short
sequence of calls of one "denoising run": the timestep changes, the conditioning tensors are shared between calls
(one CFG branch, one generation), and the options exercise the code paths of the forward (guidance, masks,
ControlNet or other per-block residuals, image conditioning). ``tests/models/test_conformance.py`` runs every case
at batch 1 and 2 with ``return_dict`` both ways.

Tags select the cases of the heavier tests: ``"dtype"`` (bf16 on CPU, fp32/bf16 on CUDA), ``"checkpointing"``
(gradient checkpointing with grad enabled), ``"loop"`` (TeaCache, MagCache and DBCache each skip steps). Every
supported class needs at least one case with each tag (checked by the suite).
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ditcache import TeaCacheConfig

__all__ = [
    "ALL",
    "FLOW_TIMESTEPS",
    "NEVER_SKIP",
    "NO_CHECKPOINTING",
    "REFUSALS",
    "TIMESTEPS_1000",
    "Call",
    "Case",
    "Refusal",
    "TeaCacheConfig",
    "built",
    "randn",
    "seeded",
]

Call = tuple[tuple[Any, ...], dict[str, Any]]

FLOW_TIMESTEPS = (1.0, 0.8, 0.55, 0.3)  # t in [0, 1] (scaled by 1000 inside the model)
TIMESTEPS_1000 = (999.0, 800.0, 550.0, 300.0)  # t in [0, 1000]

# rescale(x) = x and a threshold no positive distance stays under: every call is decided, none is skipped.
NEVER_SKIP = TeaCacheConfig(rel_l1_thresh=1e-12, coefficients=(0.0, 0.0, 0.0, 1.0, 0.0))

ALL_TAGS = frozenset({"dtype", "checkpointing", "loop"})

NO_CHECKPOINTING = {
    "HunyuanImageTransformer2DModel": "diffusers 0.42's checkpointed block call passes keyword arguments that its "
    "default checkpointing function rejects (TypeError in the native forward)",
    "LuminaNextDiT2DModel": "its forward has no gradient-checkpointing branch",
}
"""Classes whose native forward cannot run with gradient checkpointing, so no case can compare against it."""


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=gen)


@dataclass(frozen=True)
class Case:
    """One model configuration and one call sequence."""

    id: str
    build: Callable[[], nn.Module]
    calls: Callable[..., list[Call]]
    """``calls(model, batch, return_dict, **options) -> [(args, kwargs), ...]``."""
    options: dict[str, Any] = field(default_factory=dict)
    config: TeaCacheConfig = NEVER_SKIP
    tags: frozenset[str] = frozenset()
    timestep: str = "timestep"
    """The call argument holding the timestep (the context's ``timestep`` is that very object)."""
    condition: str | None = "encoder_hidden_states"
    """The call argument holding the conditioning (the context's ``condition``), None when it is not checked."""
    positional: tuple[str, ...] = ("hidden_states", "timestep", "encoder_hidden_states")
    """Names of the leading positional parameters of the forward (to read arguments passed positionally)."""
    attention_kwargs: str | None = "attention_kwargs"
    """The keyword carrying the LoRA scale, None when the model has none."""

    def make(self, batch: int, return_dict: bool) -> tuple[nn.Module, list[Call]]:
        model = self.build()
        return model, self.calls(model, batch, return_dict, **self.options)

    def argument(self, call: Call, name: str) -> Any:
        args, kwargs = call
        bound = dict(zip(self.positional, args))
        bound.update(kwargs)
        return bound[name]


def built(cls: Callable[..., nn.Module], **config: Any) -> Callable[[], nn.Module]:
    """A builder of ``cls(**config)`` with seed 0, in eval mode."""

    def build() -> nn.Module:
        torch.manual_seed(0)
        return cls(**config).eval()

    functools.update_wrapper(build, cls, assigned=("__name__",), updated=())
    return build


@dataclass(frozen=True)
class Refusal:
    """A configuration or a call the extractor must refuse with a ValueError matching ``match``.

    ``call`` builds the refused call from the model; None means the model itself is refused when a cache is applied.
    """

    id: str
    build: Callable[[], nn.Module]
    call: Callable[[nn.Module], Call] | None
    match: str


def _collect() -> tuple[dict[str, Case], dict[str, Refusal]]:
    found: dict[str, Case] = {}
    refusals: dict[str, Refusal] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for case in module.CASES:
            assert case.id not in found, f"duplicate case id {case.id!r}"
            assert case.tags <= ALL_TAGS, f"{case.id}: unknown tags {set(case.tags - ALL_TAGS)}"
            found[case.id] = case
        for refusal in getattr(module, "REFUSALS", ()):
            assert refusal.id not in refusals, f"duplicate refusal id {refusal.id!r}"
            refusals[refusal.id] = refusal
    return found, refusals


ALL, REFUSALS = _collect()
"""Every case and every refusal, by id."""
