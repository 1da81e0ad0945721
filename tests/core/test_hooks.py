"""Unit tests of the generic module-hook registry (ditcache.core.hooks)."""

from __future__ import annotations

import copy
import functools
import inspect
import os
from collections.abc import Callable
from typing import Any

import pytest
import torch
from diffusers.hooks.hooks import HookRegistry as DiffusersRegistry
from diffusers.hooks.hooks import ModelHook
from torch import nn

from ditcache.core.hooks import (
    CallNext,
    ForwardCall,
    ForwardHook,
    HookConflictError,
    HookHandle,
    HookRegistry,
)

REGISTRY_ATTR = "_ditcache_hooks"


def hooked(root: nn.Module) -> list[str]:
    """Qualified names of the modules under ``root`` that have middlewares."""
    return [q for q, m in root.named_modules() if HookRegistry.get(m) is not None]


# ---------------------------------------------------------------------------------------------- helpers
class Affine(nn.Module):
    """y = (x * weight + shift) * scale, with a parameter, a buffer and a keyword argument."""

    shift: torch.Tensor

    def __init__(self, weight: float = 2.0, shift: float = 0.5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.tensor(weight))
        self.register_buffer("shift", torch.tensor(shift))

    def forward(self, x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        return (x * self.weight + self.shift) * scale


class Zero(nn.Module):
    """Returns zeros shaped like its input (the 'zero module' of the diffusers removal scenario)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


def plain(module: nn.Module, *args: Any, **kwargs: Any) -> torch.Tensor:
    """The module's class forward, bypassing every instance-level hook."""
    out: torch.Tensor = type(module).forward(module, *args, **kwargs)
    return out


def add(k: float) -> Callable[[ForwardCall, CallNext], Any]:
    def middleware(call: ForwardCall, call_next: CallNext) -> Any:
        return call_next(call) + k

    return middleware


def mul(k: float) -> Callable[[ForwardCall, CallNext], Any]:
    def middleware(call: ForwardCall, call_next: CallNext) -> Any:
        return call_next(call) * k

    return middleware


def logger(log: list[str], tag: str) -> Callable[[ForwardCall, CallNext], Any]:
    def middleware(call: ForwardCall, call_next: CallNext) -> Any:
        log.append(f"{tag}:before")
        out = call_next(call)
        log.append(f"{tag}:after")
        return out

    return middleware


class Recorder:
    """A stateful middleware object: records the module of every call it sees."""

    def __init__(self) -> None:
        self.modules: list[nn.Module] = []

    def __call__(self, call: ForwardCall, call_next: CallNext) -> Any:
        self.modules.append(call.module)
        return call_next(call)


class AddHook(ForwardHook):
    """A ForwardHook adding ``config`` to the output."""

    def __init__(self, k: float | None) -> None:
        self.config = k

    def post_forward(self, module: nn.Module, output: Any) -> Any:
        return output + self.config


class OtherAddHook(AddHook):
    """Same config, different class."""


def snapshot(module: nn.Module) -> dict[str, Any]:
    return dict(module.__dict__)


def assert_untouched(module: nn.Module, before: dict[str, Any], state_keys: list[str]) -> None:
    """The module is indistinguishable from never hooked."""
    assert "forward" not in module.__dict__ or module.__dict__["forward"] is before.get("forward")
    assert not [k for k in module.__dict__ if k.startswith("_ditcache")]
    assert list(module.__dict__) == list(before)
    assert all(module.__dict__[k] is v for k, v in before.items())
    assert list(module.state_dict()) == state_keys
    assert HookRegistry.get(module) is None


X = torch.tensor([[1.0, -2.0, 3.0]])


# ---------------------------------------------------------------------------------------------- order and actions
def test_first_registered_is_outermost() -> None:
    m = Affine()
    log: list[str] = []
    reg = HookRegistry.get_or_create(m)
    reg.register("a", logger(log, "a"))
    reg.register("b", logger(log, "b"))
    m(X)
    assert log == ["a:before", "b:before", "b:after", "a:after"]
    assert reg.names() == ["a", "b"]


def test_composition_order_of_results() -> None:
    m = Affine()
    reg = HookRegistry.get_or_create(m)
    reg.register("times10", mul(10.0))
    reg.register("plus1", add(1.0))
    # outermost (times10) sees the result of the inner one last: (f(x) + 1) * 10
    torch.testing.assert_close(m(X), (plain(m, X) + 1.0) * 10.0)


def test_index_inserts_at_position() -> None:
    m = Affine()
    log: list[str] = []
    reg = HookRegistry.get_or_create(m)
    reg.register("a", logger(log, "a"))
    reg.register("b", logger(log, "b"))
    reg.register("first", logger(log, "first"), index=0)
    reg.register("mid", logger(log, "mid"), index=2)
    reg.register("last", logger(log, "last"), index=4)
    assert reg.names() == ["first", "a", "mid", "b", "last"]
    m(X)
    assert [e.split(":")[0] for e in log if e.endswith(":before")] == reg.names()
    assert [e.split(":")[0] for e in log if e.endswith(":after")] == reg.names()[::-1]


def test_replace_args_and_kwargs() -> None:
    m = Affine()
    reg = HookRegistry.get_or_create(m)

    def shift_input(call: ForwardCall, call_next: CallNext) -> Any:
        return call_next(call.replace(args=(call.args[0] + 1.0,)))

    def set_scale(call: ForwardCall, call_next: CallNext) -> Any:
        return call_next(call.replace(kwargs={**call.kwargs, "scale": 3.0}))

    reg.register("shift", shift_input)
    reg.register("scale", set_scale)
    torch.testing.assert_close(m(X), plain(m, X + 1.0, scale=3.0))
    torch.testing.assert_close(m(X, scale=5.0), plain(m, X + 1.0, scale=3.0))


def test_forward_call_replace_keeps_unset_fields() -> None:
    m = Affine()
    call = ForwardCall(m, (X,), {"scale": 2.0})
    new = call.replace(kwargs={"scale": 4.0})
    assert new is not call and new.module is m and new.args is call.args and new.kwargs == {"scale": 4.0}
    new2 = call.replace(args=(X * 2,))
    assert new2.kwargs is call.kwargs and torch.equal(new2.args[0], X * 2)
    assert call.kwargs == {"scale": 2.0}
    assert "Affine" in repr(call) and "scale" in repr(call)


class Counting(Affine):
    """Counts the runs of its own forward."""

    def __init__(self) -> None:
        super().__init__()
        self.runs = 0

    def forward(self, x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        self.runs += 1
        return super().forward(x, scale)


def test_short_circuit_skips_inner_and_forward() -> None:
    m = Counting()
    inner = Recorder()
    reg = HookRegistry.get_or_create(m)
    const = torch.full((1, 3), 7.0)
    reg.register("cache", lambda call, call_next: const)
    reg.register("inner", inner)
    assert m(X) is const
    assert inner.modules == [] and m.runs == 0
    reg.remove("cache")
    m(X)
    assert inner.modules == [m] and m.runs == 1


def test_short_circuit_only_on_condition() -> None:
    m = Affine()
    reg = HookRegistry.get_or_create(m)
    cache: dict[str, torch.Tensor] = {}

    def memo(call: ForwardCall, call_next: CallNext) -> Any:
        if "out" not in cache:
            cache["out"] = call_next(call)
        return cache["out"]

    inner = Recorder()
    reg.register("memo", memo)
    reg.register("inner", inner)
    first = m(X)
    second = m(X * 100)
    assert second is first and len(inner.modules) == 1


def test_forward_hook_pre_and_post() -> None:
    class PrePost(ForwardHook):
        def pre_forward(
            self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
        ) -> tuple[tuple[Any, ...], dict[str, Any]]:
            return (args[0] * 2,), {"scale": 0.5}

        def post_forward(self, module: nn.Module, output: Any) -> Any:
            return output - 1.0

    m = Affine()
    HookRegistry.get_or_create(m).register("pp", PrePost())
    torch.testing.assert_close(m(X), plain(m, X * 2, scale=0.5) - 1.0)


def test_forward_hook_unchanged_inputs_pass_the_same_call() -> None:
    seen: list[ForwardCall] = []

    class Outer:
        def __call__(self, call: ForwardCall, call_next: CallNext) -> Any:
            seen.append(call)
            return call_next(call)

    def inner(call: ForwardCall, call_next: CallNext) -> Any:
        seen.append(call)
        return call_next(call)

    m = Affine()
    reg = HookRegistry.get_or_create(m)
    reg.register("outer", Outer())
    reg.register("noop", ForwardHook())
    reg.register("inner", inner)
    torch.testing.assert_close(m(X), plain(m, X))
    assert len(seen) == 2 and seen[0] is seen[1]


def test_forward_hook_called_directly_matches_registered() -> None:
    hook = AddHook(3.0)
    m = Affine()
    direct = hook(ForwardCall(m, (X,), {}), lambda call: plain(call.module, *call.args, **call.kwargs))
    HookRegistry.get_or_create(m).register("h", hook)
    torch.testing.assert_close(m(X), direct)
    torch.testing.assert_close(direct, plain(m, X) + 3.0)


def test_exception_in_middleware_propagates_and_leaves_stack_intact() -> None:
    m = Affine()
    reg = HookRegistry.get_or_create(m)

    def boom(call: ForwardCall, call_next: CallNext) -> Any:
        raise RuntimeError("boom")

    reg.register("boom", boom)
    with pytest.raises(RuntimeError, match="boom"):
        m(X)
    assert reg.names() == ["boom"]
    reg.remove("boom")
    torch.testing.assert_close(m(X), plain(m, X))


# ---------------------------------------------------------------------------------------------- exact restore
@pytest.mark.parametrize("how", ["remove_in_order", "remove_reversed", "remove_middle_first", "clear", "handles"])
def test_restore_is_exact(how: str) -> None:
    m = nn.Sequential(nn.Linear(3, 4), nn.GELU(), nn.Linear(4, 2))
    before = snapshot(m)
    state_keys = list(m.state_dict())
    out_before = m(X)
    reg = HookRegistry.get_or_create(m)
    assert m.__dict__ == before  # get_or_create alone touches nothing
    handles = [reg.register(n, add(i + 1.0)) for i, n in enumerate(["a", "b", "c"])]
    assert "forward" in m.__dict__ and REGISTRY_ATTR in m.__dict__
    assert not torch.equal(m(X), out_before)
    if how == "remove_in_order":
        for n in ["a", "b", "c"]:
            reg.remove(n)
    elif how == "remove_reversed":
        for n in ["c", "b", "a"]:
            reg.remove(n)
    elif how == "remove_middle_first":
        for n in ["b", "a", "c"]:
            reg.remove(n)
    elif how == "clear":
        reg.clear()
    else:
        for h in handles:
            h.remove()
    assert_untouched(m, before, state_keys)
    torch.testing.assert_close(m(X), out_before, rtol=0, atol=0)


def test_restore_keeps_existing_instance_forward() -> None:
    m = Affine()

    def custom(x: torch.Tensor, *, scale: float = 1.0, offset: float = 0.0) -> torch.Tensor:
        return plain(m, x, scale=scale) + offset + 100.0

    m.forward = custom  # type: ignore[method-assign,assignment]
    before = snapshot(m)
    state_keys = list(m.state_dict())
    reg = HookRegistry.get_or_create(m)
    reg.register("plus1", add(1.0))
    torch.testing.assert_close(m(X), custom(X) + 1.0)  # our stack wraps the existing instance forward
    assert inspect.signature(m.forward) == inspect.signature(custom)
    reg.remove("plus1")
    assert m.__dict__["forward"] is custom
    assert_untouched(m, before, state_keys)


def test_instance_forward_set_after_clear_is_respected() -> None:
    """The state to restore is taken when the hook is installed, not when the registry object was made."""
    m = Affine()
    reg = HookRegistry.get_or_create(m)
    reg.register("a", add(1.0))
    reg.clear()

    def custom(x: torch.Tensor) -> torch.Tensor:
        return plain(m, x) * 3.0

    m.forward = custom  # type: ignore[method-assign,assignment]
    reg.register("b", add(1.0))
    torch.testing.assert_close(m(X), plain(m, X) * 3.0 + 1.0)
    reg.remove("b")
    assert m.__dict__["forward"] is custom and REGISTRY_ATTR not in m.__dict__


def test_signature_preserved_while_hooked() -> None:
    m = Affine()
    original = inspect.signature(m.forward)
    reg = HookRegistry.get_or_create(m)
    reg.register("a", add(1.0))
    reg.register("b", AddHook(2.0))
    assert inspect.signature(m.forward) == original
    assert list(inspect.signature(m.forward).parameters) == ["x", "scale"]
    assert inspect.unwrap(m.forward) == Affine.forward.__get__(m)
    assert "a" in repr(m.forward) and "b" in repr(m.forward)


def test_get_returns_none_when_never_hooked() -> None:
    m = Affine()
    assert HookRegistry.get(m) is None
    reg = HookRegistry.get_or_create(m)
    assert HookRegistry.get(m) is None  # created but nothing registered
    reg.register("a", add(1.0))
    assert HookRegistry.get(m) is reg and HookRegistry.get_or_create(m) is reg
    assert len(reg) == 1 and "a" in reg and "zzz" not in reg and list(reg) == [("a", reg.get_middleware("a"))]
    assert "a" in repr(reg)


# ---------------------------------------------------------------------------------------------- idempotence / conflicts
def test_same_name_same_middleware_is_noop() -> None:
    m = Affine()
    reg = HookRegistry.get_or_create(m)
    mw = add(1.0)
    h1 = reg.register("a", mw)
    h2 = reg.register("a", mw)
    assert reg.names() == ["a"]
    torch.testing.assert_close(m(X), plain(m, X) + 1.0)  # applied once
    assert h1.active and not h2.active
    h2.remove()
    assert reg.names() == ["a"]
    torch.testing.assert_close(m(X), plain(m, X) + 1.0)
    h1.remove()
    assert HookRegistry.get(m) is None


def test_equal_forward_hook_is_noop() -> None:
    m = Affine()
    reg = HookRegistry.get_or_create(m)
    first, second = AddHook(2.0), AddHook(2.0)
    assert first.same_settings(second) and first is not second
    assert first != second and hash(first) != hash(second)  # identity: equal settings, distinct objects
    assert len({first, second}) == 2
    reg.register("h", first)
    handle = reg.register("h", second)
    assert reg.get_middleware("h") is first
    assert not handle.active
    handle.remove()
    assert reg.get_middleware("h") is first
    torch.testing.assert_close(m(X), plain(m, X) + 2.0)


@pytest.mark.parametrize(
    "existing, new",
    [
        (AddHook(2.0), AddHook(3.0)),  # different config
        (AddHook(2.0), OtherAddHook(2.0)),  # different class
        (AddHook(None), AddHook(None)),  # no config: equal only to itself
    ],
    ids=["config", "class", "no-config"],
)
def test_different_forward_hook_conflicts(existing: ForwardHook, new: ForwardHook) -> None:
    m = Affine()
    reg = HookRegistry.get_or_create(m)
    reg.register("dup-name", existing)
    with pytest.raises(HookConflictError, match="dup-name"):
        reg.register("dup-name", new)
    assert reg.get_middleware("dup-name") is existing


def test_different_middleware_under_taken_name_raises() -> None:
    m = Affine()
    reg = HookRegistry.get_or_create(m)
    reg.register("taken", add(1.0))
    with pytest.raises(HookConflictError) as info:
        reg.register("taken", add(1.0))
    assert "name" in str(info.value) and "'taken'" in str(info.value)
    assert isinstance(info.value, ValueError)
    assert reg.names() == ["taken"]
    torch.testing.assert_close(m(X), plain(m, X) + 1.0)


def test_remove_absent_name_is_noop() -> None:
    m = Affine()
    before = snapshot(m)
    assert HookRegistry.get_or_create(m).remove("nothing") is None
    assert m.__dict__ == before
    reg = HookRegistry.get_or_create(m)
    mw = add(1.0)
    reg.register("a", mw)
    assert reg.remove("nothing") is None
    assert reg.names() == ["a"]
    assert reg.remove("a") is mw
    assert reg.remove("a") is None


def test_handle_removes_exactly_what_it_added() -> None:
    m = Affine()
    reg = HookRegistry.get_or_create(m)
    ha = reg.register("a", add(1.0))
    hb = reg.register("b", add(10.0))
    assert isinstance(ha, HookHandle) and ha.name == "a"
    ha.remove()
    assert reg.names() == ["b"] and not ha.active and hb.active
    ha.remove()  # second remove: no-op
    assert reg.names() == ["b"]
    replacement = add(100.0)
    reg.register("a", replacement)  # same name, new middleware: the old handle must not remove it
    ha.remove()
    assert reg.get_middleware("a") is replacement
    torch.testing.assert_close(m(X), plain(m, X) + 110.0)
    assert "active=True" in repr(hb)


def test_handle_of_removed_middleware_does_not_remove_the_new_one() -> None:
    m = Affine()
    reg = HookRegistry.get_or_create(m)
    old = reg.register("a", add(1.0))
    reg.remove("a")
    new_mw = add(2.0)
    reg.register("a", new_mw)
    assert not old.active
    old.remove()
    assert reg.get_middleware("a") is new_mw


def test_handle_as_context_manager() -> None:
    m = Affine()
    before = snapshot(m)
    state_keys = list(m.state_dict())
    with HookRegistry.get_or_create(m).register("tmp", add(5.0)) as handle:
        assert handle.active
        torch.testing.assert_close(m(X), plain(m, X) + 5.0)
    assert not handle.active
    assert_untouched(m, before, state_keys)
    with pytest.raises(KeyError), HookRegistry.get_or_create(m).register("tmp", add(5.0)):
        raise KeyError("removed on exceptions too")
    assert_untouched(m, before, state_keys)


def test_two_registry_objects_do_not_fork_the_stack() -> None:
    m = Affine()
    r1 = HookRegistry.get_or_create(m)
    r2 = HookRegistry.get_or_create(m)  # both made before anything was registered
    r1.register("a", add(1.0))
    r2.register("b", add(10.0))
    assert r1.names() == r2.names() == ["a", "b"]
    torch.testing.assert_close(m(X), plain(m, X) + 11.0)
    r2.remove("a")
    torch.testing.assert_close(m(X), plain(m, X) + 10.0)
    assert len(r1) == len(r2) == 1
    r2.clear()
    assert "forward" not in m.__dict__ and REGISTRY_ATTR not in m.__dict__


# ---------------------------------------------------------------------------------------------- middle removal
@pytest.mark.parametrize("kind", ["function", "forward_hook", "mixed"])
def test_remove_middle_keeps_others_in_order(kind: str) -> None:
    m = Zero()
    reg = HookRegistry.get_or_create(m)
    x = torch.zeros(1)
    for name, k in (("A", 1.0), ("B", 10.0), ("C", 100.0)):
        use_hook = kind == "forward_hook" or (kind == "mixed" and name != "C")
        reg.register(name, AddHook(k) if use_hook else add(k))
    assert m(x).item() == 111.0
    reg.remove("B")
    assert reg.names() == ["A", "C"]
    assert m(x).item() == 101.0
    reg.remove("C")
    assert m(x).item() == 1.0
    reg.register("B", add(10.0), index=0)
    assert m(x).item() == 11.0
    reg.remove("A")
    assert m(x).item() == 10.0


class _DAddPrePost(ModelHook):  # type: ignore[misc]
    def __init__(self, k: float) -> None:
        super().__init__()
        self.k = k

    def post_forward(self, module: nn.Module, output: Any) -> Any:
        return output + self.k


class _DAddNewForward(ModelHook):  # type: ignore[misc]
    def __init__(self, k: float) -> None:
        super().__init__()
        self.k = k

    def new_forward(self, module: nn.Module, *args: Any, **kwargs: Any) -> Any:
        return self.fn_ref.original_forward(*args, **kwargs) + self.k


@pytest.mark.parametrize(
    "kinds, after_b, after_c",
    [
        # diffusers 0.42.1, reference/diffusers_hooks.md section 5.5. Correct values: 101, then 1.
        (("prepost", "prepost", "prepost"), 101.0, 1.0),  # pre/post hooks: diffusers is right
        (("new", "new", "new"), 1.0, 11.0),  # C bypassed, then the removed B comes back
        (("prepost", "prepost", "new"), 1.0, None),
    ],
    ids=["prepost", "new_forward", "mixed"],
)
def test_middle_removal_diffusers_vs_ours(kinds: tuple[str, str, str], after_b: float, after_c: float | None) -> None:
    x = torch.zeros(1)
    ks = (1.0, 10.0, 100.0)

    # diffusers' registry: documents its behaviour on this scenario (wrong for new_forward hooks)
    dm = Zero()
    dreg = DiffusersRegistry.check_if_exists_or_initialize(dm)
    for name, kind, k in zip("ABC", kinds, ks):
        dreg.register_hook(_DAddPrePost(k) if kind == "prepost" else _DAddNewForward(k), name)
    assert dm(x).item() == 111.0
    dreg.remove_hook("B")
    assert dm(x).item() == after_b
    if after_c is not None:
        dreg.remove_hook("C")
        assert dm(x).item() == after_c

    # ours, same scenario with the same two interfaces (ForwardHook pre/post, replacing middlewares): always right
    m = Zero()
    reg = HookRegistry.get_or_create(m)
    for name, kind, k in zip("ABC", kinds, ks):
        reg.register(name, AddHook(k) if kind == "prepost" else add(k))
    assert m(x).item() == 111.0
    reg.remove("B")
    assert m(x).item() == 101.0
    reg.remove("C")
    assert m(x).item() == 1.0


# ---------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("bad", [None, 3, "not callable", object()])
def test_register_non_callable_raises(bad: Any) -> None:
    m = Affine()
    before = snapshot(m)
    with pytest.raises(TypeError, match="middleware"):
        HookRegistry.get_or_create(m).register("a", bad)
    assert m.__dict__ == before


@pytest.mark.parametrize("bad", ["", None, 3])
def test_register_bad_name_raises(bad: Any) -> None:
    m = Affine()
    before = snapshot(m)
    with pytest.raises(ValueError, match="name"):
        HookRegistry.get_or_create(m).register(bad, add(1.0))
    assert m.__dict__ == before


@pytest.mark.parametrize("bad", [-1, 2, 10, "0", 1.0])
def test_register_bad_index_raises(bad: Any) -> None:
    m = Affine()
    reg = HookRegistry.get_or_create(m)
    reg.register("a", add(1.0))
    with pytest.raises(ValueError, match=r"index.*\[0, 1\]"):
        reg.register("b", add(1.0), index=bad)
    assert reg.names() == ["a"]


@pytest.mark.parametrize("bad", [object(), torch.zeros(1), lambda x: x, nn.Linear])
def test_get_or_create_non_module_raises(bad: Any) -> None:
    with pytest.raises(TypeError, match="module"):
        HookRegistry.get_or_create(bad)


# ---------------------------------------------------------------------------------------------- copy / dtype
def test_deepcopy_hooks_act_on_the_copy() -> None:
    m = Affine()
    rec = Recorder()
    reg = HookRegistry.get_or_create(m)
    reg.register("rec", rec)
    reg.register("plus", add(1.0))
    c = copy.deepcopy(m)
    creg = HookRegistry.get(c)
    assert creg is not None and creg is not reg and creg.module is c
    crec = creg.get_middleware("rec")
    assert isinstance(crec, Recorder) and crec is not rec

    with torch.no_grad():
        c.weight.fill_(5.0)  # the copy has its own parameters
    torch.testing.assert_close(c(X), plain(c, X) + 1.0)
    assert len(crec.modules) == 1 and crec.modules[0] is c  # the copy's middleware ran, on the copy
    assert rec.modules == []  # not the original's
    m(X)
    assert len(rec.modules) == 1 and rec.modules[0] is m and len(crec.modules) == 1

    creg.clear()
    assert "forward" not in c.__dict__ and REGISTRY_ATTR not in c.__dict__
    torch.testing.assert_close(c(X), plain(c, X))
    assert HookRegistry.get(m) is reg and reg.names() == ["rec", "plus"]
    torch.testing.assert_close(m(X), plain(m, X) + 1.0)


def test_deepcopy_with_existing_instance_forward() -> None:
    m = Affine()
    m.forward = functools.partial(plain, m, scale=2.0)  # type: ignore[method-assign,assignment]
    HookRegistry.get_or_create(m).register("plus", add(1.0))
    c = copy.deepcopy(m)
    with torch.no_grad():
        c.weight.fill_(7.0)
    torch.testing.assert_close(c(X), plain(c, X, scale=2.0) + 1.0)  # the copy's own previous forward
    HookRegistry.get_or_create(c).clear()
    assert isinstance(c.__dict__["forward"], functools.partial) and c.__dict__["forward"].args[0] is c
    torch.testing.assert_close(m(X), plain(m, X, scale=2.0) + 1.0)


def test_to_float64_keeps_hooks() -> None:
    m = Affine()
    rec = Recorder()
    reg = HookRegistry.get_or_create(m)
    reg.register("rec", rec)
    reg.register("plus", add(1.0))
    assert m.to(torch.float64) is m
    x = X.to(torch.float64)
    out = m(x)
    assert out.dtype == torch.float64 and m.weight.dtype == torch.float64
    torch.testing.assert_close(out, plain(m, x) + 1.0)
    assert rec.modules == [m]
    reg.clear()
    assert "forward" not in m.__dict__


# ---------------------------------------------------------------------------------------------- torch.compile
def _compile_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 4))


