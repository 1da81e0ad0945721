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
import contextvars
import itertools
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch
from torch import nn

from ditcache.core._compile import eager, unwrap_compiled
from ditcache.core.branch import AutoIdentities, current_branch
from ditcache.core.cache import CacheMiddleware, FinalOutput, GenerationStats, compose, insertion_index
from ditcache.core.clock import StepClock, check_max_branches
from ditcache.core.context import BlockOutput, CacheContext
from ditcache.core.distributed import Reducer
from ditcache.core.extractor import Extractor, get_extractor, resolve_extractor
from ditcache.core.hooks import CallNext, ForwardCall, HookRegistry
from ditcache.core.log import get_logger
from ditcache.core.parallel import AgreedBranches, ContextParallel, detect_reducer
from ditcache.core.validators import int_ge

__all__ = [
    "RUNTIME_NAME",
    "CacheRuntime",
    "apply_cache",
    "cache_stats",
    "get_cache_runtime",
    "refresh",
    "remove_cache",
    "resolve_module",
    "set_reducer",
]

RUNTIME_NAME = "ditcache.cache"
"""The name under which the runtime is registered in a module's hook registry."""
_STEP_COUNT = int_ge(1)
_log = get_logger("ditcache.core.runtime")
_ids = itertools.count()

GenerationSource = Callable[[], "tuple[object, int | None] | None"]
"""Says where the caller's generations start: returns ``(token, num_steps)`` for the generation in progress, or None
when it does not know. A token that is not the previous one starts a new generation of ``num_steps`` calls per
branch (:func:`ditcache.core.pipeline.attach_pipeline` reads a diffusers pipeline's scheduler this way)."""

# The module each applied cache serves: a cache object keeps per-branch state for one module only.
_OWNERS: weakref.WeakKeyDictionary[CacheMiddleware[Any], weakref.ref[nn.Module]] = weakref.WeakKeyDictionary()


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
    """Shadows a diffusers model's ``cache_context`` so the pipeline's branch names reach the runtime.

    The name is kept in a context variable of the runtime, so it belongs to the thread or asyncio task that opened
    the scope: another thread's or task's calls never see it.
    """

    def __init__(self, runtime: CacheRuntime) -> None:
        self.runtime = runtime

    @contextlib.contextmanager
    def __call__(self, name: str, **kwargs: Any) -> Iterator[None]:
        rt = self.runtime
        original = type(rt.module).cache_context  # type: ignore[attr-defined]
        token = rt._external.set((name, kwargs))
        try:
            with original(rt.module, name, **kwargs):
                yield
        finally:
            rt._external.reset(token)


