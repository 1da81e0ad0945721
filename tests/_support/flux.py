"""Shared test helpers: a tiny random diffusers ``FluxTransformer2DModel`` and a flow-matching Euler loop.

Import from any test file with ``from _support.flux import ...`` (pytest puts ``tests/`` on ``sys.path``)::

    model = make_flux()                      # 2 double + 2 single blocks, random weights, eval mode
    inputs = make_inputs(model)              # 8x8 latent tokens, 8 text tokens, cond and uncond prompts
    out = denoise(model, 20, inputs=inputs)  # final latents of a 20-step Euler loop
    out = denoise(model, 20, cfg=3.0, inputs=inputs, branch_mode="cache_context")  # true CFG, Flux-pipeline style

The loop calls the model the way diffusers' Flux pipelines do (``timestep = sigma``, i.e. ``t / 1000``, and
``return_dict=False``) on a plain linear sigma schedule ``1 -> 0``: deterministic, scheduler-free, and a
decreasing timestep as in every flow-matching pipeline. With ``cfg`` set, every step makes a cond call then an
uncond call (different prompt tensors, the same tensors for every step) and combines them as ``uncond +
cfg * (cond - uncond)``.

Everything is deterministic on CPU: the same seed gives bit-identical weights and inputs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

import attrs
import torch
from diffusers import FluxTransformer2DModel

import ditcache
from _support.probes import count_block_calls  # re-exported: it lived here first

__all__ = [
    "FLUX_TINY",
    "BranchMode",
    "FluxCall",
    "FluxInputs",
    "count_block_calls",
    "denoise",
    "flow_sigmas",
    "make_flux",
    "make_inputs",
    "replay",
]

FLUX_TINY: dict[str, Any] = {
    "patch_size": 1,
    "in_channels": 16,
    "num_layers": 2,
    "num_single_layers": 2,
    "attention_head_dim": 16,
    "num_attention_heads": 2,
    "joint_attention_dim": 32,
    "pooled_projection_dim": 32,
    "axes_dims_rope": (4, 6, 6),
}
"""Config of the tiny Flux used across the suite (``axes_dims_rope`` sums to ``attention_head_dim``)."""

BranchMode = Literal["auto", "cfg_branch", "cache_context", "shared"]
"""How :func:`denoise` marks the cond/uncond calls of a CFG loop:

* ``"auto"``: not at all (ditcache tells the branches apart by the prompt tensor);
* ``"cfg_branch"``: ``with ditcache.cfg_branch("cond" | "uncond")``;
* ``"cache_context"``: ``with model.cache_context("cond" | "uncond")``, as diffusers pipelines do;
* ``"shared"``: both calls under one ``ditcache.cfg_branch("shared")`` (a deliberately wrong setup).
"""


def make_flux(seed: int = 0, dtype: torch.dtype = torch.float32, **overrides: Any) -> FluxTransformer2DModel:
    """A tiny random ``FluxTransformer2DModel`` in eval mode; the same seed gives bit-identical weights."""
    config = {**FLUX_TINY, **overrides}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = FluxTransformer2DModel(**config)
    if dtype != torch.float32:  # diffusers warns on any .to(dtype) of a model; skip the no-op cast
        model = model.to(dtype)
    return model.eval()


@attrs.frozen
class FluxInputs:
    """The inputs of a Flux denoising loop: initial latents, cond and uncond prompts, position ids."""

    latents: torch.Tensor
    """``(batch, height * width, in_channels)`` packed latent tokens (the initial noise)."""
    prompt_embeds: torch.Tensor
    pooled_prompt_embeds: torch.Tensor
    negative_prompt_embeds: torch.Tensor
    negative_pooled_prompt_embeds: torch.Tensor
    img_ids: torch.Tensor
    """``(height * width, 3)`` image position ids, as ``FluxPipeline._prepare_latent_image_ids``."""
    txt_ids: torch.Tensor
    """``(text_len, 3)`` zeros, as Flux pipelines."""

    def to(self, dtype: torch.dtype) -> FluxInputs:
        """The same inputs cast to ``dtype`` (floating tensors only; the ids stay as they are)."""
        return FluxInputs(
            latents=self.latents.to(dtype),
            prompt_embeds=self.prompt_embeds.to(dtype),
            pooled_prompt_embeds=self.pooled_prompt_embeds.to(dtype),
            negative_prompt_embeds=self.negative_prompt_embeds.to(dtype),
            negative_pooled_prompt_embeds=self.negative_pooled_prompt_embeds.to(dtype),
            img_ids=self.img_ids,
            txt_ids=self.txt_ids,
        )


def make_inputs(
    model: FluxTransformer2DModel,
    *,
    height: int = 8,
    width: int = 8,
    text_len: int = 8,
    batch: int = 1,
    seed: int = 1,
) -> FluxInputs:
    """Random inputs for ``model`` (sizes read from its config), in the model's dtype; deterministic per seed."""
    cfg = model.config
    dtype = next(model.parameters()).dtype
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen).to(dtype)

    ids = torch.zeros(height, width, 3)
    ids[..., 1] = torch.arange(height)[:, None]
    ids[..., 2] = torch.arange(width)[None, :]
    return FluxInputs(
        latents=randn(batch, height * width, cfg.in_channels),
        prompt_embeds=randn(batch, text_len, cfg.joint_attention_dim),
        pooled_prompt_embeds=randn(batch, cfg.pooled_projection_dim),
        negative_prompt_embeds=randn(batch, text_len, cfg.joint_attention_dim),
        negative_pooled_prompt_embeds=randn(batch, cfg.pooled_projection_dim),
        img_ids=ids.reshape(height * width, 3),
        txt_ids=torch.zeros(text_len, 3),
    )


