"""Property tests of the hook registry: random module trees and random register / remove / clear sequences.

A shadow model keeps, per module, the list of ``(name, spec, middleware)`` the registry should hold (outermost
first). After every operation the real model's output must equal a pure-Python evaluation of the tree in which
every module's output is the composition of its shadow stack around its own computation.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from ditcache.core.hooks import CallNext, ForwardCall, ForwardHook, HookConflictError, HookHandle, HookRegistry

pytestmark = pytest.mark.filterwarnings("ignore")

Spec = tuple[str, float]
FUNCTION_KINDS = ("add", "scale", "replace_input", "short_circuit")
HOOK_KINDS = ("pre_add", "post_scale")
NAMES = ("a", "b", "c")
CONSTANTS = (-1.0, 0.5, 2.0, 3.0)


# ---------------------------------------------------------------------------------------------- module trees
class Chain(nn.Module):
    """Runs the modules of an nn.ModuleList in turn."""

    def __init__(self, children: list[nn.Module]) -> None:
        super().__init__()
        self.items = nn.ModuleList(children)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for m in self.items:
            x = m(x)
        return x


class Residual(nn.Module):
    """x + child(x)."""

    def __init__(self, child: nn.Module) -> None:
        super().__init__()
        self.child = child

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = x + self.child(x)
        return out


trees = st.recursive(
    st.just(("linear",)),
    lambda inner: st.one_of(
        st.tuples(st.just("seq"), st.lists(inner, min_size=1, max_size=3)),
        st.tuples(st.just("chain"), st.lists(inner, min_size=1, max_size=3)),
        st.tuples(st.just("res"), inner),
    ),
    max_leaves=5,
)


def build(tree: Any) -> nn.Module:
    kind = tree[0]
    if kind == "linear":
        return nn.Linear(4, 4)
    if kind == "seq":
        return nn.Sequential(*(build(t) for t in tree[1]))
    if kind == "chain":
        return Chain([build(t) for t in tree[1]])
    return Residual(build(tree[1]))


def make_model(tree: Any) -> nn.Module:
    torch.manual_seed(0)
    return build(tree)


# ---------------------------------------------------------------------------------------------- middleware family
class PreAdd(ForwardHook):
    """Adds a constant to the input (pre_forward)."""

    def __init__(self, c: float) -> None:
        self.config = ("pre_add", c)

    def pre_forward(
        self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (args[0] + self.config[1],), kwargs


class PostScale(ForwardHook):
    """Scales the output by a constant (post_forward)."""

    def __init__(self, c: float) -> None:
        self.config = ("post_scale", c)

    def post_forward(self, module: nn.Module, output: Any) -> Any:
        return output * self.config[1]


def make_function(spec: Spec) -> Callable[[ForwardCall, CallNext], Any]:
    kind, c = spec
    if kind == "add":

        def mw(call: ForwardCall, call_next: CallNext) -> Any:
            return call_next(call) + c

    elif kind == "scale":

        def mw(call: ForwardCall, call_next: CallNext) -> Any:
            return call_next(call) * c

    elif kind == "replace_input":

        def mw(call: ForwardCall, call_next: CallNext) -> Any:
            return call_next(call.replace(args=(torch.full_like(call.args[0], c),)))

    else:

        def mw(call: ForwardCall, call_next: CallNext) -> Any:
            return torch.full_like(call.args[0], c)

    return mw


class Family:
    """Hands out middlewares for specs: one function object per spec, a fresh (equal) ForwardHook each time."""

    def __init__(self) -> None:
        self._functions: dict[Spec, Callable[[ForwardCall, CallNext], Any]] = {}

    def get(self, spec: Spec) -> Any:
        kind, c = spec
        if kind == "pre_add":
            return PreAdd(c)
        if kind == "post_scale":
            return PostScale(c)
        if spec not in self._functions:
            self._functions[spec] = make_function(spec)
        return self._functions[spec]


def apply_spec(spec: Spec, x: torch.Tensor, call_next: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """What one middleware of the family does, written directly."""
    kind, c = spec
    if kind == "add":
        return call_next(x) + c
    if kind == "scale":
        return call_next(x) * c
    if kind == "replace_input":
        return call_next(torch.full_like(x, c))
    if kind == "short_circuit":
        return torch.full_like(x, c)
    if kind == "pre_add":
        return call_next(x + c)
    return call_next(x) * c  # post_scale


# ---------------------------------------------------------------------------------------------- shadow model
Entry = tuple[str, Spec, Any]  # (name, spec, middleware object)


class Shadow:
    """Per module (by id): the expected stack, outermost first."""

    def __init__(self) -> None:
        self.stacks: dict[int, list[Entry]] = {}

    def stack(self, module: nn.Module) -> list[Entry]:
        return self.stacks.setdefault(id(module), [])

    def evaluate(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The expected output of ``module`` (hooks of it and of everything below it included)."""
        specs = [spec for _, spec, _ in self.stack(module)]

        def run(i: int, h: torch.Tensor) -> torch.Tensor:
            if i == len(specs):
                return self.body(module, h)
            return apply_spec(specs[i], h, lambda y: run(i + 1, y))

        return run(0, x)

    def body(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if isinstance(module, nn.Linear):
            return F.linear(x, module.weight, module.bias)
        if isinstance(module, nn.Sequential):
            for child in module:
                x = self.evaluate(child, x)
            return x
        if isinstance(module, Chain):
            for child in module.items:
                x = self.evaluate(child, x)
            return x
        assert isinstance(module, Residual)
        return x + self.evaluate(module.child, x)


# ---------------------------------------------------------------------------------------------- operations
specs = st.tuples(st.sampled_from(FUNCTION_KINDS + HOOK_KINDS), st.sampled_from(CONSTANTS))
targets = st.integers(0, 63)  # taken modulo the number of modules
operations = st.one_of(
    st.tuples(st.just("register"), targets, st.sampled_from(NAMES), specs, st.one_of(st.none(), st.integers(0, 4))),
    st.tuples(st.just("remove"), targets, st.sampled_from(NAMES)),
    st.tuples(st.just("clear"), targets),
    st.tuples(st.just("handle_remove"), st.integers(0, 63)),
)


class Harness:
    """Applies operations to the real registry and to the shadow, checking each result."""

    def __init__(self, root: nn.Module) -> None:
        self.root = root
        self.modules = list(root.modules())
        self.shadow = Shadow()
        self.family = Family()
        # (handle, module, name, middleware, still able to remove)
        self.handles: list[tuple[HookHandle, nn.Module, str, Any, bool]] = []

    def register(
        self, module: nn.Module, name: str, spec: Spec, index: int | None, record: bool = True
    ) -> HookHandle | None:
        stack = self.shadow.stack(module)
        mw = self.family.get(spec)
        reg = HookRegistry.get_or_create(module)
        existing = next((e for e in stack if e[0] == name), None)
        if existing is not None and existing[1] != spec:
            with pytest.raises(HookConflictError, match=repr(name)):
                reg.register(name, mw, index=index)
            return None
        pos = None if index is None else min(index, len(stack))
        handle = reg.register(name, mw, index=pos)
        if existing is not None:  # equal middleware: a no-op whose handle removes nothing
            assert not handle.active
        else:
            stack.insert(len(stack) if pos is None else pos, (name, spec, mw))
            assert handle.active
        if record:
            self.handles.append((handle, module, name, mw, existing is None))
        return handle

    def apply(self, op: tuple[Any, ...]) -> None:
        kind = op[0]
        if kind == "handle_remove":
            if not self.handles:
                return
            i = op[1] % len(self.handles)
            handle, module, name, mw, armed = self.handles[i]
            stack = self.shadow.stack(module)
            if armed and any(n == name and m is mw for n, _, m in stack):
                stack[:] = [e for e in stack if e[0] != name]
            handle.remove()
            self.handles[i] = (handle, module, name, mw, False)
            return
        module = self.modules[op[1] % len(self.modules)]
        stack = self.shadow.stack(module)
        if kind == "register":
            self.register(module, op[2], op[3], op[4])
        elif kind == "remove":
            expected = next((m for n, _, m in stack if n == op[2]), None)
            assert HookRegistry.get_or_create(module).remove(op[2]) is expected
            stack[:] = [e for e in stack if e[0] != op[2]]
        else:
            HookRegistry.get_or_create(module).clear()
            stack.clear()

    def check(self, x: torch.Tensor) -> None:
        for module in self.modules:
            reg = HookRegistry.get(module)
            names = [n for n, _, _ in self.shadow.stack(module)]
            assert (reg.names() if reg is not None else []) == names
            assert ("forward" in module.__dict__) == bool(names)
        assert torch.equal(self.root(x), self.shadow.evaluate(self.root, x))


def _input() -> torch.Tensor:
    return torch.linspace(-1.0, 1.0, 8).reshape(2, 4)


# ---------------------------------------------------------------------------------------------- properties
@settings(max_examples=200, deadline=None)
@given(tree=trees, ops=st.lists(operations, max_size=12))
def test_output_matches_shadow_after_every_operation(tree: Any, ops: list[tuple[Any, ...]]) -> None:
    root = make_model(tree)
    h = Harness(root)
    x = _input()
    with torch.no_grad():
        h.check(x)
        for op in ops:
            h.apply(op)
            h.check(x)


@settings(max_examples=200, deadline=None)
@given(
    tree=trees,
    ops=st.lists(operations, max_size=12),
    teardown=st.sampled_from(["remove", "clear", "handles_then_clear"]),
    data=st.data(),
)
def test_removing_everything_restores_exactly(
    tree: Any, ops: list[tuple[Any, ...]], teardown: str, data: st.DataObject
) -> None:
    root = make_model(tree)
    never_hooked = copy.deepcopy(root)
    before = [(m, dict(m.__dict__), list(m.state_dict())) for m in root.modules()]
    h = Harness(root)
    x = _input()
    with torch.no_grad():
        for op in ops:
            h.apply(op)
        if teardown == "remove":
            for module in data.draw(st.permutations(h.modules)):
                for name in data.draw(st.permutations(list(NAMES))):
                    HookRegistry.get_or_create(module).remove(name)
        else:
            if teardown == "handles_then_clear":
                for handle, *_ in data.draw(st.permutations(h.handles)):
                    handle.remove()
            for module in data.draw(st.permutations(h.modules)):
                HookRegistry.get_or_create(module).clear()
        for module, attrs_before, state_keys in before:
            assert "forward" not in module.__dict__
            assert not [k for k in module.__dict__ if k.startswith("_ditcache")]
            assert list(module.__dict__) == list(attrs_before)
            assert all(module.__dict__[k] is v for k, v in attrs_before.items())
            assert list(module.state_dict()) == state_keys
            assert HookRegistry.get(module) is None
        assert torch.equal(root(x), never_hooked(x))
        for module, twin in zip(root.modules(), never_hooked.modules()):
            if not isinstance(module, nn.ModuleList):
                assert torch.equal(module(x), twin(x))


@settings(max_examples=200, deadline=None)
@given(tree=trees, ops=st.lists(operations, max_size=12))
def test_registering_twice_equals_once(tree: Any, ops: list[tuple[Any, ...]]) -> None:
    once = make_model(tree)
    twice = make_model(tree)
    h_once, h_twice = Harness(once), Harness(twice)
    x = _input()
    with torch.no_grad():
        for op in ops:
            h_once.apply(op)
            h_twice.apply(op)
            if op[0] == "register":
                module = h_twice.modules[op[1] % len(h_twice.modules)]
                names_before = HookRegistry.get_or_create(module).names()
                again = h_twice.register(module, op[2], op[3], op[4], record=False)
                assert HookRegistry.get_or_create(module).names() == names_before
                if again is not None:  # no conflict: the repeat was a no-op whose handle removes nothing
                    assert not again.active
                    again.remove()
                    assert HookRegistry.get_or_create(module).names() == names_before
            h_twice.check(x)
            assert torch.equal(twice(x), once(x))
            for a, b in zip(once.modules(), twice.modules()):
                ra, rb = HookRegistry.get(a), HookRegistry.get(b)
                assert (ra.names() if ra else []) == (rb.names() if rb else [])
