"""Counting what ran: the transformer blocks and attentions executed per call (:class:`BlockCounter`), and the
per-step decisions of each CFG branch that follow (:class:`BranchDecisions`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import torch
from torch import nn

__all__ = ["BlockCounter", "BranchDecisions", "block_list"]


def block_list(transformer: nn.Module) -> list[nn.Module]:
    """The transformer's blocks in execution order, as its registered extractor lists them (any supported model:
    Flux's double- then single-stream blocks, Qwen-Image's dual-stream blocks, ...)."""
    from ditcache.core.extractor import get_extractor

    return list(get_extractor(transformer).block_modules(transformer))


_BODY_PROBES = ("norm1_context", "proj_mlp", "img_mlp", "ff", "norm2", "norm1", "norm")
"""Submodules that only a block's own forward calls, in order of preference. The first norm of the first block is
not first choice: TeaCache's indicator (the modulated input) calls it on every step, skipped or not."""


def _probe_modules(block: nn.Module) -> tuple[nn.Module, nn.Module | None]:
    probe = next((m for m in (getattr(block, n, None) for n in _BODY_PROBES) if isinstance(m, nn.Module)), None)
    if probe is None:
        raise TypeError(f"block {type(block).__name__}: none of {list(_BODY_PROBES)} to count its executions")
    attn = getattr(block, "attn", None)
    query = getattr(attn, "to_q", None) if attn is not None else None
    return probe, query if isinstance(query, nn.Module) else None


class BlockCounter:
    """Counts, per transformer call, the blocks whose body ran and the attentions computed.

    A forward pre-hook on the transformer opens a new call; pre-hooks on a submodule that only each block's own
    forward calls (``norm1_context`` of Flux's double-stream blocks, ``proj_mlp`` of its single-stream ones,
    ``img_mlp`` of Qwen-Image's blocks) and
    on each attention's ``to_q`` count what really ran. Use as a context manager; :attr:`calls` holds
    ``[blocks, attentions]`` per call.
    """

    def __init__(self, transformer: nn.Module) -> None:
        self.transformer = transformer
        self.blocks = block_list(transformer)
        if not self.blocks:
            raise ValueError(f"transformer: {type(transformer).__name__} has no transformer blocks to count")
        self.num_attention = 0
        self.calls: list[list[int]] = []
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    @property
    def num_blocks(self) -> int:
        """Blocks of the model."""
        return len(self.blocks)

    def _open_call(self, module: nn.Module, args: Any) -> None:
        self.calls.append([0, 0])

    def _count(self, slot: int) -> Callable[[nn.Module, Any], None]:
        def hook(module: nn.Module, args: Any) -> None:
            if not self.calls:
                raise RuntimeError("BlockCounter: a block ran outside a transformer call")
            self.calls[-1][slot] += 1

        return hook

    def __enter__(self) -> BlockCounter:
        self.calls = []
        self._handles.append(self.transformer.register_forward_pre_hook(self._open_call))
        count_block, count_attn = self._count(0), self._count(1)
        self.num_attention = 0
        for block in self.blocks:
            norm, query = _probe_modules(block)
            self._handles.append(norm.register_forward_pre_hook(count_block))
            if query is not None:
                self.num_attention += 1
                self._handles.append(query.register_forward_pre_hook(count_attn))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


# ---------------------------------------------------------------------------------------------- results
@attrs.frozen
class BranchDecisions:
    """What ran in one CFG branch, step by step."""

    branch: str
    """``"cond"`` or ``"uncond"``."""
    blocks: tuple[int, ...]
    """Blocks whose body ran, per step."""
    attention: tuple[int, ...]
    """Attentions computed, per step."""
    num_blocks: int
    """Blocks of the model (a computed step runs all of them)."""

    @property
    def computed_steps(self) -> list[int]:
        """Steps on which every block ran."""
        return [i for i, b in enumerate(self.blocks) if b >= self.num_blocks]

    @property
    def skipped_steps(self) -> list[int]:
        """Steps on which no block ran."""
        return [i for i, b in enumerate(self.blocks) if b == 0]

    @property
    def partial_steps(self) -> list[int]:
        """Steps on which some blocks, not all, ran."""
        return [i for i, b in enumerate(self.blocks) if 0 < b < self.num_blocks]

    @property
    def pattern(self) -> str:
        """One character per step: ``C`` computed, ``-`` skipped, the number of blocks run otherwise."""
        return "".join(
            "C" if b >= self.num_blocks else "-" if b == 0 else str(b) if b < 10 else "+" for b in self.blocks
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready values."""
        return {
            "branch": self.branch,
            "pattern": self.pattern,
            "blocks": list(self.blocks),
            "attention": list(self.attention),
            "computed_steps": len(self.computed_steps),
            "partial_steps": len(self.partial_steps),
            "skipped_steps": len(self.skipped_steps),
        }