def flow_sigmas(steps: int, start: float = 1.0) -> torch.Tensor:
    """``steps + 1`` sigmas, linear from ``start`` to 0 (the last one is only the Euler target)."""
    return torch.linspace(start, 0.0, steps + 1)


@attrs.frozen
class FluxCall:
    """One transformer call of a loop: the branch label the loop gave it and the keyword arguments."""

    branch: str
    step: int
    kwargs: dict[str, Any]


@contextlib.contextmanager
def _branch_scope(model: torch.nn.Module, mode: BranchMode, name: str) -> Iterator[None]:
    if mode == "auto":
        yield
    elif mode == "cfg_branch":
        with ditcache.cfg_branch(name):
            yield
    elif mode == "shared":
        with ditcache.cfg_branch("shared"):
            yield
    elif mode == "cache_context":
        with model.cache_context(name):  # type: ignore[operator]
            yield
    else:
        raise ValueError(f"branch_mode: expected one of auto, cfg_branch, cache_context, shared; got {mode!r}")


def denoise(
    model: FluxTransformer2DModel,
    steps: int,
    cfg: float | None = None,
    *,
    inputs: FluxInputs | None = None,
    sigmas: torch.Tensor | None = None,
    branch_mode: BranchMode = "auto",
    on_step: Callable[[int], None] | None = None,
    trace: list[FluxCall] | None = None,
) -> torch.Tensor:
    """Run a flow-matching Euler loop of ``steps`` steps and return the final latents.

    ``cfg`` is the true-CFG scale (None: cond calls only). ``inputs`` defaults to ``make_inputs(model)``;
    ``sigmas`` (``steps + 1`` values) to :func:`flow_sigmas`. ``on_step(i)`` is called before step ``i``'s
    transformer calls (e.g. to arm a fault). Every call is appended to ``trace`` when given, so the exact
    inputs can be fed to another model with :func:`replay`.
    """
    if inputs is None:
        inputs = make_inputs(model)
    if sigmas is None:
        sigmas = flow_sigmas(steps)
    if len(sigmas) != steps + 1:
        raise ValueError(f"sigmas: expected {steps + 1} values for {steps} steps, got {len(sigmas)}")
    latents = inputs.latents
    batch = latents.shape[0]
    branches = [("cond", inputs.prompt_embeds, inputs.pooled_prompt_embeds)]
    if cfg is not None:
        branches.append(("uncond", inputs.negative_prompt_embeds, inputs.negative_pooled_prompt_embeds))
    with torch.no_grad():
        for i in range(steps):
            if on_step is not None:
                on_step(i)
            timestep = sigmas[i].expand(batch).to(latents.dtype)
            preds = []
            for name, prompt, pooled in branches:
                kwargs: dict[str, Any] = {
                    "hidden_states": latents,
                    "encoder_hidden_states": prompt,
                    "pooled_projections": pooled,
                    "timestep": timestep,
                    "img_ids": inputs.img_ids,
                    "txt_ids": inputs.txt_ids,
                    "return_dict": False,
                }
                if trace is not None:
                    trace.append(FluxCall(name, i, kwargs))
                with _branch_scope(model, branch_mode, name):
                    preds.append(model(**kwargs)[0])
            noise_pred = preds[0] if cfg is None else preds[1] + cfg * (preds[0] - preds[1])
            latents = latents + (sigmas[i + 1] - sigmas[i]).to(latents.dtype) * noise_pred
    return latents


def replay(model: torch.nn.Module, calls: Sequence[FluxCall]) -> list[torch.Tensor]:
    """Call ``model`` with each recorded call's arguments in order (no branch marking); return the outputs."""
    with torch.no_grad():
        return [model(**call.kwargs)[0] for call in calls]
