"""Error control for the step-level caches: a tolerance ``rtol`` instead of a model-specific threshold.

A threshold on TeaCache's accumulated distance or MagCache's accumulated error means a different image error on
every model (the indicator's scale and the polynomial differ). ``rtol`` is what the user actually wants to bound:
the relative L1 error of what a skipped step gives back (the forecast output, or the blocks' output with the
reused residual) against what computing the step would have given, ``mean|reused - computed| / mean|computed|``.

The cache measures that error itself, online, with no calibration run: on every computed step where it could have
skipped (a residual or forecast exists), it builds what it would have returned and compares it with the step it
just computed; the accumulated indicator at that step is the "step size" the error belongs to. As an adaptive ODE
solver picks its next step from the error of the last one, :class:`ErrorControl` then sets the threshold on the
accumulator so that the next reuse lands at ``rtol``: with an error model ``e ~ C * acc**(p + 1)`` (``p`` the order
of the forecast, 0 for plain reuse),

    threshold = acc * SAFETY * (rtol / e) ** (1 / (p + 1)),

limited to at most :data:`MAX_GROWTH` times and at least :data:`MAX_SHRINK` times the previous threshold per
observation, and to at most :data:`MAX_EXTRAPOLATION` times the accumulated value it was measured at (the error
model is not trusted far outside what was observed). Nothing is skipped until some measured error was within
``rtol``: a tolerance that no reuse has met (the power law misses errors that do not vanish with the indicator)
skips nothing. An
observation made on a step that was computed for another reason (warm-up, the forced last step) may lower the
threshold but not raise it.

The cost: one extra forecast and one relative L1 (one host sync) per computed step that could have been skipped.
Under sequence parallelism the error is reduced over the ranks like the indicator, so every rank decides alike.
"""

from __future__ import annotations

import math

from ditcache.core.validators import finite, int_ge

__all__ = ["MAX_EXTRAPOLATION", "MAX_GROWTH", "MAX_SHRINK", "SAFETY", "ErrorControl"]

_RTOL = finite(gt=0, lt=1)

SAFETY = 0.9
"""Factor under the threshold the error model predicts for ``rtol`` (as adaptive ODE solvers use)."""
MAX_GROWTH = 2.0
"""The threshold at most doubles per observation."""
MAX_SHRINK = 0.2
"""The threshold falls to no less than this fraction of itself per observation."""
MAX_EXTRAPOLATION = 2.0
"""The threshold stays within this multiple of the accumulated value an error was measured at."""


class ErrorControl:
    """The threshold of one branch in one generation, adapted from measured errors (see the module docstring).

    ``order`` is the order of what is reused: 0 for the last residual or output, the TaylorSeer order otherwise.
    """

    __slots__ = ("exponent", "observations", "rtol", "smallest_error", "threshold")

    def __init__(self, rtol: float, order: int = 0) -> None:
        _RTOL.check(rtol, "ErrorControl.rtol")
        int_ge(0).check(order, "ErrorControl.order")
        self.rtol = float(rtol)
        self.exponent = 1.0 / (order + 1)
        self.threshold: float | None = None
        """The current threshold on the accumulator; None until the first observation (nothing is skipped)."""
        self.observations = 0
        """How many errors were observed."""
        self.smallest_error = math.inf
        """The smallest error measured so far; nothing is skipped until one was within ``rtol``."""

    def allows(self, accumulated: float) -> bool:
        """Whether a step with this accumulated indicator may be skipped: under the threshold, once some measured
        error was within ``rtol`` (errors that do not vanish with the indicator, e.g. at a magnitude ratio of
        exactly 1, are outside the power law; a tolerance no reuse has met skips nothing)."""
        return self.threshold is not None and accumulated < self.threshold and self.smallest_error <= self.rtol

    def observe(self, accumulated: float, error: float, *, may_raise: bool = True) -> float | None:
        """Adapt the threshold to an error measured at ``accumulated``; returns the new threshold.

        A non-finite or non-positive accumulated value carries no step size and is ignored; a zero error raises
        the threshold by the growth limit. ``may_raise=False`` (a step computed for another reason) keeps the
        threshold from rising.
        """
        if not (math.isfinite(accumulated) and accumulated > 0) or math.isnan(error):
            return self.threshold
        if error <= 0:
            target = accumulated * MAX_EXTRAPOLATION
        else:
            target = accumulated * SAFETY * (self.rtol / error) ** self.exponent if math.isfinite(error) else 0.0
            target = min(target, accumulated * MAX_EXTRAPOLATION)
        old = self.threshold
        if old:  # a previous positive threshold bounds the change
            target = min(max(target, old * MAX_SHRINK), old * MAX_GROWTH)
            if not may_raise:
                target = min(target, old)
        self.threshold = target
        self.observations += 1
        self.smallest_error = min(self.smallest_error, max(error, 0.0))
        return target