def test_compile_eager_backend_matches_eager() -> None:
    import torch._dynamo

    torch._dynamo.reset()
    m = _compile_model()
    x = torch.randn(2, 4)
    unhooked = m(x)
    reg = HookRegistry.get_or_create(m)
    reg.register("affine", lambda call, call_next: call_next(call) * 2.0 + 1.0)
    reg.register("hook", AddHook(3.0))
    eager = m(x)
    compiled = torch.compile(m, fullgraph=False, backend="eager")
    out = compiled(x)
    torch.testing.assert_close(out, eager)
    torch.testing.assert_close(out, (unhooked + 3.0) * 2.0 + 1.0)
    reg.clear()  # removing the hooks is seen by the compiled module (guards fail, it recompiles)
    torch.testing.assert_close(compiled(x), unhooked)
    torch._dynamo.reset()


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("DITCACHE_TEST_INDUCTOR"),
    reason="inductor compiles C++ even for a tiny module: 10-30 s on CPU; set DITCACHE_TEST_INDUCTOR=1 to run",
)
def test_compile_inductor_matches_eager() -> None:
    import torch._dynamo

    torch._dynamo.reset()
    m = _compile_model()
    x = torch.randn(2, 4)
    HookRegistry.get_or_create(m).register("affine", lambda call, call_next: call_next(call) * 2.0 + 1.0)
    eager = m(x)
    torch.testing.assert_close(torch.compile(m, fullgraph=False)(x), eager)
    torch._dynamo.reset()


