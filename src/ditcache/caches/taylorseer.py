"""TaylorSeer forecasting (Liu et al., ICCV 2025, arXiv 2503.06923): predict a cached tensor instead of reusing it.

A cache that skips work on some steps normally reuses the tensor of the last computed step (a residual, a block
output). TaylorSeer instead keeps a Taylor expansion of that tensor around the last computed step, built from finite
differences over the computed steps, and evaluates it at the skipped step::

    on a computed step s:   d_0 = Y(s),   d_{i+1} = (d_i(s) - d_i(s_prev)) / (s - s_prev)   for i < order
    on a skipped step s:    Y(s) ~ sum_i d_i * (s - s_last)^i / i!

Time is measured in step indices (the index of the call within its branch's generation), not in sigma or timestep
values, as in the paper's code, cache-dit and diffusers.

Exactness. The top factor ``d_order`` of a polynomial of degree ``order`` sampled at unit spacing is exact
(``order! * leading coefficient``), and sequences of degree <= 1 are forecast exactly at any spacing. For degree >= 2
the expansion is *not* exact: it uses backward differences as derivatives at the last computed step, which has an
``O(h)`` bias (for ``Y = a*s^2`` at unit spacing the forecast ``k`` steps ahead is low by ``a*k``). That is the
published method, and what cache-dit and diffusers compute. ``method="newton"`` instead extrapolates with Newton's
divided-difference polynomial through the last ``order + 1`` computed steps, which forecasts every polynomial of
degree <= ``order`` exactly, at any spacing, for the same memory; it equals ``"taylor"`` for ``order <= 1``.

:class:`TaylorSeer` holds one tensor stream; a cache keeps one per stream and branch (DBCache: the middle-block
residual of each stream; a step-level cache such as TeaCache or MagCache can use it for its reused residual the same
way: ``update(residual, ctx.step)`` on a computed step and ``approximate(ctx.step)`` on a skipped one).

``derivative_delay`` reproduces a quirk of cache-dit's TaylorSeer calibrator: its per-stream state is created at the
first update with a step counter one behind, and it only forms derivatives while that counter is above 1. In step
indices: an update forms derivatives only when at least 3 steps have passed since the stream's first update, so
order 1 is available from the 4th step on and order 2 from the 5th (with every step computed). ``derivative_delay=3``
matches that; ``0`` (the default here) forms derivatives as soon as two updates exist, as the paper and diffusers do.
The arithmetic (operation order included) follows cache-dit's so the forecasts agree bit for bit when configured
alike.
"""

from __future__ import annotations

import math
from typing import Final

import torch

__all__ = ["FORECAST_METHODS", "TaylorSeer"]

FORECAST_METHODS: Final[tuple[str, ...]] = ("taylor", "newton")
"""``"taylor"``: the published TaylorSeer expansion; ``"newton"``: Newton's divided-difference extrapolation."""


