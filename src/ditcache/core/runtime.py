"""The cache runtime: registry -> extractor -> CacheContext -> middleware stack -> blocks -> postprocess.

:class:`CacheRuntime` is one middleware of the module's :class:`~ditcache.core.hooks.HookRegistry` (named
``"ditcache.cache"``). For every forward it:

1. asks the model's extractor for a :class:`~ditcache.core.context.CacheContext` (inside the extractor's scope, e.g.
   LoRA scaling) and validates it;
2. stamps it with the CFG branch, its role, the step index within the branch's generation, the step count, the
   generation counter (:class:`~ditcache.core.clock.StepClock`, which also announces generation boundaries to the
   caches) and the reducer that makes decisions agree across ranks (:mod:`ditcache.core.distributed`): the one
   given with :func:`set_reducer`, else the context-parallel group diffusers' ``enable_parallelism`` set up on the
   model, else the local one. Under diffusers' context parallelism the runtime also splits the inputs and streams
   where diffusers' split hooks expect them (:mod:`ditcache.core.parallel`);
3. runs the ordered stack of cache middlewares; the innermost step runs the blocks;
4. applies the postprocess to the blocks' output and returns the model's result.

The functions at the bottom (:func:`apply_cache`, :func:`remove_cache`, :func:`refresh`, ...) are the public way
to attach and manage caches; the per-cache entry points (``apply_teacache_hook``) call :func:`apply_cache`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch
from torch import nn

from ditcache.core._compile import eager
from ditcache.core.branch import auto_branch, current_branch
from ditcache.core.cache import CacheMiddleware, FinalOutput, GenerationStats, insertion_index
from ditcache.core.clock import StepClock
from ditcache.core.context import BlockOutput, CacheContext
from ditcache.core.distributed import Reducer
from ditcache.core.extractor import Extractor, get_extractor
from ditcache.core.hooks import CallNext, ForwardCall, HookRegistry
from ditcache.core.log import get_logger
from ditcache.core.parallel import AgreedBranches, ContextParallel, detect_reducer

__all__ = [
    "RUNTIME_NAME",
    "CacheRuntime",
    "apply_cache",
    "cache_stats",
    "get_cache_runtime",
    "refresh",
    "remove_cache",
    "set_reducer",
]

RUNTIME_NAME = "ditcache.cache"
_log = get_logger("ditcache.core.runtime")


def _scalar(t: torch.Tensor | float | None) -> float | None:
    if t is None:
        return None
    if isinstance(t, torch.Tensor):
        if t.numel() == 0:
            return None
        # The largest entry: per-token timesteps (Wan 2.2 TI2V image-to-video) pin the conditioning frame at 0.
        return float(t.detach().reshape(-1).max())
    return float(t)


class _CacheContextBridge:
    """Shadows a diffusers model's ``cache_context`` so the pipeline's branch names reach the runtime."""

    def __init__(self, runtime: CacheRuntime) -> None:
        self.runtime = runtime

    @contextlib.contextmanager
    def __call__(self, name: str, **kwargs: Any) -> Iterator[None]:
        rt = self.runtime
        original = type(rt.module).cache_context  # type: ignore[attr-defined]
        previous = rt.external_context
        rt.external_context = (name, kwargs)
        try:
            with original(rt.module, name, **kwargs):
                yield
        finally:
            rt.external_context = previous


class CacheRuntime:
    """The registry middleware that runs a module's cache stack. One per module; see the module docstring."""

    def __init__(self, module: nn.Module, extractor: Extractor) -> None:
        self.module = module
        self.extractor = extractor
        self._middlewares: list[CacheMiddleware[Any]] = []
        self.clock = StepClock(self._middlewares)  # announces generation boundaries to the caches
        self.external_context: tuple[str, dict[str, Any]] | None = None
        self.reducer: Reducer | None = None  # given with set_reducer; None: detected per call
        self._branches = AgreedBranches()
        self._parallel: tuple[Any, ContextParallel | None, Reducer] | None = None  # (config, plan, reducer)
        self._chain: Callable[[CacheContext], BlockOutput | FinalOutput] = _run_blocks

    # ------------------------------------------------------------------ stack management
    @property
    def middlewares(self) -> list[CacheMiddleware[Any]]:
        """The cache middlewares, outermost first."""
        return list(self._middlewares)

    def get(self, name: str) -> CacheMiddleware[Any] | None:
        """The middleware named ``name`` or None."""
        for mw in self._middlewares:
            if mw.name == name:
                return mw
        return None

    def add(self, middleware: CacheMiddleware[Any]) -> bool:
        """Insert where :func:`~ditcache.core.cache.insertion_index` says; False if one with the same settings
        (:meth:`~ditcache.core.cache.CacheMiddleware.same_settings`) is already there."""
        existing = self.get(middleware.name)
        if existing is not None:
            if existing.same_settings(middleware):
                return False
            raise ValueError(
                f"cache: a {middleware.name!r} cache with a different config is already applied to "
                f"{type(self.module).__name__} ({existing.config!r}); remove it first with "
                f"ditcache.remove_cache(module, {middleware.name!r})"
            )
        if middleware.level is not None:
            for mw in self._middlewares:
                if mw.level == middleware.level:
                    raise ValueError(
                        f"cache: {middleware.name!r} and the applied {mw.name!r} are both {middleware.level}-level "
                        f"caches; two of them cannot be stacked on one module (the outer one would decide for both). "
                        f"Stack a step-level cache (teacache, magcache) over a block-level one (dbcache), or remove "
                        f"{mw.name!r} first"
                    )
        middleware.bind(self.module, len(self.extractor.block_modules(self.module)))
        self._middlewares.insert(insertion_index(self._middlewares, middleware), middleware)
        self._rebuild()
        return True

    def remove(self, name: str) -> CacheMiddleware[Any] | None:
        """Remove the middleware named ``name`` (None if absent)."""
        mw = self.get(name)
        if mw is not None:
            self._middlewares.remove(mw)
            mw.reset()
            self._rebuild()
        return mw

    def _build_chain(self) -> Callable[[CacheContext], BlockOutput | FinalOutput]:
        chain: Callable[[CacheContext], BlockOutput | FinalOutput] = _run_blocks
        for mw in reversed(self._middlewares):
            chain = _link(mw, chain)
        return chain

    def __getstate__(self) -> dict[str, Any]:
        # The chain's closures would survive copy.deepcopy and keep calling the original's middlewares.
        state = self.__dict__.copy()
        del state["_chain"]
        state["_parallel"] = None  # holds a process group; detected again on the copy
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._chain = self._build_chain()

    def _rebuild(self) -> None:
        self._chain = self._build_chain()
        self._sync_bridge()
        # A change of the stack restarts every remaining cache from a clean state at the next call, so each behaves
        # exactly as if it had been applied alone from then on.
        self.clock.refresh(self.clock.num_steps)
        for mw in self._middlewares:
            mw.reset()

    def _sync_bridge(self) -> None:
        """Install the ``cache_context`` bridge while this runtime is registered and runs caches; remove it
        otherwise. The registry owns the patch, so clearing the registry also removes the bridge."""
        reg = HookRegistry.get(self.module)
        registered = reg is not None and reg.get_middleware(RUNTIME_NAME) is self
        want = registered and bool(self._middlewares) and hasattr(type(self.module), "cache_context")
        current = reg.patched_attribute("cache_context") if reg is not None else None
        bridged = isinstance(current, _CacheContextBridge) and current.runtime is self
        if want and not bridged:
            assert reg is not None
            reg.patch_attribute("cache_context", _CacheContextBridge(self), owner=RUNTIME_NAME)
        elif not want and bridged:
            assert reg is not None
            reg.restore_attribute("cache_context")

    # ------------------------------------------------------------------ lifecycle
    def refresh(self, num_inference_steps: int | None = None) -> None:
        """Start a new generation at the next call: reset every cache's state; set the step count if given."""
        if num_inference_steps is not None and (
            not isinstance(num_inference_steps, int) or isinstance(num_inference_steps, bool) or num_inference_steps < 1
        ):
            raise ValueError(f"num_inference_steps: expected a positive int or None, got {num_inference_steps!r}")
        self.clock.refresh(num_inference_steps)
        for mw in self._middlewares:
            mw.reset()

    # ------------------------------------------------------------------ the call
    # Never traced by torch.compile: the decisions read and write Python state every step (tracing them would
    # recompile per step). Compile the blocks instead (``block.compile()`` or diffusers' ``compile_repeated_blocks``):
    # compiled blocks run compiled inside this eager region; ``torch.compile(model)`` stays correct.
    @eager
    def __call__(self, call: ForwardCall, call_next: CallNext) -> Any:
        if not self._middlewares:
            return call_next(call)
        module = call.module
        cp = self._context_parallel(module)
        with self.extractor.scope(module, call.kwargs) as kwargs:
            args = call.args
            if cp is not None:
                reg = HookRegistry.get(module)
                args, kwargs = cp.split_inputs(module, args, kwargs, None if reg is None else reg._installed)
            ctx = self.extractor.extract(module, args, kwargs)
            if not isinstance(ctx, CacheContext):
                raise TypeError(
                    f"extractor {self.extractor.name!r}: extract() must return a CacheContext, got {type(ctx).__name__}"
                )
            ctx.validate()
            ctx = self._stamp(ctx)
            if cp is None:
                result = self._chain(ctx)
            else:
                ctx = cp.split_streams(ctx)
                with cp.bypass():
                    result = self._chain(ctx)
            self.clock.call_done(ctx.branch)
            if isinstance(result, FinalOutput):
                return result.value
            hidden, encoder = result
            return ctx.postprocess(hidden, encoder)

    def _stamp(self, ctx: CacheContext) -> CacheContext:
        branch = current_branch()
        step_hint: int | None = None
        num_steps = self.clock.num_steps
        if branch is None and self.external_context is not None:
            name, kw = self.external_context
            branch = name
            step_hint = kw.get("step_index")
            if num_steps is None and kw.get("num_inference_steps") is not None:
                num_steps = int(kw["num_inference_steps"])
                self.clock.num_steps = num_steps
        reducer = self.effective_reducer()
        if branch is None:
            branch = self._branches.agree(auto_branch(ctx.condition), reducer, ctx.hidden_states.device)
        h = ctx.hidden_states
        signature = (tuple(h.shape), h.dtype, h.device)
        tick = self.clock.advance(branch, _scalar(ctx.timestep), signature, step_hint)
        return ctx.evolve(
            branch=branch,
            role=tick.role,
            step=tick.step,
            num_steps=num_steps,
            generation=tick.generation,
            reducer=reducer,
        )

    # ------------------------------------------------------------------ sequence parallelism
    def _context_parallel(self, module: nn.Module) -> ContextParallel | None:
        """diffusers' context-parallel hooks of ``module`` (None when it is not enabled), re-read when its
        parallel config changes."""
        config = getattr(module, "_parallel_config", None)
        cached = self._parallel
        if cached is None or cached[0] is not config:
            cp_enabled = config is not None and getattr(config, "context_parallel_config", None) is not None
            plan = ContextParallel(module, self.extractor.block_modules(module)) if cp_enabled else None
            cached = self._parallel = (config, plan, detect_reducer(module))
        return cached[1]

    def effective_reducer(self) -> Reducer:
        """The reducer the contexts get: the one given with :func:`set_reducer`, else the context-parallel group
        of the module (:func:`ditcache.core.parallel.detect_reducer`), else ``LOCAL``."""
        if self.reducer is not None:
            return self.reducer
        self._context_parallel(self.module)
        assert self._parallel is not None
        return self._parallel[2]

    def __repr__(self) -> str:
        return f"CacheRuntime({self.extractor.name}, {[mw.name for mw in self._middlewares]})"


