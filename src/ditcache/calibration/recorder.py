"""The TeaCache calibration recorder: a cache middleware that never skips and records, per CFG branch and step,
the points TeaCache's polynomial is fitted on.

* ``x``: ``mean|m_t - m_{t-1}| / mean|m_{t-1}|``, the relative L1 change of the indicator between consecutive steps
  of the same branch (the previous step in the denominator, as TeaCache's Eq. 4), exactly what TeaCache computes at
  inference;
* ``y``: the same relative L1 change of the model's output (the velocity/noise prediction returned by the
  transformer, the ``y`` of the paper's fit). The change of the block stack's output is recorded too (``fit_on=
  "blocks"``, what vLLM-Omni's estimator fits) as a diagnostic.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Mapping
from typing import Any

import attrs
import numpy as np
import torch
from torch import nn

from ditcache.caches.reuse import output_tensor
from ditcache.calibration.fit import TeaCacheFit, fit_teacache_coefficients, round6
from ditcache.core.cache import CacheMiddleware, CallNextBlocks
from ditcache.core.context import BlockOutput, CacheContext
from ditcache.core.log import get_logger
from ditcache.core.metrics import rel_l1
from ditcache.profiles import Profile

__all__ = ["FIT_TARGETS", "TeaCacheCalibrator"]

_log = get_logger("ditcache.calibration.recorder")

FIT_TARGETS = ("output", "blocks")
"""What ``y`` measures: the model's output (TeaCache's definition) or the block stack's output."""


@attrs.define
class _Series:
    """The points of one branch over one generation."""

    branch: str
    role: str
    steps: list[int] = attrs.field(factory=list)
    x: list[float] = attrs.field(factory=list)
    y_output: list[float] = attrs.field(factory=list)
    y_blocks: list[float] = attrs.field(factory=list)


@attrs.define
class _CalState:
    series: _Series | None = None
    indicator: torch.Tensor | None = None
    output: torch.Tensor | None = None
    blocks: torch.Tensor | None = None


@attrs.frozen
class _CalibratorSettings:
    indicator: str | None = None
    fit_on: str = "output"


