"""A generic hook registry that intercepts ``nn.Module.forward`` of any module.

One :class:`HookRegistry` per module, created on first use. It holds an ordered stack of named middlewares. A
middleware has the shape of Starlette's ``dispatch(request, call_next)``::

    def my_middleware(call: ForwardCall, call_next: CallNext) -> Any:
        ...                      # act before: inspect or replace call.args / call.kwargs
        out = call_next(call)    # run the rest of the stack and, at the end, the module's own forward
        ...                      # act after: inspect or replace the result
        return out

It may also return without calling ``call_next`` at all (a cache hit). The first middleware in the stack is the
outermost: it sees the call first and the result last.

Design points that differ from ``diffusers.hooks``:

* the call chain is rebuilt from the ordered list on every change, never patched link by link, so removing any
  element leaves the others working in order;
* after the last middleware is removed the module is exactly as before: its instance ``forward`` attribute (if it
  had none) and the registry attribute are deleted. If something else (a diffusers hook, accelerate) wrapped
  ``forward`` on top of ours in the meantime, ours stays in place as a pass-through instead, so the outer wrapper
  keeps working;
* every other attribute a middleware needs on the module (the cache runtime's diffusers ``cache_context`` bridge) is
  set through :meth:`HookRegistry.patch_attribute`, recorded beside ``forward`` and undone by the same rebuild: when
  its owner is removed, or by :meth:`HookRegistry.clear`, which therefore restores the module exactly;
* ``copy.deepcopy`` of a hooked module gives a copy whose hooks are the copied middlewares, acting on the copy;
* registering a name again with a middleware of the same settings (:meth:`ForwardHook.same_settings`, or an object
  with such a method) is a no-op, a different middleware under a taken name is an error, and removing an absent
  name is a no-op. Middlewares themselves compare and hash by identity.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any, Protocol, runtime_checkable

from torch import nn

__all__ = [
    "CallNext",
    "ForwardCall",
    "ForwardHook",
    "HookConflictError",
    "HookHandle",
    "HookRegistry",
    "Middleware",
    "same_settings",
]

_REGISTRY_ATTR = "_ditcache_hooks"


class ForwardCall:
    """One call of a module's forward: the module, its positional and its keyword arguments.

    Middlewares that change the inputs pass a new call on: ``call_next(call.replace(kwargs={...}))``.
    """

    __slots__ = ("args", "kwargs", "module")

    def __init__(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.module = module
        self.args = args
        self.kwargs = kwargs

    def replace(self, *, args: tuple[Any, ...] | None = None, kwargs: dict[str, Any] | None = None) -> ForwardCall:
        """A copy of this call with new positional and/or keyword arguments."""
        return ForwardCall(self.module, self.args if args is None else args, self.kwargs if kwargs is None else kwargs)

    def __repr__(self) -> str:
        return f"ForwardCall({type(self.module).__name__}, args={len(self.args)}, kwargs={sorted(self.kwargs)})"


CallNext = Callable[[ForwardCall], Any]
"""Runs the rest of the stack (and finally the module's own forward) for a call."""


@runtime_checkable
class Middleware(Protocol):
    """Anything callable as ``middleware(call, call_next) -> result`` (both arguments are passed by position)."""

    def __call__(self, call: ForwardCall, call_next: CallNext, /) -> Any: ...


class ForwardHook:
    """The familiar pre-forward / post-forward hook, as a middleware on the same mechanism.

    Subclass and override :meth:`pre_forward` and/or :meth:`post_forward`; register an instance like any other
    middleware. Hooks compare and hash by identity; :meth:`same_settings` (same class, equal non-None
    :attr:`config`) is what makes re-registering an equivalent hook under the same name a no-op.
    """

    config: Any = None

    def pre_forward(
        self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Called before the rest of the stack; returns the (possibly new) positional and keyword arguments."""
        return args, kwargs

    def post_forward(self, module: nn.Module, output: Any) -> Any:
        """Called with the result of the rest of the stack; returns the (possibly new) result."""
        return output

    def __call__(self, call: ForwardCall, call_next: CallNext) -> Any:
        args, kwargs = self.pre_forward(call.module, call.args, call.kwargs)
        if args is not call.args or kwargs is not call.kwargs:
            call = call.replace(args=args, kwargs=kwargs)
        return self.post_forward(call.module, call_next(call))

    def same_settings(self, other: object) -> bool:
        """Whether ``other`` is this hook, or a hook of the same class with an equal, non-None :attr:`config`."""
        if other is self:
            return True
        return type(other) is type(self) and self.config is not None and bool(self.config == other.config)  # type: ignore[attr-defined]


def same_settings(existing: object, new: object) -> bool:
    """Whether registering ``new`` where ``existing`` is would change nothing: the same object, or ``existing``
    has a ``same_settings`` method that says so (:class:`ForwardHook`, the caches). Plain functions: identity."""
    if existing is new:
        return True
    method = getattr(existing, "same_settings", None)
    return callable(method) and bool(method(new))


class _Patch:
    """One attribute set on the module by :meth:`HookRegistry.patch_attribute`, and what it replaced."""

    __slots__ = ("had", "name", "owner", "previous", "value")

    def __init__(self, name: str, value: Any, owner: str | None, had: bool, previous: Any) -> None:
        self.name = name
        self.value = value
        self.owner = owner
        self.had = had
        self.previous = previous


class HookConflictError(ValueError):
    """A different middleware is already registered under the requested name."""


class HookHandle:
    """Returned by :meth:`HookRegistry.register`; :meth:`remove` removes exactly what that call added.

    A registration that was a no-op (the same middleware was already there) added nothing, so its handle removes
    nothing. A handle is also a context manager that removes on exit.
    """

    __slots__ = ("_added", "_middleware", "_module", "name")

    def __init__(self, module: nn.Module, name: str, middleware: Middleware, added: bool) -> None:
        self._module = module
        self.name = name
        self._middleware = middleware
        self._added = added

    @property
    def active(self) -> bool:
        """Whether what this handle added is still installed."""
        reg = HookRegistry.get(self._module)
        return self._added and reg is not None and reg.get_middleware(self.name) is self._middleware

    def remove(self) -> None:
        """Remove what this handle added; a no-op if it added nothing or was already removed."""
        if self.active:
            HookRegistry.get_or_create(self._module).remove(self.name)
        self._added = False

    def __enter__(self) -> HookHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def __repr__(self) -> str:
        return f"HookHandle(name={self.name!r}, active={self.active})"


class _HookedForward:
    """The instance ``forward`` installed on a hooked module.

    A callable object rather than a closure, so ``copy.deepcopy`` of the module rebinds it to the copy (the memo maps
    the registry's module reference to the new module) and ``inspect.signature`` reports the original's.
    """

    __slots__ = ("__signature__", "__wrapped__", "registry")

    def __init__(self, registry: HookRegistry, original: Callable[..., Any]) -> None:
        self.registry = registry
        self.__wrapped__ = original
        try:
            self.__signature__: inspect.Signature | None = inspect.signature(original)
        except (TypeError, ValueError):  # builtins without a signature
            self.__signature__ = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        reg = self.registry
        return reg._chain(ForwardCall(reg.module, args, kwargs))

    def __repr__(self) -> str:
        return f"<hooked forward of {type(self.registry.module).__name__}: {self.registry.names()}>"


class HookRegistry:
    """The ordered middleware stack of one module. Use :meth:`get_or_create`, not the constructor."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self._entries: list[tuple[str, Middleware]] = []
        # The hooked forward we installed, or None while the module is not hooked by this registry.
        self._installed: _HookedForward | None = None
        # The instance attribute ``forward`` the module had when we installed ours (usually none).
        self._had_instance_forward = False
        self._previous_forward: Any = None
        # Other instance attributes set through patch_attribute, oldest first.
        self._patches: list[_Patch] = []
        self._chain: Callable[[ForwardCall], Any] = self._terminal

    # ------------------------------------------------------------------ lookup
    @classmethod
    def get(cls, module: nn.Module) -> HookRegistry | None:
        """The module's registry, or None if nothing is registered on it."""
        reg = module.__dict__.get(_REGISTRY_ATTR)
        return reg if isinstance(reg, HookRegistry) and reg._entries else None

    @classmethod
    def get_or_create(cls, module: nn.Module) -> HookRegistry:
        """The module's registry, created (without touching the module) if it has none yet."""
        if not isinstance(module, nn.Module):
            raise TypeError(f"module: expected a torch.nn.Module, got {type(module).__name__}")
        reg = module.__dict__.get(_REGISTRY_ATTR)
        return reg if isinstance(reg, HookRegistry) else cls(module)

    def _live(self) -> HookRegistry:
        """The registry attached to the module, or this one when none is.

        Every registry object of a module acts on the attached one, so one kept from before a ``clear()`` or
        obtained twice from :meth:`get_or_create` before the first registration cannot fork the stack.
        """
        reg = self.module.__dict__.get(_REGISTRY_ATTR)
        return reg if isinstance(reg, HookRegistry) else self

    def names(self) -> list[str]:
        """Names of the registered middlewares, outermost first."""
        return [name for name, _ in self._live()._entries]

    def get_middleware(self, name: str) -> Middleware | None:
        """The middleware registered under ``name``, or None."""
        for n, mw in self._live()._entries:
            if n == name:
                return mw
        return None

    @property
    def hooked_forward(self) -> Callable[..., Any] | None:
        """The hooked forward this registry installed on the module, or None while the module is not hooked."""
        return self._live()._installed

    def __contains__(self, name: object) -> bool:
        return any(n == name for n, _ in self._live()._entries)

    def __iter__(self) -> Iterator[tuple[str, Middleware]]:
        return iter(list(self._live()._entries))

    def __len__(self) -> int:
        return len(self._live()._entries)

    # ---------------------------------------------------------------- mutation
    def register(self, name: str, middleware: Middleware, *, index: int | None = None) -> HookHandle:
        """Add ``middleware`` under ``name``.

        ``index`` is its position in the stack (0 = outermost); by default it goes innermost, after those already
        registered. Registering a name that holds an equal middleware is a no-op (the returned handle then
        removes nothing); a different middleware under a taken name raises :class:`HookConflictError`.
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"name: expected a non-empty string, got {name!r}")
        if not callable(middleware):
            raise TypeError(
                f"middleware: expected a callable middleware(call, call_next), got {type(middleware).__name__}"
            )
        live = self._live()
        if live is not self:
            return live.register(name, middleware, index=index)
        existing = self.get_middleware(name)
        if existing is not None:
            if same_settings(existing, middleware):
                return HookHandle(self.module, name, existing, added=False)
            raise HookConflictError(
                f"name: {name!r} is already registered on {type(self.module).__name__} with a different "
                f"middleware ({existing!r}); remove it first or pick another name. Registered: {self.names()}"
            )
        if index is None:
            index = len(self._entries)
        elif not isinstance(index, int) or not 0 <= index <= len(self._entries):
            raise ValueError(f"index: expected an int in [0, {len(self._entries)}], got {index!r}")
        self._entries.insert(index, (name, middleware))
        self._rebuild()
        return HookHandle(self.module, name, middleware, added=True)

    def remove(self, name: str) -> Middleware | None:
        """Remove the middleware under ``name`` and return it; a no-op returning None if absent."""
        live = self._live()
        if live is not self:
            return live.remove(name)
        for i, (n, mw) in enumerate(self._entries):
            if n == name:
                del self._entries[i]
                self._rebuild()
                return mw
        return None

    def clear(self) -> None:
        """Remove every middleware and undo every patched attribute; the module is restored exactly."""
        live = self._live()
        live._entries.clear()
        live._rebuild()

    def patch_attribute(self, name: str, value: Any, *, owner: str | None = None) -> None:
        """Set the instance attribute ``name`` of the module to ``value``, recorded so that it is undone exactly.

        The patch is undone (the attribute the instance had before comes back, or the instance attribute is
        deleted) by the same rebuild that restores ``forward``: when the middleware named ``owner`` is removed
        (``owner=None``: when the last middleware is), by :meth:`clear`, or by :meth:`restore_attribute`. If
        something else replaced the attribute in the meantime, theirs is left in place. The registry must hold a
        middleware (the owner, when given), so that the patch is never left without a record on the module.
        Patching a name again replaces the value and keeps the original to restore.
        """
        live = self._live()
        if live is not self:
            live.patch_attribute(name, value, owner=owner)
            return
        if not isinstance(name, str) or not name.isidentifier() or name in ("forward", _REGISTRY_ATTR):
            raise ValueError(
                f"name: expected an attribute name other than 'forward' and {_REGISTRY_ATTR!r}, got {name!r}"
            )
        if owner is not None and owner not in self:
            raise ValueError(f"owner: {owner!r} is not registered on {type(self.module).__name__}: {self.names()}")
        if not self._entries:
            raise ValueError(f"patch_attribute: nothing is registered on {type(self.module).__name__}; register first")
        md = self.module.__dict__
        for patch in self._patches:
            if patch.name == name and md.get(name) is patch.value:
                patch.value, patch.owner = value, owner
                md[name] = value
                return
        self._patches.append(_Patch(name, value, owner, name in md, md.get(name)))
        md[name] = value

    def patched_attribute(self, name: str) -> Any:
        """The value this registry set for ``name`` and that is still in place, or None."""
        md = self.module.__dict__
        for patch in self._live()._patches:
            if patch.name == name and md.get(name) is patch.value:
                return patch.value
        return None

    def restore_attribute(self, name: str) -> None:
        """Undo the patch of ``name`` now; a no-op if there is none."""
        live = self._live()
        live._undo([p for p in live._patches if p.name == name])

    def _undo(self, patches: list[_Patch]) -> None:
        md = self.module.__dict__
        for patch in reversed(patches):
            self._patches.remove(patch)
            if md.get(patch.name) is not patch.value:
                continue  # replaced by someone else since: theirs stays
            if patch.had:
                md[patch.name] = patch.previous
            else:
                del md[patch.name]

    # ----------------------------------------------------------------- runtime
    def _terminal(self, call: ForwardCall) -> Any:
        """The innermost step: the module's forward as it was before it was hooked."""
        if self._had_instance_forward:
            return self._previous_forward(*call.args, **call.kwargs)
        module = call.module
        return type(module).forward(module, *call.args, **call.kwargs)

    def _original_forward(self) -> Callable[..., Any]:
        if self._had_instance_forward:
            return self._previous_forward  # type: ignore[no-any-return]
        # The class's forward bound to the module; looked up per call so a re-bound class method is honoured.
        return type(self.module).forward.__get__(self.module, type(self.module))  # type: ignore[no-any-return]

    def _build_chain(self) -> Callable[[ForwardCall], Any]:
        chain: Callable[[ForwardCall], Any] = self._terminal
        for _, mw in reversed(self._entries):
            chain = _link(mw, chain)
        return chain

    def _rebuild(self) -> None:
        """Rebuild the call chain from the ordered list, undo the patches whose owner left, (un)install the hooked
        forward."""
        self._chain = self._build_chain()
        names = {n for n, _ in self._entries}
        self._undo([p for p in self._patches if not names or (p.owner is not None and p.owner not in names)])
        module = self.module
        md = module.__dict__
        if self._entries:
            if self._installed is None:
                # Snapshot what ``forward`` is now, at install time, and put ours on top of it.
                self._had_instance_forward = "forward" in md
                self._previous_forward = md.get("forward")
                self._installed = _HookedForward(self, self._original_forward())
                md["forward"] = self._installed
            md[_REGISTRY_ATTR] = self
        elif self._installed is not None and md.get("forward") is self._installed:
            # Ours is the outermost forward: restore exactly what was there.
            if self._had_instance_forward:
                md["forward"] = self._previous_forward
            else:
                del md["forward"]
            self._installed = None
            self._previous_forward = None
            self._had_instance_forward = False
            md.pop(_REGISTRY_ATTR, None)
        elif self._installed is None:
            md.pop(_REGISTRY_ATTR, None)
        # Otherwise something wrapped ``forward`` on top of ours: ours stays as a pass-through (its chain is the
        # bare terminal) and stays attached, so a later registration reuses it rather than stacking a second one.

    def __getstate__(self) -> dict[str, Any]:
        # The chain holds closures, which ``copy.deepcopy`` would share with the original; rebuild it instead.
        state = self.__dict__.copy()
        del state["_chain"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._chain = self._build_chain()

    def __repr__(self) -> str:
        return f"HookRegistry({type(self.module).__name__}, {self.names()})"


def _link(middleware: Middleware, call_next: Callable[[ForwardCall], Any]) -> Callable[[ForwardCall], Any]:
    if isinstance(middleware, ForwardHook) and type(middleware).__call__ is ForwardHook.__call__:
        hook = middleware

        # ForwardHook.__call__ inlined: saves a Python frame and the slot dispatch of calling an instance.
        def hook_step(call: ForwardCall) -> Any:
            module = call.module
            args, kwargs = hook.pre_forward(module, call.args, call.kwargs)
            if args is not call.args or kwargs is not call.kwargs:
                call = ForwardCall(module, args, kwargs)
            return hook.post_forward(module, call_next(call))

        return hook_step

    def step(call: ForwardCall) -> Any:
        return middleware(call, call_next)

    return step