def _run_blocks(ctx: CacheContext) -> BlockOutput:
    return ctx.blocks(ctx.hidden_states, ctx.encoder_hidden_states)


def _link(
    middleware: CacheMiddleware[Any], call_next: Callable[[CacheContext], BlockOutput | FinalOutput]
) -> Callable[[CacheContext], BlockOutput | FinalOutput]:
    def checked_next(ctx: CacheContext) -> BlockOutput:
        out = call_next(ctx)
        if isinstance(out, FinalOutput):
            raise TypeError(
                f"cache: an inner middleware returned FinalOutput to {middleware.name!r}; only the outermost cache "
                "may return the model's output (stack output-forecasting caches outside the others)"
            )
        return out

    def step(ctx: CacheContext) -> BlockOutput | FinalOutput:
        return middleware.process(ctx, checked_next)

    return step


# ---------------------------------------------------------------------- public functions
def get_cache_runtime(module: nn.Module) -> CacheRuntime | None:
    """The cache runtime installed on ``module``, or None."""
    reg = HookRegistry.get(module)
    if reg is None:
        return None
    rt = reg.get_middleware(RUNTIME_NAME)
    return rt if isinstance(rt, CacheRuntime) else None


def _resolve_extractor(module: nn.Module, extractor: Extractor | str | None) -> Extractor:
    if isinstance(extractor, Extractor):
        ext = extractor
    elif extractor is None or isinstance(extractor, str):
        ext = get_extractor(module if extractor is None else extractor)
    else:
        raise TypeError(f"extractor: expected an Extractor, a registered key or None, got {type(extractor).__name__}")
    ext.check(module)
    return ext