class TaylorSeer:
    """A Taylor-series forecaster for one tensor stream.

    Args:
        order: highest derivative kept (0 reuses the last value, 1 extrapolates linearly, 2 quadratically, ...).
        derivative_delay: updates fewer than this many steps after the stream's first update form no derivatives
            (3 reproduces cache-dit; 0 forms them as soon as possible).
        method: ``"taylor"`` (the published expansion, as cache-dit and diffusers) or ``"newton"`` (exact for
            polynomials of degree <= ``order``); see the module docstring.
        dtype: dtype the expansion is stored and evaluated in (None: the tensor's own); forecasts are returned in
            the dtype of the last update.
    """

    __slots__ = (
        "_factors",
        "_first_step",
        "_nodes",
        "_out_dtype",
        "derivative_delay",
        "dtype",
        "method",
        "order",
    )

    def __init__(
        self,
        order: int = 1,
        *,
        derivative_delay: int = 0,
        method: str = "taylor",
        dtype: torch.dtype | None = None,
    ) -> None:
        if isinstance(order, bool) or not isinstance(order, int) or order < 0:
            raise ValueError(f"order: expected an int >= 0 (1 or 2 are usual), got {order!r}")
        if isinstance(derivative_delay, bool) or not isinstance(derivative_delay, int) or derivative_delay < 0:
            raise ValueError(
                f"derivative_delay: expected an int >= 0 (3 reproduces cache-dit), got {derivative_delay!r}"
            )
        if method not in FORECAST_METHODS:
            raise ValueError(f"method: expected one of {list(FORECAST_METHODS)}, got {method!r}")
        if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise TypeError(f"dtype: expected a floating torch.dtype or None, got {dtype!r}")
        self.order = order
        self.derivative_delay = derivative_delay
        self.method = method
        self.dtype = dtype
        self._factors: list[torch.Tensor] = []
        self._nodes: list[int] = []  # step indices of the updates the factors use, newest first
        self._first_step = 0
        self._out_dtype: torch.dtype | None = None

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Forget every update (the next update starts a new expansion)."""
        self._factors = []
        self._nodes = []
        self._out_dtype = None

    @property
    def ready(self) -> bool:
        """Whether at least one update was made (a forecast is possible)."""
        return bool(self._factors)

    @property
    def available_order(self) -> int:
        """The order of the current expansion: ``min(order, usable finite differences)``; -1 before any update."""
        return len(self._factors) - 1

    @property
    def last_step(self) -> int | None:
        """Step index of the last update, or None."""
        return self._nodes[0] if self._nodes else None

    @property
    def factors(self) -> tuple[torch.Tensor, ...]:
        """The current expansion: ``(d_0, d_1, ...)``, the last value and its finite-difference derivatives
        (``"taylor"``) or divided differences (``"newton"``)."""
        return tuple(self._factors)

    # ------------------------------------------------------------------ use
    def update(self, value: torch.Tensor, step: int) -> None:
        """Record the computed ``value`` of step ``step``; steps must increase between updates.

        A change of shape, device or dtype restarts the expansion from this value.
        """
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"value: expected a torch.Tensor, got {type(value).__name__}")
        if isinstance(step, bool) or not isinstance(step, int):
            raise TypeError(f"step: expected an int step index, got {step!r}")
        y = value if self.dtype is None else value.to(self.dtype)
        prev, nodes = self._factors, self._nodes
        if prev and (prev[0].shape != y.shape or prev[0].device != y.device or prev[0].dtype != y.dtype):
            prev, nodes = [], []
        if nodes and step <= nodes[0]:
            raise ValueError(
                f"step: updates must have increasing step indices; got {step} after {nodes[0]} "
                "(call reset() at the start of a new generation)"
            )
        factors = [y]
        if not prev:
            self._first_step = step
        elif step - self._first_step >= self.derivative_delay:
            for i in range(min(self.order, len(prev))):
                # taylor: (d_i(now) - d_i(prev)) / (now - prev), cache-dit's arithmetic; newton: divided differences.
                window = step - (nodes[0] if self.method == "taylor" else nodes[i])
                factors.append((factors[i] - prev[i]) / window)
        self._factors = factors
        self._nodes = [step, *nodes[: self.order]]
        self._out_dtype = value.dtype

    def approximate(self, step: int) -> torch.Tensor:
        """The forecast for step ``step`` (at or after the last update)."""
        if not self._factors:
            raise RuntimeError("TaylorSeer.approximate: no update yet; call update() on a computed step first")
        if isinstance(step, bool) or not isinstance(step, int):
            raise TypeError(f"step: expected an int step index, got {step!r}")
        nodes = self._nodes
        elapsed = step - nodes[0]
        if elapsed < 0:
            raise ValueError(f"step: cannot forecast step {step} before the last update at step {nodes[0]}")
        factors = self._factors
        out = factors[0]
        if self.method == "taylor":
            for i in range(1, len(factors)):
                # cache-dit's operation order ((1/i!) * d_i * elapsed^i, summed from order 0 up): bitwise agreement.
                out = out + (1 / math.factorial(i)) * factors[i] * (elapsed**i)
        else:
            weight = 1
            for i in range(1, len(factors)):
                weight *= step - nodes[i - 1]
                out = out + factors[i] * weight
        if len(factors) == 1:
            out = out.clone()  # never hand out the stored tensor itself
        assert self._out_dtype is not None
        return out if out.dtype == self._out_dtype else out.to(self._out_dtype)

    def __repr__(self) -> str:
        return (
            f"TaylorSeer(order={self.order}, method={self.method!r}, derivative_delay={self.derivative_delay}, "
            f"available_order={self.available_order}, last_step={self.last_step})"
        )