# ---------------------------------------------------------------------------------------------- nesting / torch hooks
def test_nested_submodules_are_independent() -> None:
    torch.manual_seed(0)
    inner = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
    root = nn.Sequential(nn.Linear(3, 3), inner)
    x = torch.randn(2, 3)

    def expected(root_k: float, inner_k: float, leaf_k: float) -> torch.Tensor:
        h = plain(root[0], x)
        h = plain(inner[0], h) + leaf_k
        h = plain(inner[1], h)
        return h + inner_k + root_k

    r_root = HookRegistry.get_or_create(root)
    r_inner = HookRegistry.get_or_create(inner)
    r_leaf = HookRegistry.get_or_create(inner[0])
    r_root.register("same-name", add(1.0))
    r_inner.register("same-name", add(10.0))  # the same name on another module is no conflict
    r_leaf.register("same-name", add(100.0))
    assert len({id(r_root), id(r_inner), id(r_leaf)}) == 3
    torch.testing.assert_close(root(x), expected(1.0, 10.0, 100.0))
    assert hooked(root) == ["", "1", "1.0"]

    r_inner.remove("same-name")
    torch.testing.assert_close(root(x), expected(1.0, 0.0, 100.0))
    assert hooked(root) == ["", "1.0"]
    r_root.clear()
    torch.testing.assert_close(root(x), expected(0.0, 0.0, 100.0))
    assert HookRegistry.get(inner[0]) is r_leaf
    r_leaf.clear()
    assert hooked(root) == []
    torch.testing.assert_close(root(x), expected(0.0, 0.0, 0.0))


