"""`CacheContext`: what a per-model extractor hands to the cache middlewares for one transformer call.

The extractor splits a model's forward into three parts:

1. the *preprocessing* it runs itself (embeddings, timestep conditioning, rotary embeddings, ...), whose results
   are the fields of the context;
2. the *transformer blocks*, given as a :class:`BlockStack` that the middlewares may run whole, block by block, or
   narrowed to a slice (DBCache runs the first ``Fn`` blocks, then the middle ones or their cached residual, then the
   last ``Bn``);
3. the *postprocess* (final norm, projection, unpatchify, ``return_dict`` handling), called with the blocks' output.

Every block in a stack has the same calling convention, whatever the model's own block signature is::

    hidden_states, encoder_hidden_states = block_fn(index, hidden_states, encoder_hidden_states)

``encoder_hidden_states`` is None for models without a second stream; a model whose blocks leave it unchanged
(Wan) returns the same tensor object, which lets caches skip storing a zero residual for it.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any

import attrs
import torch

from ditcache.core.branch import Role
from ditcache.core.distributed import LOCAL, Reducer

__all__ = ["BlockFn", "BlockOutput", "BlockStack", "CacheContext", "Postprocess"]

BlockOutput = tuple[torch.Tensor, "torch.Tensor | None"]
"""What a block stack returns: ``(hidden_states, encoder_hidden_states)``."""

BlockFn = Callable[[int, torch.Tensor, "torch.Tensor | None"], BlockOutput]
"""Runs block ``index`` (an index into the model's full block list) on the two streams."""

Postprocess = Callable[[torch.Tensor, "torch.Tensor | None"], Any]
"""Turns the blocks' output into the model's return value."""


@attrs.frozen(repr=False)
class BlockStack:
    """A contiguous range ``[start, stop)`` of a model's transformer blocks with one calling convention.

    ``stack(h, e)`` runs every block in the range in order; ``stack[i:j]`` is the sub-range (indices relative to
    this range, like a list slice); ``len(stack)`` the number of blocks; ``stack.modules`` the block modules.
    """

    run_block: BlockFn
    """Runs one block by its index in the full list."""
    all_modules: Sequence[torch.nn.Module]
    """The model's full block list, in execution order."""
    start: int = 0
    stop: int = attrs.field(default=-1)

    def __attrs_post_init__(self) -> None:
        n = len(self.all_modules)
        if self.stop == -1:
            object.__setattr__(self, "stop", n)
        if not 0 <= self.start <= self.stop <= n:
            raise ValueError(f"blocks: range [{self.start}, {self.stop}) is outside the model's {n} blocks")

    def __len__(self) -> int:
        return self.stop - self.start

    @property
    def modules(self) -> Sequence[torch.nn.Module]:
        """The block modules in this range."""
        return self.all_modules[self.start : self.stop]

    def __getitem__(self, item: slice) -> BlockStack:
        if not isinstance(item, slice) or item.step not in (None, 1):
            raise TypeError("blocks: a BlockStack can only be sliced with a contiguous slice, e.g. stack[1:-2]")
        lo, hi, _ = item.indices(len(self))
        hi = max(lo, hi)
        return BlockStack(self.run_block, self.all_modules, self.start + lo, self.start + hi)

    def __call__(self, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None) -> BlockOutput:
        run = self.run_block
        for index in range(self.start, self.stop):
            out = run(index, hidden_states, encoder_hidden_states)
            _check_block_output(index, out, hidden_states)
            hidden_states, encoder_hidden_states = out
        return hidden_states, encoder_hidden_states

    def __repr__(self) -> str:
        return f"BlockStack([{self.start}:{self.stop}] of {len(self.all_modules)})"


def _check_block_output(index: int, out: object, hidden_in: torch.Tensor) -> None:
    """A block must return ``(hidden_states, encoder_hidden_states or None)`` with hidden_states' shape kept
    (cached residuals are differences of the two). Costs a few attribute reads, no host sync."""
    if not isinstance(out, tuple) or len(out) != 2:
        raise TypeError(
            f"CacheContext.blocks: block {index} returned {_tensor_desc(out)}; a block stack's run_block must return "
            "(hidden_states, encoder_hidden_states or None)"
        )
    h, e = out
    if not isinstance(h, torch.Tensor) or (e is not None and not isinstance(e, torch.Tensor)):
        raise TypeError(
            f"CacheContext.blocks: block {index} returned ({_tensor_desc(h)}, {_tensor_desc(e)}); expected "
            "(torch.Tensor, torch.Tensor or None)"
        )
    if h.shape != hidden_in.shape:
        raise ValueError(
            f"CacheContext.blocks: block {index} returned hidden_states {_tensor_desc(h)}, but its input was "
            f"{_tensor_desc(hidden_in)}; a block must keep the shape of hidden_states"
        )


def _tensor_desc(x: object) -> str:
    if isinstance(x, torch.Tensor):
        return f"Tensor{tuple(x.shape)} {x.dtype} {x.device}"
    return type(x).__name__


@attrs.frozen(repr=False)
class CacheContext:
    """Everything a cache middleware needs for one transformer forward, produced by a model extractor.

    Extractors fill the first group of fields. The runtime fills the second group (branch, role, step, step count,
    generation, reducer) before the middleware stack sees the context. Middlewares pass narrowed copies down the
    stack with :meth:`evolve` (for example new hidden states and a sub-range of blocks).
    """

    # -- produced by the extractor --------------------------------------------------------------------------
    _modulated_input: torch.Tensor | Callable[[], torch.Tensor] = attrs.field(alias="modulated_input")
    """The timestep-modulated input of the first block (TeaCache's indicator), or a zero-argument function computing
    it: it is then computed on first use only, so caches that do not need it (MagCache, DBCache) do not pay for it.
    Read it through :attr:`modulated_input`."""
    hidden_states: torch.Tensor
    """The main (image/video token) stream entering the blocks."""
    encoder_hidden_states: torch.Tensor | None
    """The second (text) stream entering the blocks, or None."""
    temb: torch.Tensor
    """The timestep (and pooled-condition) embedding the blocks are conditioned on."""
    blocks: BlockStack
    """The transformer blocks, runnable whole, by slice or one by one."""
    postprocess: Postprocess
    """Maps the blocks' ``(hidden_states, encoder_hidden_states)`` to the model's return value."""
    extra_states: dict[str, Any] = attrs.field(factory=dict)
    """Model-specific extras (alternative indicators such as Wan's ``timestep_proj``, masks, ...)."""
    timestep: torch.Tensor | float | None = None
    """The raw timestep of the call, used to detect the start of a new generation."""
    condition: torch.Tensor | None = None
    """The raw conditioning tensor the caller passed (e.g. prompt embeddings), used as the default CFG-branch
    identity: the cond and uncond calls of a pipeline pass different tensors."""

    # -- filled by the runtime --------------------------------------------------------------------------------
    branch: Hashable = "default"
    """The CFG branch this call belongs to; state is kept per branch."""
    role: Role = "cond"
    """The branch's CFG role, ``"cond"`` or ``"uncond"`` (:func:`ditcache.core.branch.role_of`, applied by the
    step clock): which calibrated curve or polynomial the branch uses."""
    step: int = 0
    """Index of this call among the calls of its branch in the current generation."""
    num_steps: int | None = None
    """Number of calls per branch in the generation, when known (``refresh`` or the config)."""
    generation: int = 0
    """Counter that changes whenever a new generation starts for this branch."""
    reducer: Reducer = LOCAL
    """Sums partial sums over the ranks sharing this sequence, so every rank decides from the same scalar
    (:mod:`ditcache.core.distributed`); the identity for one process."""

    def evolve(self, **changes: Any) -> CacheContext:
        """A copy with some fields replaced (``attrs.evolve``)."""
        return attrs.evolve(self, **changes)

    def run_blocks(self) -> BlockOutput:
        """Run every block of :attr:`blocks` on this context's streams."""
        return self.blocks(self.hidden_states, self.encoder_hidden_states)

    @property
    def modulated_input(self) -> torch.Tensor:
        """The modulated input, computed (and checked) on first access when the extractor gave a function."""
        m = self._modulated_input
        if not isinstance(m, torch.Tensor):
            m = m()
            if not isinstance(m, torch.Tensor):
                raise TypeError(
                    f"CacheContext.modulated_input: the function must return a torch.Tensor, got {type(m).__name__}"
                )
            self._check_modulated(m)
            object.__setattr__(self, "_modulated_input", m)
        return m

    def _check_modulated(self, m: torch.Tensor) -> None:
        h = self.hidden_states
        if m.ndim == 0 or m.shape[0] != h.shape[0]:
            raise ValueError(
                f"CacheContext.modulated_input: batch size must equal hidden_states' ({h.shape[0]}), "
                f"got {_tensor_desc(m)}"
            )
        if m.device != h.device:
            raise ValueError(
                f"CacheContext.modulated_input: on {m.device}, but hidden_states is on {h.device}; all tensors of a "
                "context must share one device"
            )

    @property
    def is_last_step(self) -> bool:
        """Whether this is the last call of its branch in the generation (False when the count is unknown)."""
        return self.num_steps is not None and self.step >= self.num_steps - 1

    def validate(self) -> None:
        """Check types, batch sizes and devices; raise TypeError / ValueError naming the offending field."""
        m = self._modulated_input
        if not isinstance(m, torch.Tensor) and not callable(m):
            raise TypeError(
                "CacheContext.modulated_input: expected a torch.Tensor or a function returning one, "
                f"got {type(m).__name__}"
            )
        for field in ("hidden_states", "temb"):
            value = getattr(self, field)
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"CacheContext.{field}: expected a torch.Tensor, got {type(value).__name__}")
        for field in ("encoder_hidden_states", "condition"):
            value = getattr(self, field)
            if value is not None and not isinstance(value, torch.Tensor):
                raise TypeError(f"CacheContext.{field}: expected a torch.Tensor or None, got {type(value).__name__}")
        if not isinstance(self.blocks, BlockStack):
            raise TypeError(f"CacheContext.blocks: expected a BlockStack, got {type(self.blocks).__name__}")
        if len(self.blocks) == 0:
            raise ValueError("CacheContext.blocks: the block stack is empty; a model needs at least one block")
        if not callable(self.postprocess):
            raise TypeError(f"CacheContext.postprocess: expected a callable, got {type(self.postprocess).__name__}")
        if not isinstance(self.extra_states, dict):
            raise TypeError(f"CacheContext.extra_states: expected a dict, got {type(self.extra_states).__name__}")
        h = self.hidden_states
        if h.ndim < 2:
            raise ValueError(
                f"CacheContext.hidden_states: expected a batched tensor (ndim >= 2), got {_tensor_desc(h)}"
            )
        batch, device = h.shape[0], h.device
        if isinstance(m, torch.Tensor):
            self._check_modulated(m)
        e = self.encoder_hidden_states
        if e is not None and (e.ndim == 0 or e.shape[0] not in (batch, 1)):
            # batch 1 is broadcast by the blocks (a prompt shared by several images), as the model itself accepts
            raise ValueError(
                f"CacheContext.encoder_hidden_states: batch size must equal hidden_states' ({batch}) or be 1 "
                f"(broadcast), got {_tensor_desc(e)}"
            )
        ts = self.timestep
        if ts is not None and (isinstance(ts, bool) or not isinstance(ts, (torch.Tensor, int, float))):
            raise TypeError(
                f"CacheContext.timestep: expected a torch.Tensor, a number or None, got {type(ts).__name__}"
            )
        t = self.temb
        if t.ndim == 0 or t.shape[0] % batch != 0:
            raise ValueError(
                f"CacheContext.temb: leading size must be a multiple of the batch size ({batch}), got {_tensor_desc(t)}"
            )
        for field, value in (("encoder_hidden_states", e), ("temb", t)):
            if value is not None and value.device != device:
                raise ValueError(
                    f"CacheContext.{field}: on {value.device}, but hidden_states is on {device}; all tensors of a "
                    "context must share one device"
                )

    def __repr__(self) -> str:
        return (
            f"CacheContext(branch={self.branch!r}, step={self.step}, num_steps={self.num_steps}, "
            f"hidden_states={_tensor_desc(self.hidden_states)}, encoder_hidden_states="
            f"{_tensor_desc(self.encoder_hidden_states)}, blocks={self.blocks!r})"
        )
