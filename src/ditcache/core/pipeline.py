"""Generations of a diffusers pipeline: each ``pipe(...)`` call is one generation, its step count read from the call.

The transformer-level runtime has to infer where a generation starts (:mod:`ditcache.core.clock`). A pipeline knows
it: every diffusers pipeline call sets its scheduler's timesteps (``scheduler.set_timesteps(...)``, which builds a
new ``scheduler.timesteps`` tensor) before the denoising loop, and an img2img, inpaint or refiner call then skips the
first ones with ``scheduler.set_begin_index(...)``. :class:`SchedulerSource` reads exactly that, at the first
transformer call after it, without patching anything:

* the *token* of a generation is the scheduler's ``timesteps`` tensor object (held weakly): a new one means a new
  ``pipe(...)`` call, so the runtime ends every open generation and starts new ones (whatever timestep they start at);
* its *step count* is the number of calls the component gets in that run: ``len(timesteps) - begin_index``
  (Heun-style schedulers list a timestep twice and are counted as called); for a pipeline with a high-noise and a
  low-noise transformer (``boundary_ratio`` in the pipeline config, Wan 2.2), the timesteps on each side of the
  boundary.

Nothing is patched on the pipeline, its class or its scheduler: :func:`bind_pipeline` only sets the runtime's
``generation_source``. Another instance of the same class, or a scheduler swapped in later
(``pipe.scheduler = ...``, read at each call), is handled alike. The entry point that applies caches from configs is
:func:`ditcache.apply_cache_to_pipeline`.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import nn

from ditcache.core.runtime import get_cache_runtime

__all__ = ["SchedulerSource", "bind_pipeline", "pipeline_transformers", "unbind_pipeline"]


def pipeline_transformers(pipe: Any, components: tuple[str, ...] | None = None) -> dict[str, nn.Module]:
    """The denoiser modules of ``pipe`` by component name: ``components`` when given (each must be an
    ``nn.Module`` attribute of the pipeline), otherwise every ``transformer*`` component that is set."""
    if components is not None:
        if isinstance(components, str) or not all(isinstance(c, str) for c in components):
            raise TypeError(f"components: expected a tuple of component names, got {components!r}")
        chosen = {name: getattr(pipe, name, None) for name in components}
        modules = {name: module for name, module in chosen.items() if isinstance(module, nn.Module)}
        if len(modules) != len(chosen) or not modules:
            raise ValueError(
                f"components: {sorted(set(chosen) - set(modules)) or 'none given'} are not nn.Module components of "
                f"{type(pipe).__name__}; pass names such as ('transformer',)"
            )
        return modules
    names = getattr(pipe, "components", None)
    if not isinstance(names, dict):
        raise TypeError(
            f"pipe: expected a diffusers DiffusionPipeline (with .components and .scheduler), got {type(pipe).__name__}"
        )
    found = {n: m for n, m in names.items() if n.startswith("transformer") and isinstance(m, nn.Module)}
    if not found:
        raise ValueError(
            f"pipe: {type(pipe).__name__} has no transformer component set (components: {sorted(names)}); "
            "pass components=(...) to name the denoiser"
        )
    return found


class SchedulerSource:
    """The generation source of one pipeline component (see the module docstring): ``(token, num_steps)``."""

    def __init__(self, pipe: Any, component: str) -> None:
        self._pipe = weakref.ref(pipe)
        self.component = component
        self._timesteps: weakref.ref[torch.Tensor] | None = None  # weak: the scheduler owns them
        self._run = 0
        self._steps: int | None = None

    def __call__(self) -> tuple[object, int | None] | None:
        pipe = self._pipe()
        scheduler = getattr(pipe, "scheduler", None)
        timesteps = getattr(scheduler, "timesteps", None)
        if not isinstance(timesteps, torch.Tensor):
            return None  # no pipeline run set the timesteps: the transformer-level rules decide
        if self._timesteps is None or self._timesteps() is not timesteps:
            self._timesteps = weakref.ref(timesteps)
            self._run += 1
            self._steps = self._count(pipe, scheduler, timesteps)
        return self._run, self._steps

    def _count(self, pipe: Any, scheduler: Any, timesteps: torch.Tensor) -> int | None:
        begin = getattr(scheduler, "begin_index", None)
        begin = begin if isinstance(begin, int) and not isinstance(begin, bool) else 0
        remaining = timesteps[begin:]
        config = getattr(pipe, "config", {})
        ratio = config.get("boundary_ratio") if hasattr(config, "get") else None
        if ratio is not None and getattr(pipe, "transformer_2", None) is not None:
            # Two denoisers split the schedule (Wan 2.2): the high-noise one takes t >= boundary.
            boundary = float(ratio) * float(scheduler.config.num_train_timesteps)
            high = sum(1 for t in remaining.tolist() if t >= boundary)  # one sync per run
            steps = high if self.component == "transformer" else len(remaining) - high
        else:
            steps = len(remaining)
        return steps if steps > 0 else None


def bind_pipeline(pipe: Any, modules: dict[str, nn.Module]) -> None:
    """Make each ``pipe(...)`` call one generation for the caches applied to ``modules`` (component name ->
    module, each with a cache applied)."""
    for name, module in modules.items():
        runtime = get_cache_runtime(module)
        if runtime is None:
            raise ValueError(f"{name}: no cache is applied to {type(module).__name__}; apply one first")
        runtime.generation_source = SchedulerSource(pipe, name)


def unbind_pipeline(modules: dict[str, nn.Module]) -> None:
    """Undo :func:`bind_pipeline`: the modules' caches go back to detecting generations themselves."""
    for module in modules.values():
        runtime = get_cache_runtime(module)
        if runtime is not None and isinstance(runtime.generation_source, SchedulerSource):
            runtime.generation_source = None
