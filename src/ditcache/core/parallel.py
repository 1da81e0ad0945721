"""Sequence (context) parallelism: where the cache runtime meets diffusers' context-parallel hooks.

diffusers 0.42 splits a model's sequence over ranks with hooks its ``ModelMixin.enable_parallelism`` installs from
the model's ``_cp_plan``: *split* hooks (``ContextParallelSplitHook``, registered as ``"cp_input---<submodule>"``)
chunk named inputs (or outputs) of a submodule along the sequence dimension, and *gather* hooks
(``"cp_output---<submodule>"``) all-gather an output. Where they sit differs per model:

* Flux splits the *top-level* forward's inputs (the ``""`` entry) and gathers at ``proj_out``. A ditcache runtime
  wrapped around the model's forward after ``enable_parallelism`` would never call that split hook (the extractor
  re-implements the forward instead of calling it), so the runtime applies the split itself
  (:meth:`ContextParallel.split_inputs`) unless diffusers' hook wraps the runtime (applied the other way round), in
  which case the inputs arrive split already;
* Qwen-Image and Wan split the streams at the *first block* (``transformer_blocks.0`` / ``blocks.0``), inside the
  block stack the caches cut into. The runtime therefore splits ``hidden_states`` / ``encoder_hidden_states`` (and
  a per-token modulated input) before the caches see the context (:meth:`ContextParallel.split_streams`), and
  turns that part of the first block's hook off while the stack runs (:meth:`ContextParallel.bypass`), so the
  residuals are taken on the shard, a reused step adds a shard to a shard, and ``proj_out``'s gather hook
  (called by the extractor's postprocess) gathers exactly once.

Everything is read by duck typing from the module (``_parallel_config``, ``_diffusers_hook``): ``core`` imports
no diffusers. :func:`detect_reducer` gives the sequence-parallel group's reducer, and :class:`AgreedBranches`
makes the automatic CFG-branch identity the same on every rank.

The rule for anything a rank decides on (documented in ``docs/multi_gpu.md``): it reads only values that are
identical on every rank (timesteps, shapes of equal shards, names) or goes through the reducer. Tensor addresses
and shard contents are rank-local and never decide anything by themselves.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Hashable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from ditcache.core.context import CacheContext
from ditcache.core.distributed import LOCAL, ProcessGroupReducer, Reducer

__all__ = ["AgreedBranches", "ContextParallel", "context_parallel_config", "detect_reducer"]

_SPLIT_PREFIX = "cp_input---"
_STREAMS = ("hidden_states", "encoder_hidden_states")


def context_parallel_config(module: nn.Module) -> Any | None:
    """The diffusers ``ContextParallelConfig`` enabled on ``module`` (``enable_parallelism``), or None."""
    config = getattr(module, "_parallel_config", None)
    return None if config is None else getattr(config, "context_parallel_config", None)


def detect_reducer(module: nn.Module) -> Reducer:
    """The reducer over the ranks that share ``module``'s sequence: a :class:`ProcessGroupReducer` over diffusers'
    context-parallel mesh when context parallelism is enabled on it with more than one rank, else ``LOCAL``."""
    config = context_parallel_config(module)
    mesh = None if config is None else getattr(config, "_flattened_mesh", None)
    if mesh is None or mesh.size() <= 1:
        return LOCAL
    return ProcessGroupReducer(mesh.get_group())


def _split_hooks(module: nn.Module) -> list[Any]:
    registry = getattr(module, "_diffusers_hook", None)
    hooks = getattr(registry, "hooks", None)
    if not isinstance(hooks, dict):
        return []
    return [hook for name, hook in hooks.items() if name.startswith(_SPLIT_PREFIX) and hasattr(hook, "metadata")]


def _wraps(hook: Any, forward: Any) -> bool:
    """Whether ``hook`` (a diffusers hook) wraps ``forward``: the forward it calls is ``forward`` or wraps it."""
    inner = getattr(getattr(hook, "fn_ref", None), "forward", None)
    for _ in range(64):  # a chain of wrappers, never a cycle; bounded anyway
        if inner is None:
            return False
        if inner is forward:
            return True
        inner = getattr(inner, "__wrapped__", None)
    return False


class ContextParallel:
    """diffusers' context-parallel split hooks of one model, as the cache runtime needs them.

    ``blocks`` is the extractor's block list in execution order. A split hook on a block that names a stream
    (``hidden_states``, ``encoder_hidden_states``) must sit on the first block (where every diffusers plan puts it);
    elsewhere the caches could not take residuals on one layout, and a ``ValueError`` says so.
    """

    def __init__(self, module: nn.Module, blocks: Sequence[nn.Module]) -> None:
        self.input_hooks = _split_hooks(module)
        self.stream_hook: Any = None
        self.stream_plan: dict[str, Any] = {}
        self._other_plan: dict[Any, Any] = {}
        for index, block in enumerate(blocks):
            for hook in _split_hooks(block):
                streams = {k: v for k, v in hook.metadata.items() if k in _STREAMS}
                if not streams:
                    continue
                if index != 0 or self.stream_hook is not None:
                    raise ValueError(
                        f"context parallelism: {type(module).__name__}'s plan splits {sorted(streams)} at block "
                        f"{index}; ditcache supports a stream split on the first block only (or on the model's "
                        "inputs, the '' entry of _cp_plan)"
                    )
                self.stream_hook = hook
                self.stream_plan = streams
                self._other_plan = {k: v for k, v in hook.metadata.items() if k not in _STREAMS}

    def split_inputs(
        self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], forward: Any
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Apply the model-input split hooks that ``forward`` (the runtime's hooked forward) wraps, i.e. the ones
        that would otherwise never run. Hooks wrapping ``forward`` have split the inputs already."""
        for hook in self.input_hooks:
            if not _wraps(hook, forward):
                args, kwargs = hook.pre_forward(module, *args, **kwargs)
        return tuple(args), kwargs

    def split_streams(self, ctx: CacheContext) -> CacheContext:
        """The context with its streams split as the first block's hook would split them; a modulated input laid
        out like ``hidden_states`` (batch, tokens, ...) is split alike, lazily. The identity without such a hook."""
        hook = self.stream_hook
        if hook is None:
            return ctx
        h_full = ctx.hidden_states
        changes: dict[str, Any] = {}
        plan_h = self.stream_plan.get("hidden_states")
        if plan_h is not None:
            changes["hidden_states"] = hook._prepare_cp_input(h_full, plan_h)
        plan_e = self.stream_plan.get("encoder_hidden_states")
        if plan_e is not None and ctx.encoder_hidden_states is not None:
            changes["encoder_hidden_states"] = hook._prepare_cp_input(ctx.encoder_hidden_states, plan_e)
        if plan_h is not None:

            def modulated_input() -> torch.Tensor:
                m = ctx.modulated_input
                if m.ndim == h_full.ndim and m.shape[:2] == h_full.shape[:2]:
                    return hook._prepare_cp_input(m, plan_h)  # type: ignore[no-any-return]
                return m  # replicated (e.g. Wan's temb): every rank holds it whole

            changes["modulated_input"] = modulated_input
        return ctx.evolve(**changes)

    @contextlib.contextmanager
    def bypass(self) -> Iterator[None]:
        """While the block stack runs: the first block's hook leaves the streams (split already) alone and still
        splits its other inputs."""
        hook = self.stream_hook
        if hook is None:
            yield
            return
        full = hook.metadata
        hook.metadata = self._other_plan
        try:
            yield
        finally:
            hook.metadata = full