M = TypeVar("M", bound=CacheMiddleware[Any])


def apply_cache(
    module: nn.Module,
    middleware: M,
    *,
    extractor: Extractor | str | None = None,
    num_inference_steps: int | None = None,
) -> M:
    """Attach a cache middleware to ``module`` and return the middleware that is in effect.

    The module's extractor is looked up from its class unless ``extractor`` is given. Applying an equal cache
    twice is a no-op (the one already applied is returned); a different config under the same cache name is an
    error. Nothing is changed when an error is raised. ``num_inference_steps`` (a config's step count) becomes the
    runtime's step count unless one is already known.
    """
    applied = _apply(module, middleware, extractor)
    if num_inference_steps is not None and applied is middleware:
        runtime = get_cache_runtime(module)
        assert runtime is not None
        if runtime.clock.num_steps is None:
            runtime.clock.num_steps = num_inference_steps
    return applied


def _apply(module: nn.Module, middleware: M, extractor: Extractor | str | None) -> M:
    if not isinstance(module, nn.Module):
        raise TypeError(f"module: expected a torch.nn.Module, got {type(module).__name__}")
    if not isinstance(middleware, CacheMiddleware):
        raise TypeError(f"middleware: expected a CacheMiddleware, got {type(middleware).__name__}")
    runtime = get_cache_runtime(module)
    if runtime is None:
        runtime = CacheRuntime(module, _resolve_extractor(module, extractor))
        runtime.add(middleware)  # raises before anything is installed
        HookRegistry.get_or_create(module).register(RUNTIME_NAME, runtime)
        runtime._sync_bridge()
        return middleware
    if extractor is not None and _resolve_extractor(module, extractor) is not runtime.extractor:
        raise ValueError(
            f"extractor: {type(module).__name__} already runs caches with extractor {runtime.extractor.name!r}; "
            "remove them (ditcache.remove_cache(module)) before applying a cache with another extractor"
        )
    existing = runtime.get(middleware.name)
    if runtime.add(middleware):
        return middleware
    assert isinstance(existing, type(middleware))
    return existing


