"""Unit tests of the TaylorSeer forecaster (ditcache.caches.taylorseer)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ditcache.caches.taylorseer import FORECAST_METHODS, TaylorSeer


def _poly(coeffs: list[torch.Tensor], s: int) -> torch.Tensor:
    """sum_k coeffs[k] * s**k, in float64."""
    out = torch.zeros_like(coeffs[0])
    for k, c in enumerate(coeffs):
        out = out + c * float(s) ** k
    return out


def _coeffs(degree: int, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(3, 4, generator=gen, dtype=torch.float64) for _ in range(degree + 1)]


# ---------------------------------------------------------------------------------------------- exactness
@pytest.mark.parametrize("method", FORECAST_METHODS)
@pytest.mark.parametrize("order", [1, 2, 3])
def test_linear_sequences_are_forecast_exactly_at_any_spacing(method: str, order: int) -> None:
    coeffs = _coeffs(1)
    ts = TaylorSeer(order, method=method)
    for s in (0, 2, 3, 7):
        ts.update(_poly(coeffs, s), s)
    for target in (7, 8, 10, 15):
        torch.testing.assert_close(ts.approximate(target), _poly(coeffs, target), rtol=1e-12, atol=1e-12)


def test_order_zero_reuses_the_last_value_as_a_copy() -> None:
    ts = TaylorSeer(0)
    value = torch.arange(6.0).reshape(2, 3)
    ts.update(value, 0)
    ts.update(value * 2, 1)
    out = ts.approximate(5)
    assert torch.equal(out, value * 2)
    assert ts.available_order == 0
    out.add_(1)  # the caller may modify the forecast without corrupting the stored value
    assert torch.equal(ts.approximate(6), value * 2)


@settings(max_examples=40, deadline=None)
@given(
    order=st.integers(1, 3),
    gaps=st.lists(st.integers(1, 4), min_size=4, max_size=6),
    ahead=st.integers(0, 5),
    seed=st.integers(0, 1000),
)
def test_newton_forecasts_polynomials_up_to_the_order_exactly(
    order: int, gaps: list[int], ahead: int, seed: int
) -> None:
    coeffs = _coeffs(order, seed)
    ts = TaylorSeer(order, method="newton")
    s = 0
    steps = [0]
    for g in gaps:
        s += g
        steps.append(s)
    for s in steps:
        ts.update(_poly(coeffs, s), s)
    assert ts.available_order == order
    target = steps[-1] + ahead
    expected = _poly(coeffs, target)
    torch.testing.assert_close(ts.approximate(target), expected, rtol=1e-9, atol=1e-9 * float(expected.abs().max()))


@pytest.mark.parametrize("order", [1, 2, 3])
def test_taylor_top_derivative_of_a_degree_order_polynomial_is_exact(order: int) -> None:
    coeffs = _coeffs(order, 3)
    ts = TaylorSeer(order, method="taylor")
    for s in range(order + 3):
        ts.update(_poly(coeffs, s), s)
    assert ts.available_order == order
    top = ts.factors[order]
    torch.testing.assert_close(top, math.factorial(order) * coeffs[order], rtol=1e-10, atol=1e-10)


def test_taylor_expansion_has_the_backward_difference_bias_for_quadratics() -> None:
    # Y = a * s^2 at unit spacing: d1 = a(2s - 1), d2 = 2a, so the forecast k steps ahead is Y(s + k) - a * k.
    a = torch.tensor([0.5, -2.0, 3.0], dtype=torch.float64)
    ts = TaylorSeer(2, method="taylor")
    for s in range(5):
        ts.update(a * s**2, s)
    for k in range(0, 4):
        torch.testing.assert_close(ts.approximate(4 + k), a * (4 + k) ** 2 - a * k, rtol=1e-12, atol=1e-12)
    newton = TaylorSeer(2, method="newton")
    for s in range(5):
        newton.update(a * s**2, s)
    torch.testing.assert_close(newton.approximate(7), a * 49, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------- cache-dit quirk
@pytest.mark.parametrize(("delay", "orders"), [(0, [0, 1, 2, 2, 2, 2]), (3, [0, 0, 0, 1, 2, 2])])
def test_derivative_delay_controls_when_derivatives_appear(delay: int, orders: list[int]) -> None:
    ts = TaylorSeer(2, derivative_delay=delay)
    seen = []
    for s in range(6):
        ts.update(torch.full((2,), float(s * s)), s)
        seen.append(ts.available_order)
    assert seen == orders


def _cache_dit_schedule(computed: list[bool], values: list[torch.Tensor], order: int) -> list[torch.Tensor]:
    """Drive cache-dit's TaylorSeerCalibrator the way its DBCache context does; return the per-step results."""
    calibrators = pytest.importorskip("cache_dit.caching.cache_contexts.calibrators")
    cal = calibrators.TaylorSeerCalibrator(n_derivatives=order)
    cal.reset_cache()
    out = []
    for is_computed, value in zip(computed, values):
        cal.mark_step_begin()  # advances only the states that exist (created lazily at the first update)
        if is_computed:
            cal.update(value, name="Bn_residual")
            out.append(value)
        else:
            out.append(cal.approximate(name="Bn_residual"))
    return out


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_cache_dit_calibrator_bit_for_bit(order: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    steps = 24
    # Steps 0 and 1 computed and step 2 cached, so the early (delay-dependent) forecasts are exercised.
    computed = [True, True, False] + [bool(b) for b in (torch.rand(steps - 3, generator=gen) < 0.45).tolist()]
    values = [torch.randn(4, 5, generator=gen) for _ in range(steps)]
    theirs = _cache_dit_schedule(computed, values, order)
    ts = TaylorSeer(order, derivative_delay=3)
    ours = []
    for s, (is_computed, value) in enumerate(zip(computed, values)):
        if is_computed:
            ts.update(value, s)
            ours.append(value)
        else:
            ours.append(ts.approximate(s))
    assert sum(not c for c in computed) >= 5
    for s, (a, b) in enumerate(zip(ours, theirs)):
        assert torch.equal(a, b), f"step {s}: max |diff| {(a - b).abs().max().item()}"
    # Without the delay, the early forecasts differ from cache-dit's (the quirk matters).
    ts0 = TaylorSeer(order, derivative_delay=0)
    differs = False
    for s, (is_computed, value) in enumerate(zip(computed, values)):
        if is_computed:
            ts0.update(value, s)
        elif not torch.equal(ts0.approximate(s), theirs[s]):
            differs = True
    assert differs


# ---------------------------------------------------------------------------------------------- state and errors
def test_shape_change_restarts_the_expansion() -> None:
    ts = TaylorSeer(1)
    ts.update(torch.zeros(3), 0)
    ts.update(torch.ones(3), 1)
    assert ts.available_order == 1
    ts.update(torch.full((4,), 5.0), 2)
    assert ts.available_order == 0
    assert torch.equal(ts.approximate(6), torch.full((4,), 5.0))


def test_reset_forgets_everything() -> None:
    ts = TaylorSeer(1)
    ts.update(torch.zeros(2), 3)
    assert ts.ready and ts.last_step == 3
    ts.reset()
    assert not ts.ready and ts.last_step is None and ts.available_order == -1
    ts.update(torch.ones(2), 0)  # a lower step is fine after a reset
    assert ts.last_step == 0


def test_dtype_option_stores_in_that_dtype_and_returns_the_input_dtype() -> None:
    ts = TaylorSeer(1, dtype=torch.float64)
    ts.update(torch.tensor([1.0, 2.0]), 0)
    ts.update(torch.tensor([2.0, 4.0]), 1)
    assert ts.factors[1].dtype == torch.float64
    out = ts.approximate(3)
    assert out.dtype == torch.float32
    assert torch.equal(out, torch.tensor([4.0, 8.0]))


def test_misuse_is_refused_with_named_errors() -> None:
    ts = TaylorSeer(1)
    with pytest.raises(RuntimeError, match="no update yet"):
        ts.approximate(0)
    ts.update(torch.zeros(2), 5)
    with pytest.raises(ValueError, match="increasing step"):
        ts.update(torch.zeros(2), 5)
    with pytest.raises(ValueError, match="before the last update"):
        ts.approximate(4)
    with pytest.raises(TypeError, match="step"):
        ts.update(torch.zeros(2), 6.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="value"):
        ts.update([0.0, 0.0], 6)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"order": -1}, "order"),
        ({"order": True}, "order"),
        ({"derivative_delay": -1}, "derivative_delay"),
        ({"method": "euler"}, "method"),
        ({"dtype": torch.int32}, "dtype"),
    ],
)
def test_invalid_arguments_name_the_argument(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        TaylorSeer(**kwargs)  # type: ignore[arg-type]
