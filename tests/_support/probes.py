"""Probes shared by the test modules: what a cache decided, how far two outputs are, which blocks ran.

Import with ``from _support.probes import ...``::

    decisions(cache)              # [(step, computed, info), ...] of the latest recorded generation
    rel_err(out, reference)       # relative L2 error ||a - b|| / ||b||
    with count_block_calls(model) as counts: ...   # executions per block, live
    with executed_calls(model) as computed: ...    # which transformer calls really ran their blocks
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from ditcache.core.cache import CacheMiddleware, StepDecision

__all__ = ["count_block_calls", "decisions", "executed_calls", "rel_err", "step_decisions"]


def step_decisions(cache: CacheMiddleware[Any], index: int = -1) -> list[StepDecision]:
    """The decision records of one recorded generation of ``cache`` (default: the latest)."""
    return cache.stats()[index].decisions


def decisions(cache: CacheMiddleware[Any], index: int = -1) -> list[tuple[int, bool, dict[str, Any]]]:
    """The decisions of one recorded generation (default: the latest), with everything they measured."""
    return [(d.step, d.computed, d.info) for d in step_decisions(cache, index)]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """The relative L2 error ``||a - b|| / ||b||``."""
    return float((a - b).norm() / b.norm())


def _flux_blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    return [*model.transformer_blocks, *model.single_transformer_blocks]  # type: ignore[misc]


@contextlib.contextmanager
def count_block_calls(model: torch.nn.Module) -> Iterator[list[int]]:
    """Count executions of every transformer block of a Flux model (double then single) with forward pre-hooks.

    Yields a list with one counter per block, updated live; the hooks are removed on exit.
    """
    blocks = _flux_blocks(model)
    counts = [0] * len(blocks)
    handles = []
    for index, block in enumerate(blocks):

        def hook(module: torch.nn.Module, args: Any, index: int = index) -> None:
            counts[index] += 1

        handles.append(block.register_forward_pre_hook(hook))
    try:
        yield counts
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def executed_calls(model: torch.nn.Module) -> Iterator[list[int]]:
    """Indices (0-based, in call order) of the transformer calls whose blocks really ran.

    Counted with forward pre-hooks on the *attention* modules of the first and the last block: diffusers' MagCache
    still calls every block on a skipped step (its hooks return the inputs), but the attention inside runs only
    when a block computes. Asserts that the first and the last block always run together.
    """
    blocks = _flux_blocks(model)
    call = [-1]
    first: list[int] = []
    last: list[int] = []
    handles = [
        model.register_forward_pre_hook(lambda m, a: call.__setitem__(0, call[0] + 1)),
        blocks[0].attn.register_forward_pre_hook(lambda m, a: first.append(call[0])),  # type: ignore[union-attr]
        blocks[-1].attn.register_forward_pre_hook(lambda m, a: last.append(call[0])),  # type: ignore[union-attr]
    ]
    try:
        yield first
    finally:
        for h in handles:
            h.remove()
    assert first == last, "the block stack ran partially"
