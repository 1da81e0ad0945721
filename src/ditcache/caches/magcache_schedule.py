"""MagCache's schedule, pure: the decisions for every step of one branch from its ratio curve, computed up front.

No torch and no state: :func:`magcache_schedule` replays the published accumulation (see
:mod:`ditcache.caches.magcache`) over a curve resampled to the run's step count.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from fractions import Fraction
from typing import Any, overload

import attrs

from ditcache.core.validators import finite, int_ge

__all__ = [
    "MagAccumulator",
    "MagCacheSchedule",
    "check_curve",
    "magcache_retention_steps",
    "magcache_schedule",
    "resample_ratios",
    "split_interleaved",
]


# ---------------------------------------------------------------------------------------------- checks
_POSITIVE = finite(gt=0)
_FRACTION = finite(ge=0, lt=1)


def _check_threshold(value: Any, name: str) -> None:
    _POSITIVE.check(value, name)


def _check_ratio(value: Any, name: str) -> None:
    _FRACTION.check(value, name)


# ---------------------------------------------------------------------------------------------- curve helpers
def check_curve(ratios: Any, name: str) -> tuple[float, ...]:
    """``ratios`` as a non-empty tuple of finite positive floats; TypeError/ValueError naming ``name``."""
    if isinstance(ratios, (str, bytes)) or isinstance(ratios, Mapping):
        raise TypeError(f"{name}: expected a sequence of positive numbers, got {type(ratios).__name__}")
    try:
        values = tuple(float(v) for v in ratios)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a sequence of positive numbers, got {ratios!r}") from None
    if not values:
        raise ValueError(f"{name}: expected at least one ratio, got an empty sequence")
    bad = [v for v in values if not (math.isfinite(v) and v > 0)]
    if bad:
        raise ValueError(f"{name}: every ratio must be a finite number > 0, got {bad[:3]}")
    return values


def resample_ratios(ratios: Sequence[float], num_steps: int) -> tuple[float, ...]:
    """Resample a per-branch curve to ``num_steps`` entries by nearest index.

    ``out[i] = ratios[round(i * (L - 1) / (num_steps - 1))]`` with ``L = len(ratios)``, rounding half to even
    (as ``numpy.round`` in MagCache's ``nearest_interp`` and ``torch.round`` in diffusers); the index is
    computed exactly (rational arithmetic), so no float error can move it. ``num_steps == 1`` takes the last
    entry. A curve already of length ``num_steps`` is returned unchanged.
    """
    curve = check_curve(ratios, "ratios")
    int_ge(1).check(num_steps, "num_steps")
    n = len(curve)
    if n == num_steps:
        return curve
    if num_steps == 1:
        return (curve[-1],)
    return tuple(curve[round(Fraction(i * (n - 1), num_steps - 1))] for i in range(num_steps))


def split_interleaved(ratios: Sequence[float]) -> dict[str, tuple[float, ...]]:
    """Split a curve recorded with interleaved cond/uncond entries: ``{"cond": [0::2], "uncond": [1::2]}``."""
    curve = check_curve(ratios, "ratios")
    if len(curve) % 2:
        raise ValueError(f"ratios: an interleaved cond/uncond curve has an even length, got {len(curve)}")
    return {"cond": curve[0::2], "uncond": curve[1::2]}


def magcache_retention_steps(retention_ratio: float, num_steps: int) -> int:
    """Steps always computed at the start: ``int(retention_ratio * num_steps + 0.5)``.

    This is MagCache4FLUX's and diffusers' rounding (round half up of ``R * N``; 0.1 x 28 -> 3, 0.2 x 50 -> 10).
    MagCache4Wan truncates ``int(R * 2N)`` over interleaved forwards instead, which gives the same count for
    its published settings.
    """
    _check_ratio(retention_ratio, "retention_ratio")
    int_ge(1).check(num_steps, "num_steps")
    return int(retention_ratio * num_steps + 0.5)


@attrs.frozen
class MagCacheSchedule(Sequence[bool]):
    """The per-step decisions of MagCache for one branch: ``schedule[t]`` is True when step ``t`` computes.

    A sequence of booleans with the resampled ratios and accumulated errors alongside; ``str(schedule)`` shows
    it compactly (``C`` = compute, ``-`` = reuse the cached residual).
    """

    compute: tuple[bool, ...]
    """Per step: True to run the blocks, False to reuse the cached residual."""
    ratios: tuple[float, ...]
    """The curve resampled to the step count (``ratios[t]`` is ``gamma_t``)."""
    accumulated_error: tuple[float, ...]
    """Per step: the accumulated error the decision compared with the threshold (0.0 inside the retention
    window and on the first step)."""
    retention_steps: int
    """Leading steps always computed."""
    threshold: float
    max_skip_steps: int

    @overload
    def __getitem__(self, index: int) -> bool: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[bool]: ...
    def __getitem__(self, index: int | slice) -> bool | Sequence[bool]:
        return self.compute[index]

    def __len__(self) -> int:
        return len(self.compute)

    def __iter__(self) -> Iterator[bool]:
        return iter(self.compute)

    @property
    def computed_steps(self) -> list[int]:
        """Indices of the steps that run the blocks."""
        return [t for t, c in enumerate(self.compute) if c]

    @property
    def skipped_steps(self) -> list[int]:
        """Indices of the steps that reuse the cached residual."""
        return [t for t, c in enumerate(self.compute) if not c]

    @property
    def pattern(self) -> str:
        """One character per step: ``C`` computes, ``-`` reuses."""
        return "".join("C" if c else "-" for c in self.compute)

    def __str__(self) -> str:
        return f"{len(self.computed_steps)}/{len(self)} steps computed: {self.pattern}"


@attrs.define
class MagAccumulator:
    """MagCache's accumulators of one branch since its last computed step (the published rule, in float64)."""

    ratio: float = 1.0
    """The product of the step ratios ``gamma_t`` since the last computed step."""
    steps: int = 0
    """Steps accumulated since then."""
    error: float = 0.0
    """The accumulated error, the sum of ``|1 - ratio|``."""

    def add(self, gamma: float) -> float:
        """Accumulate step ratio ``gamma``; returns the accumulated error."""
        self.ratio *= gamma
        self.steps += 1
        self.error += abs(1.0 - self.ratio)
        return self.error

    def reset(self) -> None:
        """A computed step: start again from ``(1.0, 0, 0.0)``."""
        self.ratio, self.steps, self.error = 1.0, 0, 0.0


def magcache_schedule(
    ratios: Sequence[float],
    threshold: float,
    max_skip_steps: int,
    retention_ratio: float,
    num_steps: int,
) -> MagCacheSchedule:
    """MagCache's compute/skip decision for every step of one branch, computed up front.

    ``ratios`` is one branch's curve (padding ``1.0`` first, any length: it is resampled with
    :func:`resample_ratios`; split interleaved curves with :func:`split_interleaved` first). Step 0 always
    computes (nothing is cached yet); steps before ``int(retention_ratio * num_steps + 0.5)`` compute without
    touching the accumulators; then ``ratio *= gamma_t``, ``k += 1``, ``error += |1 - ratio|``, and the step is
    skipped iff ``error <= threshold and k <= max_skip_steps``, else computed with the accumulators reset.
    The accumulation is in float64, as MagCache's numpy code.
    """
    _check_threshold(threshold, "threshold")
    int_ge(1).check(max_skip_steps, "max_skip_steps")
    retention = magcache_retention_steps(retention_ratio, num_steps)
    curve = resample_ratios(ratios, num_steps)
    acc = MagAccumulator()
    compute: list[bool] = []
    errors: list[float] = []
    for t in range(num_steps):
        err_seen = 0.0
        if t >= retention:
            err_seen = acc.add(curve[t])
            if t > 0 and err_seen <= threshold and acc.steps <= max_skip_steps:
                compute.append(False)
                errors.append(err_seen)
                continue
            acc.reset()
        compute.append(True)
        errors.append(err_seen)
    return MagCacheSchedule(
        compute=tuple(compute),
        ratios=curve,
        accumulated_error=tuple(errors),
        retention_steps=retention,
        threshold=float(threshold),
        max_skip_steps=max_skip_steps,
    )