def remove_cache(module: nn.Module, name: str | None = None) -> list[CacheMiddleware[Any]]:
    """Remove the cache ``name`` from ``module``, or every cache when ``name`` is None; returns what was removed.

    When the last cache goes, the runtime is unregistered and the module is restored exactly.
    """
    runtime = get_cache_runtime(module)
    if runtime is None:
        return []
    names = [mw.name for mw in runtime.middlewares] if name is None else [name]
    removed = [mw for mw in (runtime.remove(n) for n in names) if mw is not None]
    if not runtime.middlewares:
        reg = HookRegistry.get(module)
        if reg is not None:
            reg.remove(RUNTIME_NAME)
    return removed


def refresh(module: nn.Module, num_inference_steps: int | None = None) -> None:
    """Tell the caches of ``module`` that a new generation starts, with ``num_inference_steps`` steps per branch.

    Not required (new generations are detected), but it makes the step count known (TeaCache's forced last step,
    MagCache's schedule) and is the explicit reset a serving engine calls before each request.
    """
    runtime = get_cache_runtime(module)
    if runtime is None:
        raise ValueError(f"module: no cache is applied to {type(module).__name__}; apply one first")
    runtime.refresh(num_inference_steps)


def cache_stats(module: nn.Module) -> dict[str, list[GenerationStats]]:
    """Per cache name, the decision statistics of recent generations (see :class:`GenerationStats`)."""
    runtime = get_cache_runtime(module)
    if runtime is None:
        return {}
    return {mw.name: mw.stats() for mw in runtime.middlewares}


def set_reducer(module: nn.Module, reducer: Reducer | None) -> None:
    """Make the caches of ``module`` reduce their decision scalars with ``reducer`` (put on every context as
    ``ctx.reducer``), e.g. ``ProcessGroupReducer(sp_group)`` under a sequence parallelism ditcache does not detect
    (anything but diffusers' ``enable_parallelism``), so every rank decides alike. Call it on every rank after
    applying the caches. ``None`` restores the default: detected from diffusers' context-parallel config, else
    ``LOCAL``."""
    runtime = get_cache_runtime(module)
    if runtime is None:
        raise ValueError(f"module: no cache is applied to {type(module).__name__}; apply one first")
    if reducer is not None and not isinstance(reducer, Reducer):
        raise TypeError(f"reducer: expected a Reducer (sum(tensor) and is_local) or None, got {type(reducer).__name__}")
    runtime.reducer = reducer