class AgreedBranches:
    """Automatic CFG-branch identities that are the same on every rank.

    The automatic identity (:class:`ditcache.core.branch.AutoIdentities`) rests on the conditioning tensor's
    address, which is rank-local: two ranks can see different patterns (an address reused on one rank only) and
    split a branch differently, then decide differently and deadlock. Each rank numbers its local identities in
    order of first appearance; the ranks sum ``(n, n**2)`` of the call's number in one small collective and the
    branch is named by the sums, the same on every rank by construction (and equal to the local numbering's
    partition whenever the ranks agree). Named branches (``cfg_branch``, a pipeline's ``cache_context``) need none
    of this.
    """

    def __init__(self, capacity: int = 4096) -> None:
        self._numbers: collections.OrderedDict[Hashable, int] = collections.OrderedDict()
        self._next = 0
        self._capacity = capacity

    def agree(self, local: Hashable, reducer: Reducer, device: torch.device) -> Hashable:
        """The agreed identity of the call whose local automatic identity is ``local``; ``local`` itself when the
        reducer is local or the identity is the constant ``"default"`` (no conditioning tensor)."""
        if reducer.is_local or local == "default":
            return local
        number = self._numbers.get(local)
        if number is None:
            number = self._next
            self._next += 1
            self._numbers[local] = number
            while len(self._numbers) > self._capacity:
                self._numbers.popitem(last=False)
        partial = torch.tensor([float(number), float(number) ** 2], dtype=torch.float64, device=device)
        total, total_sq = reducer.sum(partial).tolist()
        return f"auto:agreed:{int(total)}:{int(total_sq)}"
