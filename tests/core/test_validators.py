"""ditcache.core.validators: composable field rules keep the ``Class.field: expected X, got Y`` shape, accept
NumPy scalars through ``plain_scalar``, and ``from_dict`` is strict (unknown keys named with the closest ones)."""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np
import pytest

from ditcache.core.validators import (
    StrictConfig,
    accept_aliases,
    and_,
    coerce_config,
    finite,
    from_dict,
    int_ge,
    is_bool,
    non_empty_str,
    one_of,
    optional,
    plain_scalar,
)


@accept_aliases
@attrs.frozen(kw_only=True)
class Demo(StrictConfig):
    __setting_aliases__ = {"Steps": "steps"}  # noqa: RUF012

    steps: int | None = attrs.field(default=None, converter=plain_scalar, validator=optional(int_ge(1), "unknown"))
    ratio: float = attrs.field(default=0.5, converter=plain_scalar, validator=finite(ge=0, lt=1))
    scale: float = attrs.field(default=1.0, converter=plain_scalar, validator=finite(gt=0))
    mode: str = attrs.field(default="a", validator=one_of(("a", "b")))
    name: str = attrs.field(default="x", validator=and_(non_empty_str, one_of(("x", "yy"))))
    flag: bool = attrs.field(default=False, converter=plain_scalar, validator=is_bool)
    _hidden: int = attrs.field(default=0)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"steps": 0}, ValueError, r"^Demo\.steps: expected an int >= 1 or None \(unknown\), got 0$"),
        ({"steps": True}, ValueError, r"^Demo\.steps: expected an int >= 1"),
        ({"steps": 2.0}, ValueError, r"^Demo\.steps: expected an int >= 1"),
        ({"ratio": 1.0}, ValueError, r"^Demo\.ratio: expected a number in \[0, 1\), got 1\.0$"),
        ({"scale": float("inf")}, ValueError, r"^Demo\.scale: expected a finite number > 0, got inf$"),
        ({"scale": "1"}, ValueError, r"^Demo\.scale: expected a finite number > 0"),
        ({"mode": "c"}, ValueError, r"^Demo\.mode: expected one of \['a', 'b'\], got 'c'$"),
        ({"mode": ["a"]}, ValueError, r"^Demo\.mode: expected one of"),
        ({"name": ""}, TypeError, r"^Demo\.name: expected a non-empty string, got ''$"),
        ({"name": "z"}, ValueError, r"^Demo\.name: expected one of \['x', 'yy'\]"),
        ({"flag": 1}, TypeError, r"^Demo\.flag: expected True or False, got 1$"),
    ],
)
def test_rules_name_the_field_and_what_is_allowed(kwargs: dict[str, Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        Demo(**kwargs)


def test_numpy_scalars_become_python_numbers() -> None:
    demo = Demo(steps=np.int64(3), ratio=np.float32(0.25), scale=np.float64(2.0), flag=np.bool_(True))
    assert demo == Demo(steps=3, ratio=0.25, scale=2.0, flag=True)
    assert (type(demo.steps), type(demo.ratio), type(demo.flag)) == (int, float, bool)
    assert plain_scalar("3") == "3" and plain_scalar(None) is None


def test_from_dict_is_strict_and_suggests_the_closest_keys() -> None:
    assert Demo.from_dict({"steps": 2, "mode": "b"}) == Demo(steps=2, mode="b")
    assert from_dict(Demo, {"Steps": 2}) == Demo(Steps=2) == Demo(steps=2)  # type: ignore[call-arg]
    assert Demo.from_dict(attrs.asdict(Demo(hidden=4))) == Demo(hidden=4)  # private field by its attribute name
    with pytest.raises(ValueError, match=r"^Demo: unknown setting\(s\) \['step'\]; allowed settings: \[.*\]; "):
        Demo.from_dict({"step": 2})
    with pytest.raises(ValueError, match=r"closest: 'step' -> 'steps'"):
        Demo.from_dict({"step": 2})
    with pytest.raises(ValueError, match=r"^Demo\.steps: given twice"):
        Demo.from_dict({"steps": 2, "Steps": 2})
    with pytest.raises(TypeError, match=r"^Demo: expected a mapping of settings, got list"):
        Demo.from_dict([("steps", 2)])  # type: ignore[arg-type]
    assert coerce_config(Demo, None) == Demo() and coerce_config(Demo, {"mode": "b"}) == Demo(mode="b")
    with pytest.raises(TypeError, match=r"^cfg: expected a Demo, a dict or None, got int"):
        coerce_config(Demo, 3)  # type: ignore[arg-type]


def test_rules_check_plain_values_and_have_a_readable_repr() -> None:
    int_ge(1).check(3, "num_steps")
    with pytest.raises(ValueError, match=r"^num_steps: expected an int >= 1, got 0$"):
        int_ge(1).check(0, "num_steps")
    assert repr(optional(int_ge(0))) == "<validator: an int >= 0 or None>"


def test_the_module_imports_nothing_else_from_ditcache() -> None:
    import ast
    import inspect

    import ditcache.core.validators as module

    tree = ast.parse(inspect.getsource(module))
    imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in imported if m and m.startswith("ditcache")]