class CacheRuntime:
    """The registry middleware that runs a module's cache stack. One per module; see the module docstring."""

    def __init__(self, module: nn.Module, extractor: Extractor, *, max_branches: int = 16) -> None:
        self.module = module
        self.extractor = extractor
        self._middlewares: list[CacheMiddleware[Any]] = []
        # announces generation boundaries to the caches
        self.clock = StepClock(self._middlewares, max_branches=max_branches)
        self.identities = AutoIdentities()
        self._external: contextvars.ContextVar[tuple[str, dict[str, Any]] | None] = contextvars.ContextVar(
            f"ditcache_cache_context_{next(_ids)}", default=None
        )
        self.generation_source: GenerationSource | None = None
        self._source_token: object = None
        self.reducer: Reducer | None = None  # given with set_reducer; None: detected per call
        self._branches = AgreedBranches()
        self._parallel: tuple[Any, ContextParallel | None, Reducer] | None = None  # (config, plan, reducer)
        self._chain: Callable[[CacheContext], BlockOutput | FinalOutput] = compose(self._middlewares)
        self._busy = threading.RLock()  # one call at a time: the caches' per-branch state is not thread-safe

    @property
    def external_context(self) -> tuple[str, dict[str, Any]] | None:
        """The ``cache_context`` scope (name, keyword arguments) open in the current thread or task, or None."""
        return self._external.get()

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
        owner = _OWNERS.get(middleware)
        other = owner() if owner is not None else None
        if other is not None and other is not self.module and middleware in _applied(other):
            raise ValueError(
                f"middleware: this {middleware.name!r} cache is already applied to another module "
                f"({type(other).__name__}); a cache object keeps one module's state, so the two would share it. "
                f"Create a new cache for each module (e.g. call apply_{middleware.name}_hook once per module), or "
                "remove it from the other module first"
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
        middleware.reset()  # whatever it kept from before; the caches already here are restarted by _rebuild
        self._middlewares.insert(insertion_index(self._middlewares, middleware), middleware)
        _OWNERS[middleware] = weakref.ref(self.module)
        self._rebuild()
        return True

    def remove(self, name: str) -> CacheMiddleware[Any] | None:
        """Remove the middleware named ``name`` (None if absent)."""
        mw = self.get(name)
        if mw is not None:
            self._middlewares.remove(mw)
            _OWNERS.pop(mw, None)
            mw.reset()
            self._rebuild()
        return mw

    def __getstate__(self) -> dict[str, Any]:
        # The chain's closures would survive copy.deepcopy and keep calling the original's middlewares; a context
        # variable cannot be copied (the copy gets its own); the identities hold weak references.
        state = self.__dict__.copy()
        del state["_chain"], state["_external"], state["identities"], state["_busy"]
        state["_parallel"] = None  # holds a process group; detected again on the copy
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._external = contextvars.ContextVar(f"ditcache_cache_context_{next(_ids)}", default=None)
        self.identities = AutoIdentities()
        self._chain = compose(self._middlewares)
        self._busy = threading.RLock()

    def _rebuild(self) -> None:
        self._chain = compose(self._middlewares)
        self._sync_bridge()
        # A change of the stack restarts every remaining cache from a clean state at the next call, so each behaves
        # exactly as if it had been applied alone from then on.
        self._restart(self.clock.pending_steps)

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
        """Start a new generation at the next call: reset every cache's state. ``num_inference_steps`` is the
        step count of that generation (each branch's next one); None leaves it to the default count."""
        if num_inference_steps is not None and (
            not isinstance(num_inference_steps, int) or isinstance(num_inference_steps, bool) or num_inference_steps < 1
        ):
            raise ValueError(f"num_inference_steps: expected a positive int or None, got {num_inference_steps!r}")
        self._restart(num_inference_steps)

    def _restart(self, num_steps: int | None, *, driven: bool = False) -> None:
        """The one way a generation restarts: every open generation ends now and each branch starts a new one, of
        ``num_steps`` calls, at its next call (:meth:`StepClock.refresh <ditcache.core.clock.StepClock.refresh>`,
        ``driven`` as there). The clock announces the ends to the caches, which drop their state."""
        self.clock.refresh(num_steps, driven=driven)

    # ------------------------------------------------------------------ the call
    # Never traced by torch.compile: the decisions read and write Python state every step (tracing them would
    # recompile per step). Compile the blocks instead (``block.compile()`` or diffusers' ``compile_repeated_blocks``):
    # compiled blocks run compiled inside this eager region; ``torch.compile(model)`` stays correct.
    @eager
    def __call__(self, call: ForwardCall, call_next: CallNext) -> Any:
        if not self._middlewares:
            return call_next(call)
        if not self._busy.acquire(blocking=False):
            raise RuntimeError(
                f"cache: this {type(self.module).__name__} is running a cached forward in another thread; a cached "
                "model keeps per-generation state and serves one thread at a time. Use one model per thread, or "
                "serialize the calls (e.g. with a lock around the pipeline call)"
            )
        try:
            return self._call(call)
        finally:
            self._busy.release()

    def _call(self, call: ForwardCall) -> Any:
        module = call.module
        self._poll_source()
        cp, reducer = self._context_parallel(module)
        try:
            with self.extractor.scope(module, call.kwargs) as kwargs:
                args = call.args
                if cp is not None:
                    reg = HookRegistry.get(module)
                    args, kwargs = cp.split_inputs(module, args, kwargs, None if reg is None else reg.hooked_forward)
                ctx = self.extractor.extract(module, args, kwargs)
                if not isinstance(ctx, CacheContext):
                    raise TypeError(
                        f"extractor {self.extractor.name!r}: extract() must return a CacheContext, "
                        f"got {type(ctx).__name__}"
                    )
                ctx.validate()
                ctx = self._stamp(ctx, _sample(call), reducer)
                if cp is not None:
                    ctx = cp.split_streams(ctx)
                with contextlib.nullcontext() if cp is None else cp.bypass():
                    result = self._chain(ctx)
                self.clock.call_done(ctx.branch)
                if isinstance(result, FinalOutput):
                    return result.value
                hidden, encoder = result
                return ctx.postprocess(hidden, encoder)
        except BaseException:
            # A failed call ends the run it belonged to: the caller's next call starts fresh generations, whatever
            # timestep it starts at (an img2img start, a retry at a lower noise level).
            self.clock.abort()
            raise

    def _poll_source(self) -> None:
        source = self.generation_source
        if source is None:
            return
        current = source()
        if current is None:
            return
        token, num_steps = current
        if token != self._source_token:
            self._source_token = token
            self._restart(num_steps, driven=True)

    def _stamp(self, ctx: CacheContext, sample: torch.Tensor | None, reducer: Reducer) -> CacheContext:
        branch = current_branch()
        step_hint: int | None = None
        given_steps: int | None = None
        external = self._external.get()
        if branch is None and external is not None:
            name, kw = external
            branch = name
            step_hint = kw.get("step_index")
            if kw.get("num_inference_steps") is not None:
                # this run's count: it bounds this generation
                _STEP_COUNT.check(kw["num_inference_steps"], "cache_context(num_inference_steps=...)")
                given_steps = int(kw["num_inference_steps"])
        if branch is None:
            branch = self._branches.agree(self.identities.branch(ctx.condition), reducer, ctx.hidden_states.device)
        h = ctx.hidden_states
        signature = (tuple(h.shape), h.dtype, h.device)
        # The clock reads the timestep (a host sync) only when its timestep rules decide: not when a step hint or the
        # caller's generation source (a driven generation) says where the loop is.
        timestep = ctx.timestep
        tick = self.clock.advance(
            branch, lambda: _scalar(timestep), signature, step_hint, num_steps=given_steps, sample=sample
        )
        if tick.started and reducer.is_local:
            # An automatic branch whose prompt tensor is gone can never be called again: end its generation now,
            # so that its tensors go with it instead of waiting for the branch bound to evict it. Not under
            # sequence parallelism: tensor lifetimes are rank-local, and ranks must end generations alike.
            gone = [b for b in self.clock.open_generations() if b != branch and not self.identities.alive(b)]
            if gone:
                self.clock.forget(gone)
        return ctx.evolve(
            branch=branch,
            role=tick.role,
            step=tick.step,
            num_steps=tick.num_steps,
            generation=tick.generation,
            reducer=reducer,
        )

    # ------------------------------------------------------------------ sequence parallelism
    def _context_parallel(self, module: nn.Module) -> tuple[ContextParallel | None, Reducer]:
        """What a call of ``module`` needs: diffusers' context-parallel hooks (None when it is not enabled), re-read
        when its parallel config changes, and the reducer (:meth:`effective_reducer`)."""
        config = getattr(module, "_parallel_config", None)
        cached = self._parallel
        if cached is None or cached[0] is not config:
            cp_enabled = config is not None and getattr(config, "context_parallel_config", None) is not None
            plan = ContextParallel(module, self.extractor.block_modules(module)) if cp_enabled else None
            cached = self._parallel = (config, plan, detect_reducer(module))
        return cached[1], cached[2] if self.reducer is None else self.reducer

    def effective_reducer(self) -> Reducer:
        """The reducer the contexts get: the one given with :func:`set_reducer`, else the context-parallel group
        of the module (:func:`ditcache.core.parallel.detect_reducer`), else ``LOCAL``."""
        return self._context_parallel(self.module)[1]

    def __repr__(self) -> str:
        return f"CacheRuntime({self.extractor.name}, {[mw.name for mw in self._middlewares]})"


def _sample(call: ForwardCall) -> torch.Tensor | None:
    """The latent the caller passed (``hidden_states``, or the first positional argument), if it is a tensor."""
    sample = call.kwargs.get("hidden_states", call.args[0] if call.args else None)
    return sample if isinstance(sample, torch.Tensor) else None


# ---------------------------------------------------------------------- public functions
def _applied(module: nn.Module) -> list[CacheMiddleware[Any]]:
    runtime = get_cache_runtime(module)
    return [] if runtime is None else runtime.middlewares


def resolve_module(module: object, extractor: Extractor | str | None = None) -> nn.Module:
    """Check the ``module`` argument of an apply function and return the module the caches go on.

    Raises TypeError for anything but an ``nn.Module``, :class:`~ditcache.core.extractor.ExtractorNotFoundError`
    when no extractor serves it (before any cache-specific lookup, so that is the error a user sees), and ValueError
    when diffusers' own cache (``enable_cache``) is on. A ``torch.compile``'d module resolves to its original."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"module: expected a torch.nn.Module, got {type(module).__name__}")
    module = unwrap_compiled(module)
    if getattr(module, "_cache_config", None) is not None and hasattr(module, "disable_cache"):
        raise ValueError(
            f"module: diffusers' own cache is enabled on this {type(module).__name__} "
            f"({type(module._cache_config).__name__}, from enable_cache); its hooks and ditcache's would both decide "
            "per step. Call module.disable_cache() first, or use only one of them"
        )
    if extractor is None and get_cache_runtime(module) is None:
        get_extractor(module)
    return module


def get_cache_runtime(module: nn.Module) -> CacheRuntime | None:
    """The cache runtime installed on ``module`` (or on the original of a compiled module), or None."""
    if isinstance(module, nn.Module):
        module = unwrap_compiled(module)
    reg = HookRegistry.get(module)
    if reg is None:
        return None
    rt = reg.get_middleware(RUNTIME_NAME)
    return rt if isinstance(rt, CacheRuntime) else None


M = TypeVar("M", bound=CacheMiddleware[Any])


def apply_cache(
    module: nn.Module,
    middleware: M,
    *,
    extractor: Extractor | str | None = None,
    num_inference_steps: int | None = None,
    max_branches: int | None = None,
) -> M:
    """Attach a cache middleware to ``module`` and return the middleware that is in effect.

    The module's extractor is looked up from its class unless ``extractor`` is given. Applying an equal cache
    twice is a no-op (the one already applied is returned); a different config under the same cache name is an
    error. Nothing is changed when an error is raised. ``num_inference_steps`` (a config's step count) becomes the
    runtime's default step count unless one is already known. ``max_branches`` (default 16) bounds the CFG branches
    the module tracks: beyond it the least recently used branch's generation ends and its tensors are dropped.
    """
    if max_branches is not None:
        check_max_branches(max_branches)
    applied = _apply(module, middleware, extractor)
    if max_branches is not None:
        runtime = get_cache_runtime(module)
        assert runtime is not None
        runtime.clock.max_branches = max_branches
    if num_inference_steps is not None and applied is middleware:
        runtime = get_cache_runtime(module)
        assert runtime is not None
        if runtime.clock.num_steps is None:
            runtime.clock.num_steps = num_inference_steps
    return applied


def _apply(module: nn.Module, middleware: M, extractor: Extractor | str | None) -> M:
    module = resolve_module(module, extractor)
    if not isinstance(middleware, CacheMiddleware):
        raise TypeError(f"middleware: expected a CacheMiddleware, got {type(middleware).__name__}")
    runtime = get_cache_runtime(module)
    if runtime is None:
        runtime = CacheRuntime(module, resolve_extractor(module, extractor))
        runtime.add(middleware)  # raises before anything is installed
        HookRegistry.get_or_create(module).register(RUNTIME_NAME, runtime)
        runtime._sync_bridge()
        return middleware
    if extractor is not None and resolve_extractor(module, extractor) is not runtime.extractor:
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
    module = runtime.module
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