def test_torch_module_hooks_still_fire() -> None:
    m = Affine()
    log: list[str] = []

    def pre(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        log.append("torch:pre")
        return (args[0] + 1.0,)

    def post(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
        log.append("torch:post")
        return output * 10.0

    h_pre = m.register_forward_pre_hook(pre)
    h_post = m.register_forward_hook(post)
    reg = HookRegistry.get_or_create(m)
    reg.register("log", logger(log, "ours"))
    reg.register("plus", add(2.0))
    out = m(X)
    assert log == ["torch:pre", "ours:before", "ours:after", "torch:post"]
    torch.testing.assert_close(out, (plain(m, X + 1.0) + 2.0) * 10.0)
    reg.clear()
    torch.testing.assert_close(m(X), plain(m, X + 1.0) * 10.0)
    h_pre.remove()
    h_post.remove()
    torch.testing.assert_close(m(X), plain(m, X))


# ------------------------------------------------------------------------------------- interplay with diffusers
def test_diffusers_hook_on_top_survives_removal_of_ours() -> None:
    m = Zero()
    x = torch.zeros(1)
    reg = HookRegistry.get_or_create(m)
    reg.register("ours-a", add(1.0))
    dreg = DiffusersRegistry.check_if_exists_or_initialize(m)
    dreg.register_hook(_DAddPrePost(10.0), "theirs")  # wraps our forward
    assert m(x).item() == 11.0
    reg.remove("ours-a")
    assert m(x).item() == 10.0  # their hook is still there, ours is a pass-through below it
    HookRegistry.get_or_create(m).register("ours-b", add(100.0))
    assert m(x).item() == 110.0  # ours runs once, in its old place
    dreg.remove_hook("theirs")
    assert m(x).item() == 100.0
    HookRegistry.get_or_create(m).remove("ours-b")
    assert "forward" not in m.__dict__ and REGISTRY_ATTR not in m.__dict__
    assert m(x).item() == 0.0


def test_ours_on_top_of_diffusers_hook_restores_it() -> None:
    m = Zero()
    x = torch.zeros(1)
    dreg = DiffusersRegistry.check_if_exists_or_initialize(m)
    dreg.register_hook(_DAddNewForward(10.0), "theirs")
    theirs = m.__dict__["forward"]
    reg = HookRegistry.get_or_create(m)
    reg.register("ours", add(1.0))
    assert m(x).item() == 11.0
    reg.remove("ours")
    assert m.__dict__["forward"] is theirs and REGISTRY_ATTR not in m.__dict__
    assert m(x).item() == 10.0