class TeaCacheCalibrator(CacheMiddleware[_CalState]):
    """A cache middleware that never skips and records TeaCache's calibration points per CFG branch and step.

    Apply it with :func:`~ditcache.core.runtime.apply_cache` (or let :func:`calibrate` do it), run generations, then
    read :meth:`fit` or :meth:`profile`. Points accumulate over generations until :meth:`clear`. The branch role
    (``cond``/``uncond``) is the one the step clock stamps on ``ctx.role`` (:func:`ditcache.core.branch.role_of`:
    named branches by name, unnamed ones by their order in the run), the same rule the caches use. It computes the
    model's head once more per call to read the output (calibration only).
    """

    name = "teacache-calibration"
    level = None  # never skips: stacks with MagCache's calibration mode

    def __init__(self, indicator: str | None = None, fit_on: str = "output") -> None:
        if indicator is not None and (not isinstance(indicator, str) or not indicator):
            raise TypeError(f"indicator: expected a non-empty extra_states key or None, got {indicator!r}")
        if fit_on not in FIT_TARGETS:
            raise ValueError(f"fit_on: expected one of {list(FIT_TARGETS)}, got {fit_on!r}")
        super().__init__(_CalibratorSettings(indicator, fit_on))
        self.series: list[_Series] = []
        self._module_class: str | None = None

    def bind(self, module: nn.Module, num_blocks: int) -> None:
        self._module_class = type(module).__name__

    def new_state(self) -> _CalState:
        return _CalState()

    def clear(self) -> None:
        """Drop every recorded point."""
        self.series = []
        self.reset()

    def _indicator(self, ctx: CacheContext) -> torch.Tensor:
        key = self.config.indicator
        if key is None:
            return ctx.modulated_input.detach()
        value = ctx.extra_states.get(key)
        if not isinstance(value, torch.Tensor):
            raise ValueError(
                f"indicator: {key!r} is not a tensor in this model's extra_states; available: "
                f"{sorted(k for k, v in ctx.extra_states.items() if isinstance(v, torch.Tensor))}"
            )
        return value.detach()

    def process(self, ctx: CacheContext, call_next: CallNextBlocks) -> BlockOutput:
        state = self.state(ctx)
        if state.series is None:
            state.series = _Series(branch=str(ctx.branch), role=ctx.role)
            self.series.append(state.series)
        indicator = self._indicator(ctx)
        hidden, encoder = call_next(ctx)
        output = output_tensor(ctx.postprocess(hidden, encoder)).detach()
        blocks = hidden.detach()
        distance: float | None = None
        change: float | None = None
        prev_i, prev_o, prev_b = state.indicator, state.output, state.blocks
        if (
            prev_i is not None
            and prev_o is not None
            and prev_b is not None
            and prev_i.shape == indicator.shape
            and prev_o.shape == output.shape
            and prev_b.shape == blocks.shape
        ):
            distance = rel_l1(indicator, prev_i)
            change = rel_l1(output, prev_o)
            change_blocks = rel_l1(blocks, prev_b)
            if all(math.isfinite(v) for v in (distance, change, change_blocks)):
                s = state.series
                s.steps.append(ctx.step)
                s.x.append(distance)
                s.y_output.append(change)
                s.y_blocks.append(change_blocks)
        state.indicator, state.output, state.blocks = indicator, output, blocks
        self.record(ctx, True, distance=distance, output_change=change)
        return hidden, encoder

    # ------------------------------------------------------------------ results
    def roles(self) -> list[str]:
        """The branch roles with points, ``cond`` first."""
        found = {s.role for s in self.series if s.x}
        return [r for r in ("cond", "uncond") if r in found]

    def points(self, role: str | None = None, fit_on: str | None = None) -> tuple[np.ndarray[Any, Any], ...]:
        """``(x, y)`` of one role (None: every branch pooled); ``y`` per ``fit_on`` (default: the setting)."""
        target = self.config.fit_on if fit_on is None else fit_on
        if target not in FIT_TARGETS:
            raise ValueError(f"fit_on: expected one of {list(FIT_TARGETS)}, got {target!r}")
        chosen = [s for s in self.series if role is None or s.role == role]
        x = [v for s in chosen for v in s.x]
        y = [v for s in chosen for v in (s.y_output if target == "output" else s.y_blocks)]
        return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)

    def fit(self, degree: int = 4, fit_on: str | None = None) -> dict[str, TeaCacheFit]:
        """Fits per role and pooled: ``{"pooled": ..., "cond": ..., "uncond": ...}`` (roles without enough points
        are left out; the pooled fit is required)."""
        x, y = self.points(None, fit_on)
        if x.size == 0:
            raise ValueError(
                "calibrate: no calibration points; run at least one complete generation of 2 or more steps with "
                "the calibrator applied"
            )
        fits = {"pooled": fit_teacache_coefficients(x, y, degree)}
        for role in self.roles():
            rx, ry = self.points(role, fit_on)
            try:
                fits[role] = fit_teacache_coefficients(rx, ry, degree)
            except ValueError as exc:
                _log.warning("calibrate.branch_not_fitted", role=role, reason=str(exc))
        return fits

    def profile(
        self,
        model: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        degree: int = 4,
        fit_on: str | None = None,
    ) -> Profile:
        """The recorded points and their fits as a ``"teacache"`` :class:`~ditcache.profiles.Profile`."""
        target = self.config.fit_on if fit_on is None else fit_on
        fits = self.fit(degree, target)
        pooled = fits["pooled"]
        steps = {len(s.steps) + 1 for s in self.series if s.x}
        points: dict[str, dict[str, list[float] | list[int]]] = {}
        for role in self.roles():
            chosen = [s for s in self.series if s.role == role]
            points[role] = {
                "step": [v for s in chosen for v in s.steps],
                "x": [round6(v) for s in chosen for v in s.x],
                "y_output": [round6(v) for s in chosen for v in s.y_output],
                "y_blocks": [round6(v) for s in chosen for v in s.y_blocks],
            }
        data: dict[str, Any] = {
            **pooled.as_dict(),
            "branches": {role: fit.as_dict() for role, fit in fits.items() if role != "pooled"},
            "indicator": self.config.indicator,
            "fit_on": target,
            "num_steps": max(steps) if steps else None,
            "generations": sum(1 for s in self.series if s.x),
            "points": points,
        }
        from ditcache.core.version import VERSION as __version__

        meta: dict[str, Any] = {
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "module_class": self._module_class,
            "ditcache_version": __version__,
            "torch_version": torch.__version__,
            "x": "mean|m_t - m_{t-1}| / mean|m_{t-1}| of the indicator "
            f"({self.config.indicator or 'modulated input'}) between consecutive steps of one branch",
            "y": f"the same relative L1 change of the {'model output' if target == 'output' else 'block-stack output'}",
            "fit": f"numpy.polyfit(x, y, {degree}), coefficients highest power first",
        }
        meta.update(metadata or {})
        return Profile(kind="teacache", model=model or self._module_class, data=data, metadata=meta)
