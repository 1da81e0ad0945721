"""Calibrate TeaCache coefficients and MagCache ratios for any model with an extractor.

TeaCache decides from a cheap indicator (the modulated input of the first block) how much the model's output
would change since the last computed step; the map from one to the other is a 4th-order polynomial fitted per
model (reference/algorithms.md §1.6, after the TeaCache authors' answers in ali-vilab/TeaCache issues #2 and
#65). Calibration runs the model *uncached* and records, per CFG branch and step:

* ``x``: ``mean|m_t - m_{t-1}| / mean|m_{t-1}|``, the relative L1 change of the indicator between consecutive steps
  of the same branch (the previous step in the denominator, as TeaCache's Eq. 4), exactly what TeaCache computes at
  inference;
* ``y``: the same relative L1 change of the model's output (the velocity/noise prediction returned by the
  transformer, the ``y`` of the paper's fit). The change of the block stack's output is recorded too (``fit_on=
  "blocks"``, what vLLM-Omni's estimator fits) as a diagnostic.

:func:`fit_teacache_coefficients` fits ``y ~ poly(x)`` with ``numpy.polyfit`` (degree 4 by default) and reports
R^2; :func:`calibrate` fits every branch and the pooled points, and measures MagCache's magnitude ratios in the same
uncached runs through ``MagCacheConfig(calibrate=True)`` (averaged over the samples). The results are two profiles
(``ditcache.profiles``): kind ``"teacache"`` (pooled and per-branch coefficients, R^2, point count, x range, the raw
points) and kind ``"magcache"`` (per-branch ratio curves), loaded with ``TeaCacheConfig(profile=...)`` and
``MagCacheConfig(profile=...)``.

``calibrate(method="search")`` (``ditcache calibrate --method search``) chooses TeaCache's polynomial by the
quality/speed trade-off instead (:func:`search_teacache_coefficients`): it runs TeaCache with a few candidate
polynomials (a constant, the regression fit, ``1 + a x`` and ``1 + a x + c x^2``) at thresholds bracketing a few
target computed fractions, measures the PSNR against the uncached outputs of calibration seeds, and keeps the best
on average; the profile then holds one polynomial for every branch, the search record and a threshold table.

A model is calibrated through a :class:`CalibrationTarget`: the transformer (what the caches hook) and a function
``run(num_steps, seed)`` that runs one complete generation with it, returning the generated output. The command
line (``ditcache calibrate``) builds one from an import path ``package.module:factory``; the default is the bundled
digits model (:func:`digits_dit_target`).
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import inspect
import json
import math
import sys
import tempfile
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch
from torch import nn

from ditcache.caches.reuse import output_tensor
from ditcache.core.branch import is_auto_branch
from ditcache.core.cache import CacheMiddleware, CallNextBlocks
from ditcache.core.context import BlockOutput, CacheContext
from ditcache.core.extractor import Extractor, get_extractor
from ditcache.core.log import get_logger
from ditcache.core.metrics import rel_l1
from ditcache.core.runtime import apply_cache, get_cache_runtime, refresh, remove_cache
from ditcache.profiles import Profile, ProfileError, profile_dir, profile_path, save_profile
from ditcache.tools.argtypes import float_list, int_in, number_at_least

__all__ = [
    "DEFAULT_TARGET",
    "FIT_TARGETS",
    "METHODS",
    "CalibrationError",
    "CalibrationResult",
    "CalibrationTarget",
    "CoefficientSearch",
    "SearchCandidate",
    "SearchSettings",
    "TeaCacheCalibrator",
    "TeaCacheFit",
    "TradeoffPoint",
    "add_parser",
    "calibrate",
    "digits_dit_target",
    "evaluate_teacache",
    "fit_teacache_coefficients",
    "load_target",
    "search_teacache_coefficients",
]

_log = get_logger("ditcache.calibration.calibrate")

DEFAULT_TARGET = "ditcache.calibration.calibrate:digits_dit_target"
"""The import path of the target ``ditcache calibrate`` uses without ``--model``: the bundled digits model."""

FIT_TARGETS = ("output", "blocks")
"""What ``y`` measures: the model's output (TeaCache's definition) or the block stack's output."""

_MAX_DEGREE = 4  # TeaCache evaluates a polynomial of at most 4th order (5 coefficients)


class CalibrationError(ValueError):
    """A calibration input is invalid; :attr:`argument` names it (``model``, ``config``, ``out``, ...)."""

    def __init__(self, argument: str, message: str) -> None:
        super().__init__(f"{argument}: {message}")
        self.argument = argument
        self.message = message


# ------------------------------------------------------------------------------------------------ the fit
@attrs.frozen
class TeaCacheFit:
    """A polynomial fit ``y ~ poly(x)`` of TeaCache calibration points."""

    coefficients: tuple[float, ...]
    """``degree + 1`` numbers, highest power first (``numpy.poly1d`` order)."""
    r2: float
    """Coefficient of determination on the fitted points (1 = perfect; 0 = no better than the mean of y)."""
    n: int
    """Number of points fitted."""
    x_range: tuple[float, float]
    """Smallest and largest ``x`` fitted: the polynomial is only trustworthy inside."""
    y_range: tuple[float, float]
    """Smallest and largest ``y`` fitted."""
    degree: int
    """Degree of the polynomial."""

    @property
    def teacache_coefficients(self) -> tuple[float, float, float, float, float]:
        """The 5 numbers ``[c4, c3, c2, c1, c0]`` TeaCache takes (leading zeros for a lower degree)."""
        padded = (0.0,) * (_MAX_DEGREE + 1 - len(self.coefficients)) + self.coefficients
        return padded  # type: ignore[return-value]

    def __call__(self, x: float | np.ndarray[Any, Any]) -> Any:
        """The polynomial at ``x`` (a number or an array)."""
        return np.polyval(np.asarray(self.coefficients, dtype=np.float64), x)

    def as_dict(self) -> dict[str, Any]:
        """The JSON-ready form stored in a profile (``coefficients`` padded to 5 numbers)."""
        return {
            "coefficients": list(self.teacache_coefficients),
            "degree": self.degree,
            "r2": self.r2,
            "n": self.n,
            "x_range": list(self.x_range),
            "y_range": list(self.y_range),
        }


def fit_teacache_coefficients(
    x: Sequence[float] | np.ndarray[Any, Any], y: Sequence[float] | np.ndarray[Any, Any], degree: int = 4
) -> TeaCacheFit:
    """Least-squares fit of ``y ~ poly(x)`` (``numpy.polyfit``), as the TeaCache authors calibrate.

    ``x`` and ``y`` are equally long sequences of finite numbers (the indicator's and the output's relative L1
    changes); ``degree`` is 1-4 (TeaCache evaluates at most a 4th-order polynomial). Needs at least ``degree + 1``
    distinct ``x`` values. Returns the coefficients (highest power first), R^2, the point count and the ranges.
    """
    if isinstance(degree, bool) or not isinstance(degree, int) or not 1 <= degree <= _MAX_DEGREE:
        raise ValueError(f"degree: expected an int in [1, {_MAX_DEGREE}], got {degree!r}")
    xs = np.asarray(x, dtype=np.float64).reshape(-1)
    ys = np.asarray(y, dtype=np.float64).reshape(-1)
    if xs.shape != ys.shape:
        raise ValueError(f"y: expected as many values as x ({xs.size}), got {ys.size}")
    for name, values in (("x", xs), ("y", ys)):
        if not np.all(np.isfinite(values)):
            raise ValueError(f"{name}: every value must be finite, got {values[~np.isfinite(values)][:3].tolist()}")
    distinct = np.unique(xs).size
    if distinct < degree + 1:
        raise ValueError(
            f"x: a degree-{degree} fit needs at least {degree + 1} distinct x values, got {distinct} "
            f"({xs.size} points); run more steps or samples"
        )
    coefficients = np.polyfit(xs, ys, degree)
    residual = ys - np.polyval(coefficients, xs)
    ss_res = float(np.sum(residual**2))
    ss_tot = float(np.sum((ys - ys.mean()) ** 2))
    if ss_tot > 0:
        r2 = 1.0 - ss_res / ss_tot
    else:  # constant y: perfect if the fit reproduces it
        r2 = 1.0 if ss_res <= 1e-24 * max(1.0, float(np.sum(ys**2))) else 0.0
    return TeaCacheFit(
        coefficients=tuple(float(c) for c in coefficients),
        r2=float(r2),
        n=int(xs.size),
        x_range=(float(xs.min()), float(xs.max())),
        y_range=(float(ys.min()), float(ys.max())),
        degree=degree,
    )


# ------------------------------------------------------------------------------------------------ the recorder
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
    (``cond``/``uncond``) of a named branch comes from its name (``uncond*``/``negative*`` is ``uncond``); unnamed
    (automatic) branches are ordered by first appearance after each refresh: the first is ``cond``, the others
    ``uncond``. It computes the model's head once more per call to read the output (calibration only).
    """

    name = "teacache-calibration"
    order = 0
    level = None  # never skips: stacks with MagCache's calibration mode

    def __init__(self, indicator: str | None = None, fit_on: str = "output") -> None:
        if indicator is not None and (not isinstance(indicator, str) or not indicator):
            raise TypeError(f"indicator: expected a non-empty extra_states key or None, got {indicator!r}")
        if fit_on not in FIT_TARGETS:
            raise ValueError(f"fit_on: expected one of {list(FIT_TARGETS)}, got {fit_on!r}")
        super().__init__(_CalibratorSettings(indicator, fit_on))
        self.series: list[_Series] = []
        self._auto_roles: dict[Hashable, str] = {}
        self._module_class: str | None = None

    def bind(self, module: nn.Module, num_blocks: int) -> None:
        self._module_class = type(module).__name__

    def new_state(self) -> _CalState:
        return _CalState()

    def reset(self) -> None:
        super().reset()
        self._auto_roles = {}

    def clear(self) -> None:
        """Drop every recorded point."""
        self.series = []
        self.reset()

    def _role(self, branch: Hashable) -> str:
        if not is_auto_branch(branch):
            if isinstance(branch, str) and branch.lower().startswith(("uncond", "negative")):
                return "uncond"
            return "cond"
        role = self._auto_roles.get(branch)
        if role is None:
            role = "uncond" if self._auto_roles else "cond"
            self._auto_roles[branch] = role
        return role

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
            state.series = _Series(branch=str(ctx.branch), role=self._role(ctx.branch))
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
                "x": [_round(v) for s in chosen for v in s.x],
                "y_output": [_round(v) for s in chosen for v in s.y_output],
                "y_blocks": [_round(v) for s in chosen for v in s.y_blocks],
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


def _round(value: float) -> float:
    return float(f"{value:.6g}")


# ------------------------------------------------------------------------------------------------ targets
def _module(inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, nn.Module):
        raise TypeError(f"CalibrationTarget.transformer: expected a torch.nn.Module, got {type(value).__name__}")


def _callable(inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not callable(value):
        raise TypeError(f"CalibrationTarget.run: expected a callable run(num_steps, seed), got {type(value).__name__}")


def _opt_name(inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    try:
        if not isinstance(value, str) or any(c in value for c in "/\\") or value.endswith(".json"):
            raise ProfileError("not a plain name")
        profile_path(value)
    except ProfileError:
        raise ValueError(
            f"CalibrationTarget.name: expected a profile name (letters, digits, '.', '_' and '-'), got {value!r}"
        ) from None


def _opt_range(inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0
    ):
        raise ValueError(f"CalibrationTarget.data_range: expected a finite number > 0 or None, got {value!r}")


def _as_dict(value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise TypeError(f"CalibrationTarget.metadata: expected a mapping, got {type(value).__name__}")
    return dict(value)


@attrs.frozen(kw_only=True)
class CalibrationTarget:
    """What calibration needs from a model: the transformer the caches hook and a way to run generations.

    ``run(num_steps, seed)`` runs one complete generation of ``num_steps`` denoising steps with ``transformer``
    (every CFG branch as the pipeline does it: separate calls inside ``transformer.cache_context("cond")`` /
    ``("uncond")`` as diffusers pipelines do, or ``ditcache.cfg_branch``) and returns the generated output as a
    tensor with the batch first (latents or images; only :func:`evaluate_teacache` uses it). A factory for the
    command line returns one (``ditcache calibrate --model package.module:factory``); an object with the
    attributes ``transformer`` and ``run`` (and optionally ``name``, ``extractor``, ``data_range``) works too.
    """

    transformer: nn.Module = attrs.field(validator=_module)
    """The denoiser that the caches are applied to (it needs a registered extractor, or pass ``extractor``)."""
    run: Callable[[int, int], Any] = attrs.field(validator=_callable)
    """``run(num_steps, seed)``: one complete generation; returns the output tensor (or None)."""
    name: str | None = attrs.field(default=None, validator=_opt_name)
    """Profile name (default: the transformer's class name)."""
    extractor: Extractor | str | None = None
    """The extractor to use (default: the one registered for the transformer's class)."""
    data_range: float | None = attrs.field(default=None, validator=_opt_range)
    """Peak-to-peak range of the output for PSNR (None: each reference item's max - min)."""
    metadata: dict[str, Any] = attrs.field(factory=dict, converter=_as_dict)
    """Settings recorded in the profiles (guidance scale, resolution, ...)."""

    @property
    def profile_name(self) -> str:
        """:attr:`name`, or the transformer's class name."""
        return self.name or type(self.transformer).__name__


def digits_dit_target(
    guidance_scale: float | None = 3.0,
    labels: Sequence[int] | None = None,
    device: str = "cpu",
    shift: float = 1.0,
) -> CalibrationTarget:
    """The bundled digits model (``ditcache.bundled``) as a calibration target.

    One generation samples ``labels`` (default: the ten digits, one image each) with the Euler sampler, with
    classifier-free guidance ``guidance_scale`` (separate ``cond``/``uncond`` calls; None or 1.0: no guidance);
    the output is the images in [0, 1] (``data_range`` 1).
    """
    from ditcache.bundled import load_digits_dit, sample

    model = load_digits_dit(device)
    chosen = list(range(10)) if labels is None else [int(v) for v in labels]

    def run(num_steps: int, seed: int) -> torch.Tensor:
        return sample(model, chosen, num_steps, guidance_scale, seed, shift=shift)

    return CalibrationTarget(
        transformer=model.transformer,
        run=run,
        name="digits-dit",
        data_range=1.0,
        metadata={"target": "ditcache digits DiT", "guidance_scale": guidance_scale, "labels": chosen, "shift": shift},
    )


def _as_target(obj: Any, where: str) -> CalibrationTarget:
    if isinstance(obj, CalibrationTarget):
        return obj
    transformer, run = getattr(obj, "transformer", None), getattr(obj, "run", None)
    if isinstance(transformer, nn.Module) and callable(run):
        return CalibrationTarget(
            transformer=transformer,
            run=run,
            name=getattr(obj, "name", None),
            extractor=getattr(obj, "extractor", None),
            data_range=getattr(obj, "data_range", None),
        )
    raise CalibrationError(
        "model",
        f"{where} returned a {type(obj).__name__}; expected a ditcache.calibration.CalibrationTarget (or an object "
        "with a `transformer` nn.Module and a `run(num_steps, seed)` method)",
    )


def load_target(spec: str | None = None, config: Mapping[str, Any] | None = None) -> CalibrationTarget:
    """Import ``package.module:factory`` (default: :data:`DEFAULT_TARGET`) and call ``factory(**config)``.

    Raises :class:`CalibrationError` naming ``model`` (bad import path, not callable, wrong return type, no
    extractor for the transformer) or ``config`` (arguments the factory does not accept).
    """
    spec = DEFAULT_TARGET if spec is None else spec
    kwargs = dict(config or {})
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise CalibrationError("model", f"expected an import path 'package.module:factory', got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any import failure is a bad --model
        raise CalibrationError("model", f"cannot import module {module_name!r}: {type(exc).__name__}: {exc}") from exc
    factory: Any = module
    for part in attr.split("."):
        if not hasattr(factory, part):
            raise CalibrationError("model", f"module {module_name!r} has no attribute {attr!r}")
        factory = getattr(factory, part)
    if not callable(factory):
        raise CalibrationError("model", f"{spec!r} is not callable (got a {type(factory).__name__})")
    try:
        inspect.signature(factory).bind(**kwargs)
    except TypeError as exc:
        raise CalibrationError("config", f"the factory {spec!r} does not accept {sorted(kwargs)}: {exc}") from None
    except ValueError:  # no signature available (builtins): let the call decide
        pass
    target = _as_target(factory(**kwargs), f"the factory {spec!r}")
    extractor = target.extractor
    if not isinstance(extractor, Extractor):
        try:
            get_extractor(target.transformer if extractor is None else extractor)
        except ValueError as exc:
            raise CalibrationError("model", str(exc)) from None
    return target


# ------------------------------------------------------------------------------------------------ calibrate
@attrs.frozen
class CalibrationResult:
    """The profiles of one calibration run and the fits behind the TeaCache one."""

    name: str
    """The profile name the files are written under."""
    teacache: Profile
    """Kind ``"teacache"``: pooled and per-branch coefficients, R^2, point counts, x ranges, the raw points (with
    ``method="search"``: the chosen polynomial, the search record, the threshold table and the fits)."""
    magcache: Profile | None
    """Kind ``"magcache"``: per-branch ratio curves (averaged over the samples), or None if not measured."""
    fits: dict[str, TeaCacheFit]
    """``"pooled"`` and one per branch role with enough points (``"cond"``, ``"uncond"``)."""
    search: CoefficientSearch | None = None
    """With ``method="search"``: the candidates judged and the chosen coefficients (the profile's)."""

    def profiles(self) -> dict[str, Profile]:
        """The profiles by kind."""
        out = {"teacache": self.teacache}
        if self.magcache is not None:
            out["magcache"] = self.magcache
        return out

    def paths(self, directory: str | Path | None = None) -> dict[str, Path]:
        """Where :meth:`save` writes each profile: ``<directory>/<name>.<kind>.json``."""
        base = profile_dir() if directory is None else Path(directory).expanduser()
        return {kind: base / f"{self.name}.{kind}.json" for kind in self.profiles()}

    def save(self, directory: str | Path | None = None, *, overwrite: bool = True) -> dict[str, Path]:
        """Write the profiles to ``directory`` (default: the profile directory, so that ``TeaCacheConfig(
        profile=name)`` and ``MagCacheConfig(profile=name)`` find them); returns the files by kind."""
        paths = self.paths(directory)
        return {kind: save_profile(p, paths[kind], overwrite=overwrite) for kind, p in self.profiles().items()}


def _check_int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value!r}")
    return value


def _average_magcache(profiles: list[Profile], name: str, metadata: Mapping[str, Any]) -> Profile:
    """The elementwise mean of the per-sample MagCache profiles (same roles, same step count)."""
    first = profiles[0]
    data = dict(first.data)
    for key in ("curves", "std", "cosine_distance"):
        per_role: dict[str, list[float]] = {}
        for role in first.data[key]:
            rows = np.asarray([p.data[key][role] for p in profiles], dtype=np.float64)
            per_role[role] = [_round(v) for v in rows.mean(axis=0).tolist()]
        data[key] = per_role
    data["samples"] = len(profiles)
    meta = {**first.metadata, **metadata, "averaged_over_samples": len(profiles)}
    return Profile(kind="magcache", model=name, data=data, metadata=meta)


def calibrate(
    target: CalibrationTarget,
    *,
    num_steps: int = 50,
    samples: int = 4,
    seed: int = 0,
    degree: int = 4,
    indicator: str | None = None,
    fit_on: str = "output",
    magcache: bool = True,
    on_sample: Callable[[int, int, float], None] | None = None,
    method: str = "regression",
    search: SearchSettings | None = None,
    on_candidate: Callable[[int, int, SearchCandidate], None] | None = None,
) -> CalibrationResult:
    """Run ``samples`` uncached generations of ``num_steps`` steps (seeds ``seed``, ``seed + 1``, ...) and fit.

    Records TeaCache's points with a :class:`TeaCacheCalibrator` and, with ``magcache=True``, MagCache's ratios
    with ``MagCacheConfig(calibrate=True)`` in the same runs; both are removed afterwards. ``on_sample(index,
    seed, seconds)`` is called after each generation. The transformer must have no cache applied.

    ``method`` (one of :data:`METHODS`) decides the profile's coefficients: ``"regression"`` stores the
    least-squares fits (pooled and per branch); ``"search"`` then runs :func:`search_teacache_coefficients` with
    ``search`` (default :class:`SearchSettings`) on the first ``search.samples`` calibration seeds, whose uncached
    outputs are the references (``target.run`` must return the output tensor), calling ``on_candidate(index,
    budget, candidate)`` after each candidate; it stores one shared polynomial for every branch, the search record
    (``data.search``), the threshold table (``data.thresholds``) and the regression fits (``data.regression``).
    """
    from ditcache.caches.magcache import MagCacheConfig, apply_magcache_hook

    if not isinstance(target, CalibrationTarget):
        raise TypeError(f"target: expected a CalibrationTarget, got {type(target).__name__}")
    _check_int(num_steps, "num_steps", 2)
    _check_int(samples, "samples", 1)
    _check_int(seed, "seed", 0)
    if isinstance(degree, bool) or not isinstance(degree, int) or not 1 <= degree <= _MAX_DEGREE:
        raise ValueError(f"degree: expected an int in [1, {_MAX_DEGREE}], got {degree!r}")
    if method not in METHODS:
        raise ValueError(f"method: expected one of {list(METHODS)}, got {method!r}")
    settings = SearchSettings() if search is None else search
    if not isinstance(settings, SearchSettings):
        raise TypeError(f"search: expected a SearchSettings or None, got {type(settings).__name__}")
    if method == "search" and settings.samples > samples:
        raise ValueError(
            f"search: samples={settings.samples} exceeds the calibration samples ({samples}); the search judges "
            "the candidates on calibration seeds"
        )
    module = target.transformer
    runtime = get_cache_runtime(module)
    if runtime is not None and runtime.middlewares:
        raise ValueError(
            f"target.transformer: caches {[m.name for m in runtime.middlewares]} are applied; remove them "
            "(ditcache.remove_cache) first: calibration measures the uncached model"
        )
    recorder = apply_cache(module, TeaCacheCalibrator(indicator, fit_on), extractor=target.extractor)
    mag_profiles: list[Profile] = []
    seeds = [seed + k for k in range(samples)]
    references: list[torch.Tensor] = []  # uncached outputs of the search seeds (calibration never skips)
    try:
        mag = apply_magcache_hook(module, MagCacheConfig(calibrate=True)) if magcache else None
        for k, s in enumerate(seeds):
            refresh(module, num_steps)
            start = time.perf_counter()
            with torch.no_grad():
                output = target.run(num_steps, s)
            if method == "search" and k < settings.samples:
                try:
                    references.append(_check_output(output))
                except TypeError as exc:
                    raise TypeError(f"{exc} (method='search' compares cached and uncached outputs)") from None
            if not recorder.series:
                raise ValueError(
                    "target.run: the transformer was never called with the calibrator applied; run(num_steps, "
                    "seed) must call target.transformer"
                )
            if mag is not None:
                mag_profiles.append(mag.calibration_profile(model=target.profile_name))
            if on_sample is not None:
                on_sample(k, s, time.perf_counter() - start)
    finally:
        remove_cache(module, TeaCacheCalibrator.name)
        if magcache:
            remove_cache(module, "magcache")
    from ditcache.core.version import VERSION as __version__

    metadata = {
        **target.metadata,
        "num_steps": num_steps,
        "samples": samples,
        "seeds": seeds,
        "ditcache_version": __version__,
    }
    name = target.profile_name
    fits = recorder.fit(degree, fit_on)
    tea = recorder.profile(model=name, metadata=metadata, degree=degree, fit_on=fit_on)
    found: CoefficientSearch | None = None
    if method == "search":
        found = search_teacache_coefficients(
            target,
            [s.x for s in recorder.series if s.x],
            num_steps=num_steps,
            seeds=seeds[: settings.samples],
            regression=fits["pooled"].coefficients,
            settings=settings,
            references=references,
            indicator=indicator,
            on_candidate=on_candidate,
        )
        tea = _search_profile(tea, found)
    else:
        tea = attrs.evolve(tea, data={**tea.data, "method": "regression"})
    mag_profile = _average_magcache(mag_profiles, name, metadata) if mag_profiles else None
    return CalibrationResult(name=name, teacache=tea, magcache=mag_profile, fits=fits, search=found)


_FIT_KEYS = ("coefficients", "degree", "r2", "n", "x_range", "y_range", "branches")


def _search_profile(regression: Profile, found: CoefficientSearch) -> Profile:
    """The regression profile turned into the search one: the chosen polynomial for every branch (no
    ``branches``), the search record and threshold table, the regression fits kept under ``regression``."""
    data = dict(regression.data)
    fitted = {key: data.pop(key) for key in _FIT_KEYS if key in data}
    chosen = found.coefficients
    degree = next((_MAX_DEGREE - i for i, c in enumerate(chosen) if c != 0), 0)
    out = {
        "coefficients": list(chosen),
        "degree": degree,
        "x_range": fitted.get("x_range"),
        "method": "search",
        "thresholds": [_run_dict(p) for p in found.thresholds],
        "search": found.as_dict(),
        "regression": fitted,
        **data,
    }
    meta = {
        **regression.metadata,
        "fit": (
            f"coefficients chosen by direct search ({found.chosen.label}): the candidate polynomial with the best "
            f"mean PSNR against uncached outputs at computed fractions {list(found.settings.fractions)}, seeds "
            f"{list(found.seeds)}; one polynomial for every branch; the numpy.polyfit fits are under data.regression"
        ),
    }
    return Profile(kind="teacache", model=regression.model, data=out, metadata=meta)


# ------------------------------------------------------------------------------------------------ evaluation
@attrs.frozen
class TradeoffPoint:
    """Quality and work of one TeaCache setting against the uncached outputs (:func:`evaluate_teacache`)."""

    label: str
    """Which coefficients (e.g. ``"borrowed flux.1-dev"``, ``"calibrated"``)."""
    threshold: float
    """``rel_l1_thresh``."""
    computed_fraction: float
    """Transformer calls that ran the blocks, over all calls (every branch and seed)."""
    psnr: float
    """Mean PSNR (dB) of the outputs against the uncached ones, per batch item; capped at 120 (identical)."""
    psnr_min: float
    """Worst item's PSNR."""


_PSNR_CAP = 120.0


def _psnr(out: torch.Tensor, ref: torch.Tensor, data_range: float | None) -> list[float]:
    a, b = out.detach().double().cpu(), ref.detach().double().cpu()
    if a.shape != b.shape or a.ndim == 0:
        raise ValueError(f"target.run: outputs differ in shape between runs ({tuple(a.shape)} vs {tuple(b.shape)})")
    a, b = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
    mse = ((a - b) ** 2).mean(dim=1)
    peak = torch.full_like(mse, data_range) if data_range is not None else (b.max(dim=1).values - b.min(dim=1).values)
    values = []
    for m, p in zip(mse.tolist(), peak.tolist()):
        values.append(_PSNR_CAP if m <= 0 else min(_PSNR_CAP, 10 * math.log10(max(p, 1e-12) ** 2 / m)))
    return values


def evaluate_teacache(
    target: CalibrationTarget,
    configs: Sequence[tuple[str, Any]],
    *,
    num_steps: int,
    seeds: Sequence[int],
) -> list[TradeoffPoint]:
    """Computed-step fraction and PSNR against the uncached outputs for each ``(label, TeaCacheConfig)``.

    Every config runs the same seeds and steps as the uncached reference; ``target.run`` must return the output
    tensor. A fresh TeaCache is applied per generation and removed afterwards.
    """
    _check_int(num_steps, "num_steps", 1)
    if not seeds:
        raise ValueError("seeds: expected at least one seed")
    references = [_reference(target, num_steps, s) for s in seeds]
    return _evaluate(target, configs, num_steps, seeds, references)


def _reference(target: CalibrationTarget, num_steps: int, seed: int) -> torch.Tensor:
    """One uncached generation's output (the transformer must have no cache applied)."""
    with torch.no_grad():
        ref = target.run(num_steps, seed)
    return _check_output(ref)


def _check_output(value: Any) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"target.run: must return the output tensor for evaluation, got {type(value).__name__}")
    return value


def _evaluate(
    target: CalibrationTarget,
    configs: Sequence[tuple[str, Any]],
    num_steps: int,
    seeds: Sequence[int],
    references: Sequence[torch.Tensor],
) -> list[TradeoffPoint]:
    """:func:`evaluate_teacache` against already computed uncached outputs (one per seed)."""
    from ditcache.caches.teacache import TeaCache, TeaCacheConfig, apply_teacache_hook

    module = target.transformer
    points = []
    for label, config in configs:
        if not isinstance(config, TeaCacheConfig):
            raise TypeError(f"configs: expected (label, TeaCacheConfig) pairs, got {type(config).__name__}")
        psnrs: list[float] = []
        computed = total = 0
        for s, ref in zip(seeds, references):
            cache: TeaCache = apply_teacache_hook(module, config, extractor=target.extractor)
            try:
                refresh(module, num_steps)
                with torch.no_grad():
                    out = target.run(num_steps, s)
                for gen in cache.stats():
                    computed += len(gen.computed_steps)
                    total += len(gen.decisions)
            finally:
                remove_cache(module, "teacache")
            psnrs.extend(_psnr(out, ref, target.data_range))
        points.append(
            TradeoffPoint(
                label=label,
                threshold=float(config.rel_l1_thresh),
                computed_fraction=computed / total if total else 1.0,
                psnr=float(np.mean(psnrs)),
                psnr_min=float(np.min(psnrs)),
            )
        )
    return points


# ------------------------------------------------------------------------------------------------ direct search
METHODS = ("regression", "search")
"""How :func:`calibrate` chooses TeaCache's coefficients: the least-squares fit of the output change on the
indicator change (``"regression"``, the TeaCache authors' procedure), or a direct search of the quality/speed
trade-off over a small family of polynomials (``"search"``, :func:`search_teacache_coefficients`)."""

_MIN_RESCALED = 0.05  # a candidate polynomial must stay above this over the recorded x range (no negative steps)
_GRID_POINTS = 800  # thresholds simulated per candidate to find its operating points
_ROBUST_WIDTH = 1.05  # an operating point is robust when its threshold interval spans 5% or more


def _fractions_converter(value: Any) -> tuple[float, ...]:
    try:
        if isinstance(value, (str, bytes)):
            raise TypeError
        return tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise TypeError(f"SearchSettings.fractions: expected a sequence of numbers in (0, 1), got {value!r}") from None


def _check_fractions(inst: Any, attribute: attrs.Attribute[Any], value: tuple[float, ...]) -> None:
    name = f"SearchSettings.{attribute.name}"
    if not value:
        raise ValueError(f"{name}: expected at least one computed fraction in (0, 1), got none")
    for v in value:
        if not math.isfinite(v) or not 0 < v < 1:
            raise ValueError(f"{name}: every computed fraction must be in (0, 1) (exclusive), got {v!r}")


def _check_positive_int(inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"SearchSettings.{attribute.name}: expected an int >= 1, got {value!r}")


@attrs.frozen(kw_only=True)
class SearchSettings:
    """Settings of :func:`search_teacache_coefficients` (``calibrate(method="search")``)."""

    budget: int = attrs.field(default=12, validator=_check_positive_int)
    """Candidate polynomials evaluated (the constant first, then the regression fit, then the linear and quadratic
    families). Each candidate costs 3-6 cached generations per search seed."""
    samples: int = attrs.field(default=2, validator=_check_positive_int)
    """How many of the calibration seeds (the first ones) the candidates are judged on."""
    fractions: tuple[float, ...] = attrs.field(
        default=(0.2, 0.25, 0.3, 0.35, 0.4), converter=_fractions_converter, validator=_check_fractions
    )
    """Computed fractions the objective averages the PSNR over."""
    table_fractions: tuple[float, ...] = attrs.field(
        default=(0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 0.7),
        converter=_fractions_converter,
        validator=_check_fractions,
    )
    """Computed fractions the threshold table of the chosen coefficients aims at (nearest operating points)."""


@attrs.frozen
class SearchCandidate:
    """One polynomial judged by :func:`search_teacache_coefficients`."""

    label: str
    """``"constant"``, ``"regression"``, ``"linear ..."`` or ``"quadratic ..."`` with the polynomial."""
    coefficients: tuple[float, float, float, float, float]
    """The 5 numbers TeaCache takes, highest power first."""
    runs: tuple[TradeoffPoint, ...]
    """The thresholds run with it: computed fraction and PSNR against the uncached outputs (search seeds)."""
    psnr_at: tuple[float, ...]
    """PSNR (dB) at each target computed fraction, interpolated linearly between the runs."""
    objective: float
    """The mean of :attr:`psnr_at`: what the search maximises."""
    extrapolated: bool
    """True when a target fraction lies outside the measured fractions (the PSNR there is extrapolated)."""

    def as_dict(self) -> dict[str, Any]:
        """The JSON-ready form stored in a profile."""
        return {
            "label": self.label,
            "coefficients": list(self.coefficients),
            "objective": self.objective,
            "psnr_at": list(self.psnr_at),
            "extrapolated": self.extrapolated,
            "runs": [_run_dict(p) for p in self.runs],
        }


def _run_dict(point: TradeoffPoint) -> dict[str, float]:
    return {
        "threshold": point.threshold,
        "computed_fraction": point.computed_fraction,
        "psnr": point.psnr,
        "psnr_min": point.psnr_min,
    }


@attrs.frozen
class CoefficientSearch:
    """The result of :func:`search_teacache_coefficients`."""

    chosen: SearchCandidate
    """The candidate with the highest objective (the earliest one on a tie)."""
    candidates: tuple[SearchCandidate, ...]
    """Every candidate evaluated, in evaluation order."""
    thresholds: tuple[TradeoffPoint, ...]
    """Threshold table of the chosen coefficients, ascending: the computed fraction and PSNR measured."""
    settings: SearchSettings
    """The settings used."""
    seeds: tuple[int, ...]
    """The seeds the candidates were judged on."""
    num_steps: int
    """Denoising steps per generation."""

    @property
    def coefficients(self) -> tuple[float, float, float, float, float]:
        """The chosen coefficients."""
        return self.chosen.coefficients

    def threshold_for(self, fraction: float) -> float:
        """The threshold of the table entry whose measured computed fraction is nearest to ``fraction``."""
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
            raise ValueError(f"fraction: expected a number in (0, 1], got {fraction!r}")
        best = min(self.thresholds, key=lambda p: (abs(p.computed_fraction - fraction), p.threshold))
        return best.threshold

    def as_dict(self) -> dict[str, Any]:
        """The JSON-ready form stored in a profile (``data.search``)."""
        return {
            "objective": (
                "mean PSNR (dB) of the outputs against the uncached ones at computed fractions "
                f"{list(self.settings.fractions)}, each interpolated linearly over the candidate's threshold runs"
            ),
            "fractions": list(self.settings.fractions),
            "budget": self.settings.budget,
            "seeds": list(self.seeds),
            "num_steps": self.num_steps,
            "chosen": self.chosen.label,
            "chosen_objective": self.chosen.objective,
            "candidates": [c.as_dict() for c in self.candidates],
        }


def _padded(coefficients: Sequence[float]) -> tuple[float, float, float, float, float]:
    values = tuple(float(c) for c in coefficients)
    if len(values) > _MAX_DEGREE + 1:
        raise ValueError(f"coefficients: expected at most 5 numbers, got {len(values)}")
    return (0.0,) * (_MAX_DEGREE + 1 - len(values)) + values  # type: ignore[return-value]


def _simulate(values: Sequence[np.ndarray[Any, Any]], thresholds: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Computed fraction of TeaCache's decisions (first step computed, last forced) per threshold, replayed on
    recorded rescaled distances (``values[k][i]``: the rescaled distance at step ``i + 1`` of series ``k``)."""
    computed = np.zeros(thresholds.size)
    total = 0
    for v in values:
        acc = np.zeros(thresholds.size)
        count = np.ones(thresholds.size)  # step 0: warm-up
        for value in v[:-1]:  # steps 1 .. n-2; the last step is forced
            acc += value
            compute = acc >= thresholds
            count += compute
            acc[compute] = 0.0
        computed += count + (1 if v.size else 0)
        total += v.size + 1
    return computed / max(total, 1)


def _operating_points(
    coefficients: Sequence[float], x_series: Sequence[np.ndarray[Any, Any]]
) -> list[tuple[float, float, float]]:
    """``(simulated computed fraction, threshold, width)`` per distinct fraction, threshold ascending: the
    threshold is the geometric middle of the widest threshold interval giving that fraction on the recorded
    points, ``width`` the ratio of the interval's ends (1: a single grid point; narrow intervals are fragile, the
    decisions of unseen generations differ)."""
    values = [np.polyval(np.asarray(coefficients, dtype=np.float64), x) for x in x_series]
    pooled = np.concatenate(values) if values else np.zeros(0)
    positive = pooled[pooled > 0]
    if positive.size == 0:
        return []
    lo = 0.25 * float(positive.min())
    hi = 1.5 * max(float(np.clip(v, 0, None).sum()) for v in values) + lo
    grid = np.geomspace(lo, hi, _GRID_POINTS)
    fractions = np.round(_simulate(values, grid), 9)
    widest: dict[float, tuple[float, float]] = {}  # fraction -> (lo, hi) of its widest contiguous interval
    start = 0
    for i in range(1, grid.size + 1):
        if i == grid.size or fractions[i] != fractions[start]:
            f, lo_t, hi_t = float(fractions[start]), float(grid[start]), float(grid[i - 1])
            if f not in widest or hi_t / lo_t > widest[f][1] / widest[f][0]:
                widest[f] = (lo_t, hi_t)
            start = i
    points = [(f, float(f"{math.sqrt(lo_t * hi_t):.4g}"), hi_t / lo_t) for f, (lo_t, hi_t) in widest.items()]
    points.sort(key=lambda p: p[1])
    return points


def _bracket(points: Sequence[tuple[float, float, float]], fraction: float) -> list[int]:
    """Indices (into ``points``) of the operating points nearest above and below ``fraction``, preferring robust
    ones (threshold interval at least 5% wide) when there are."""

    def pick(side: list[int]) -> list[int]:
        robust = [i for i in side if points[i][2] >= _ROBUST_WIDTH]
        pool = robust or side
        return [min(pool, key=lambda i: abs(points[i][0] - fraction))] if pool else []

    return pick([i for i, p in enumerate(points) if p[0] >= fraction]) + pick(
        [i for i, p in enumerate(points) if p[0] <= fraction]
    )


def _nearest(points: Sequence[tuple[float, float, float]], fraction: float) -> int:
    """Index of the robust operating point (or any, when none is robust) nearest to ``fraction``."""
    robust = [i for i, p in enumerate(points) if p[2] >= _ROBUST_WIDTH] or list(range(len(points)))
    return min(robust, key=lambda i: abs(points[i][0] - fraction))


def _interpolate(runs: Sequence[TradeoffPoint], fraction: float) -> tuple[float, bool]:
    """PSNR at ``fraction``, linear between the runs' (fraction, PSNR) (equal fractions averaged); outside the
    measured range, extrapolated from the two nearest points (``True`` second)."""
    by_fraction: dict[float, list[float]] = {}
    for p in runs:
        by_fraction.setdefault(round(p.computed_fraction, 9), []).append(p.psnr)
    xs = np.asarray(sorted(by_fraction))
    ys = np.asarray([float(np.mean(by_fraction[f])) for f in xs.tolist()])
    if xs.size == 1:
        return float(ys[0]), not math.isclose(float(xs[0]), fraction, abs_tol=1e-9)
    if xs[0] <= fraction <= xs[-1]:
        return float(np.interp(fraction, xs, ys)), False
    i, j = (0, 1) if fraction < xs[0] else (-2, -1)
    slope = (ys[j] - ys[i]) / (xs[j] - xs[i])
    value = float(ys[i] + slope * (fraction - xs[i]))
    return min(_PSNR_CAP, max(0.0, value)), True


def _family_label(u: float, v: float, x_ref: float) -> tuple[str, tuple[float, float, float, float, float]]:
    """The polynomial ``1 + u (x / x_ref) + v (x / x_ref)^2`` as a label and 5 coefficients (6 significant digits,
    so that a candidate reached twice by the search is recognised)."""
    c1, c2 = _round(u / x_ref) + 0.0, _round(v / x_ref**2) + 0.0  # + 0.0: no negative zero
    coefficients = (0.0, 0.0, c2, c1, 1.0)
    if u == 0 and v == 0:
        return "constant 1", coefficients
    text = f"1 {'+' if c1 >= 0 else '-'} {abs(c1):.4g}x"
    if v == 0:
        return f"linear {text}", coefficients
    return f"quadratic {text} {'+' if c2 >= 0 else '-'} {abs(c2):.4g}x^2", coefficients


def search_teacache_coefficients(
    target: CalibrationTarget,
    x_series: Sequence[Sequence[float]],
    *,
    num_steps: int,
    seeds: Sequence[int],
    regression: Sequence[float] | None = None,
    settings: SearchSettings | None = None,
    references: Sequence[torch.Tensor] | None = None,
    indicator: str | None = None,
    on_candidate: Callable[[int, int, SearchCandidate], None] | None = None,
) -> CoefficientSearch:
    """Choose TeaCache coefficients by measuring the quality/speed trade-off of a few candidate polynomials.

    ``x_series`` are the recorded indicator changes of uncached runs (one sequence per branch and generation, steps
    ``1 .. num_steps - 1``; :meth:`TeaCacheCalibrator.points` pooled per series). The candidates, in order, within
    ``settings.budget``: the constant ``1`` (a fixed schedule: compute every k-th step), ``regression`` (the least-
    squares fit, when given), ``1 + u q`` for ``u`` in 1, 3, 1/3, 9, refinements of the best ``u``, then
    ``1 + u q + v q^2`` around it (``q = x / max x``; every candidate is normalised to 1 at ``x = 0`` and must stay
    above 0.05 over the recorded range). For each candidate the recorded points are replayed to find the
    thresholds whose computed fractions bracket each of ``settings.fractions``; those thresholds are then run for
    real (TeaCache with one shared polynomial for every branch, ``warmup_steps=1``, last step forced) on ``seeds``
    against the uncached outputs (``references``, computed when None), and the PSNR at each target fraction is
    interpolated. The candidate with the highest mean PSNR wins; a threshold table is then measured for it.
    ``indicator`` is the ``extra_states`` key the points were recorded with (None: the modulated input).
    ``on_candidate(index, budget, candidate)`` is called after each candidate.
    """
    from ditcache.caches.teacache import TeaCacheConfig

    settings = SearchSettings() if settings is None else settings
    if not isinstance(settings, SearchSettings):
        raise TypeError(f"settings: expected a SearchSettings or None, got {type(settings).__name__}")
    _check_int(num_steps, "num_steps", 2)
    if not seeds:
        raise ValueError("seeds: expected at least one seed")
    series = [np.asarray(s, dtype=np.float64).reshape(-1) for s in x_series]
    series = [s for s in series if s.size]
    if not series:
        raise ValueError("x_series: expected recorded indicator changes, got none")
    if not all(np.all(np.isfinite(s)) for s in series):
        raise ValueError("x_series: every value must be finite")
    x_all = np.concatenate(series)
    x_lo, x_ref = float(x_all.min()), float(x_all.max())
    if x_ref <= 0:
        raise ValueError(f"x_series: expected positive indicator changes, got a largest value of {x_ref!r}")
    if references is None:
        references = [_reference(target, num_steps, s) for s in seeds]
    elif len(references) != len(seeds):
        raise ValueError(f"references: expected one output per seed ({len(seeds)}), got {len(references)}")
    measured: dict[tuple[tuple[float, ...], float], TradeoffPoint] = {}

    def measure(label: str, coefficients: tuple[float, ...], thresholds: Sequence[float]) -> list[TradeoffPoint]:
        todo = sorted({t for t in thresholds if (coefficients, t) not in measured})
        configs = [
            (label, TeaCacheConfig(rel_l1_thresh=t, coefficients=coefficients, indicator=indicator)) for t in todo
        ]
        for t, point in zip(todo, _evaluate(target, configs, num_steps, list(seeds), list(references))):
            measured[(coefficients, t)] = point
        return [measured[(coefficients, t)] for t in sorted(set(thresholds))]

    candidates: list[SearchCandidate] = []
    seen: set[tuple[float, ...]] = set()

    def judge(label: str, coefficients: tuple[float, float, float, float, float], family: bool = True) -> None:
        if len(candidates) >= settings.budget or coefficients in seen:
            return
        grid = np.linspace(x_lo, x_ref, 64)
        if family and float(np.polyval(np.asarray(coefficients), grid).min()) < _MIN_RESCALED:
            _log.info("calibrate.search_skipped", candidate=label, reason="not positive over the recorded x range")
            return
        seen.add(coefficients)
        points = _operating_points(coefficients, series)
        if not points:
            return
        wanted = {i for f in settings.fractions for i in _bracket(points, f)}
        runs = measure(label, coefficients, [points[i][1] for i in wanted])
        # the replay predicts the real fractions closely but not exactly: widen once where a target is not bracketed
        index = {p[1]: i for i, p in enumerate(points)}
        extra: set[int] = set()
        for f in settings.fractions:
            fractions = [p.computed_fraction for p in runs]
            if min(fractions) > f:  # every run computes more: add the next larger threshold
                i = max(index[p.threshold] for p in runs) + 1
                if i < len(points):
                    extra.add(i)
            if max(fractions) < f:
                i = min(index[p.threshold] for p in runs) - 1
                if i >= 0:
                    extra.add(i)
        if extra:
            runs = measure(label, coefficients, [p.threshold for p in runs] + [points[i][1] for i in extra])
        at = [_interpolate(runs, f) for f in settings.fractions]
        candidate = SearchCandidate(
            label=label,
            coefficients=coefficients,
            runs=tuple(sorted(runs, key=lambda p: p.threshold)),
            psnr_at=tuple(v for v, _ in at),
            objective=float(np.mean([v for v, _ in at])),
            extrapolated=any(e for _, e in at),
        )
        candidates.append(candidate)
        _log.info("calibrate.search_candidate", candidate=label, objective=round(candidate.objective, 3))
        if on_candidate is not None:
            on_candidate(len(candidates), settings.budget, candidate)

    members: dict[tuple[float, ...], tuple[float, float]] = {}

    def uv(u: float, v: float = 0.0) -> None:
        label, coefficients = _family_label(u, v, x_ref)
        members[coefficients] = (u, v)
        judge(label, coefficients)

    def best(linear_only: bool = False) -> tuple[float, float]:
        pool = [c for c in candidates if c.coefficients in members]
        if linear_only:
            pool = [c for c in pool if members[c.coefficients][1] == 0]
        if not pool:
            return 0.0, 0.0
        return members[max(pool, key=lambda c: c.objective).coefficients]

    uv(0.0)
    if regression is not None:
        judge("regression", _padded(regression), family=False)
    for u in (1.0, 3.0, 1 / 3, 9.0):
        uv(u)
    u, _ = best(linear_only=True)
    step = math.sqrt(3.0)
    for u_new in (u * step, u / step) if u > 0 else (1 / 9, -1 / 3):
        uv(u_new)
    u, _ = best(linear_only=True)
    scale = u if u > 0 else 1.0
    for v_new in (scale, -scale / 2):
        uv(u, v_new)
    u, v = best()
    refine = 0
    while len(candidates) < settings.budget and refine < 8:
        refine += 1
        factor = 3.0 ** (0.5**refine)
        shift = max(abs(v), abs(u), 1.0) * 0.5**refine
        for u_new, v_new in ((u * factor, v), (u / factor, v), (u, v + shift), (u, v - shift)):
            uv(u_new, v_new)
        u, v = best()

    chosen = max(candidates, key=lambda c: c.objective)  # max keeps the first of equal objectives
    points = _operating_points(chosen.coefficients, series)
    table_indices = {_nearest(points, f) for f in settings.table_fractions}
    thresholds = [p.threshold for p in chosen.runs] + [points[i][1] for i in table_indices]
    table = measure(chosen.label, chosen.coefficients, thresholds)
    return CoefficientSearch(
        chosen=chosen,
        candidates=tuple(candidates),
        thresholds=tuple(sorted(table, key=lambda p: p.threshold)),
        settings=settings,
        seeds=tuple(seeds),
        num_steps=num_steps,
    )


# ------------------------------------------------------------------------------------------------ command line
_steps_arg = int_in(2, 10000)
_count_arg = int_in(1, 10000)
_seed_arg = int_in(0, 2**63 - 1)
_cfg_arg = number_at_least(0.0)
_thresholds_arg = float_list(lambda v: v > 0, "> 0")
_fractions_arg = float_list(lambda v: 0 < v < 1, "in (0, 1)")


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Add the ``calibrate`` sub-command to the ``ditcache`` sub-parsers ``commands``; returns its parser."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "calibrate",
        help="fit TeaCache coefficients and MagCache ratios for a model and write them as profiles",
        description=(
            "Run a model uncached for a few generations, fit TeaCache's rescaling polynomial per CFG branch "
            "(x: relative L1 change of the modulated input between steps, y: the model output's) and measure "
            "MagCache's magnitude ratios, then write NAME.teacache.json and NAME.magcache.json. With --method "
            "search, TeaCache's polynomial is instead chosen among a few candidates by running TeaCache with each "
            "and measuring quality against the uncached outputs. Load them with TeaCacheConfig(profile=NAME) / "
            "MagCacheConfig(profile=NAME). Without --model: the bundled digits model."
        ),
    )
    parser.add_argument(
        "--model",
        metavar="IMPORT_PATH",
        default=None,
        help=f"'package.module:factory' returning a CalibrationTarget (default: {DEFAULT_TARGET})",
    )
    parser.add_argument(
        "--config",
        metavar="JSON",
        default=None,
        help="keyword arguments of the factory as a JSON object, or @FILE to read them from a file",
    )
    parser.add_argument("--steps", type=_steps_arg, default=50, help="denoising steps per generation (default: 50)")
    parser.add_argument("--samples", type=_count_arg, default=4, help="generations to record (default: 4)")
    parser.add_argument(
        "--cfg",
        metavar="SCALE",
        type=_cfg_arg,
        default=None,
        help="classifier-free guidance scale, passed to the factory as guidance_scale (bundled model default: 3.0)",
    )
    parser.add_argument("--seed", type=_seed_arg, default=0, help="seed of the first generation (default: 0)")
    parser.add_argument(
        "--name", default=None, help="profile name (default: the target's, 'digits-dit' for the bundled model)"
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        default=None,
        help="directory to write the profiles to (default: the profile directory, $DITCACHE_PROFILE_DIR or "
        "~/.cache/ditcache/profiles, where names are looked up)",
    )
    parser.add_argument(
        "--method",
        choices=METHODS,
        default="regression",
        help="how TeaCache's coefficients are chosen: 'regression' fits the output change on the indicator change "
        "(numpy.polyfit, per branch); 'search' runs TeaCache with candidate polynomials and keeps the one with the "
        "best quality at equal work (default: regression)",
    )
    parser.add_argument(
        "--search-budget",
        metavar="N",
        type=_count_arg,
        default=SearchSettings().budget,
        help=f"--method search: candidate polynomials evaluated (default: {SearchSettings().budget})",
    )
    parser.add_argument(
        "--search-samples",
        metavar="K",
        type=_count_arg,
        default=SearchSettings().samples,
        help="--method search: how many calibration seeds (the first ones) the candidates are judged on, at most "
        f"--samples (default: {SearchSettings().samples})",
    )
    parser.add_argument(
        "--search-fractions",
        metavar="FRACTIONS",
        type=_fractions_arg,
        default=list(SearchSettings().fractions),
        help="--method search: computed fractions the objective averages the PSNR over (default: "
        f"{','.join(f'{f:g}' for f in SearchSettings().fractions)})",
    )
    parser.add_argument(
        "--evaluate",
        metavar="THRESHOLDS",
        type=_thresholds_arg,
        default=None,
        help="after calibrating, compare the calibrated coefficients with the preset the model would borrow: "
        "computed-step fraction and PSNR against uncached outputs at these comma-separated thresholds (with "
        "--method search the calibrated profile runs at the thresholds of its own threshold table)",
    )
    parser.add_argument(
        "--eval-samples",
        type=_count_arg,
        default=4,
        help="generations per threshold for --evaluate, seeds after the calibration ones (default: 4)",
    )
    parser.set_defaults(handler=_cmd_calibrate, calibrate_parser=parser)
    return parser


def _parse_config(text: str | None) -> dict[str, Any]:
    if text is None:
        return {}
    source = "--config"
    if text.startswith("@"):
        path = Path(text[1:]).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise CalibrationError("config", f"cannot read {path}: {exc.strerror or exc}") from None
        source = str(path)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CalibrationError("config", f"{source} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise CalibrationError(
            "config", f"expected a JSON object of keyword arguments for the factory, got {type(value).__name__}"
        )
    return value


def _writable_dir(text: str | None) -> Path:
    directory = profile_dir() if text is None else Path(text).expanduser()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".ditcache-write-test-"):
            pass
    except OSError as exc:
        raise CalibrationError("out", f"cannot write to {directory}: {exc.strerror or exc}") from None
    return directory


def _check_name(name: str) -> str:
    if any(c in name for c in "/\\") or name.endswith(".json"):
        raise CalibrationError("name", f"expected a profile name, not a path, got {name!r}")
    try:
        profile_path(name)
    except ProfileError as exc:
        raise CalibrationError("name", str(exc).removeprefix("profile: ")) from None
    return name


def _fmt_coefficients(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:.6g}" for v in values) + "]"


def _print_summary(console: Any, result: CalibrationResult, paths: Mapping[str, Path], out: Path) -> None:
    from rich.table import Table

    kept = " (kept under data.regression)" if result.search is not None else ""
    tea = Table(title=f"[bold]TeaCache fit[/bold] (y = poly(x), numpy.polyfit){kept}", title_justify="left")
    for col in ("branch", "points", "R^2", "x range", "coefficients [c4, c3, c2, c1, c0]"):
        tea.add_column(col, overflow="fold")
    for role, fit in result.fits.items():
        tea.add_row(
            role,
            str(fit.n),
            f"{fit.r2:.4f}",
            f"{fit.x_range[0]:.4g} - {fit.x_range[1]:.4g}",
            _fmt_coefficients(fit.teacache_coefficients),
        )
    console.print(tea, highlight=False)
    if result.fits["pooled"].r2 < 0.5 and result.search is None:
        console.print(
            f"note: R^2 {result.fits['pooled'].r2:.2f}: the indicator explains little of the output's change; "
            "compare the trade-off with --evaluate before relying on these coefficients",
            highlight=False,
        )
    if result.search is not None:
        _print_search(console, result.search)
    if result.magcache is not None:
        mag = Table(title="[bold]MagCache ratios[/bold] (mean over the samples)", title_justify="left")
        mag.add_column("branch")
        mag.add_column("ratios per step (padding 1.0 first)", overflow="fold")
        for role, curve in result.magcache.data["curves"].items():
            mag.add_row(role, ", ".join(f"{v:.4f}" for v in curve))
        console.print(mag, highlight=False)
    for kind, path in paths.items():
        console.print(f"wrote {kind} profile: {path}", highlight=False, soft_wrap=True)
    ref = result.name if out.resolve() == profile_dir().expanduser().resolve() else None
    tea_ref = repr(ref) if ref else repr(str(paths["teacache"]))
    thresh = "..."
    if result.search is not None:
        fraction = result.search.settings.fractions[len(result.search.settings.fractions) // 2]
        thresh = f"{result.search.threshold_for(fraction):g}"
    console.print(
        f"use it: ditcache.TeaCacheConfig(profile={tea_ref}, rel_l1_thresh={thresh})", highlight=False, soft_wrap=True
    )
    if "magcache" in paths:
        mag_ref = repr(ref) if ref else repr(str(paths["magcache"]))
        console.print(
            f"        ditcache.MagCacheConfig(profile={mag_ref}, threshold=...)", highlight=False, soft_wrap=True
        )


def _print_search(console: Any, found: CoefficientSearch) -> None:
    from rich.table import Table

    fractions = found.settings.fractions
    seeds = f"seeds {found.seeds[0]}-{found.seeds[-1]}" if len(found.seeds) > 1 else f"seed {found.seeds[0]}"
    table = Table(
        title=f"[bold]TeaCache coefficient search[/bold] (PSNR in dB against uncached outputs, {seeds})",
        title_justify="left",
    )
    for col in ("candidate", *(f"@ {f:g}" for f in fractions), "objective", "runs"):
        table.add_column(col, overflow="fold")
    for c in sorted(found.candidates, key=lambda c: -c.objective):
        mark = " (chosen)" if c is found.chosen else ""
        table.add_row(
            f"{c.label}{mark}",
            *(f"{v:.2f}" for v in c.psnr_at),
            f"{c.objective:.3f}{' *' if c.extrapolated else ''}",
            str(len(c.runs)),
        )
    console.print(table, highlight=False)
    if any(c.extrapolated for c in found.candidates):
        console.print("* a target fraction lies outside the candidate's measured runs: extrapolated", highlight=False)
    console.print(
        f"chosen: {found.chosen.label}, coefficients {_fmt_coefficients(found.coefficients)}", highlight=False
    )
    thresholds = Table(title="[bold]Threshold table[/bold] of the chosen coefficients", title_justify="left")
    for col in ("threshold", "computed fraction", "PSNR (dB)", "worst PSNR (dB)"):
        thresholds.add_column(col)
    for p in found.thresholds:
        thresholds.add_row(f"{p.threshold:g}", f"{p.computed_fraction:.3f}", f"{p.psnr:.2f}", f"{p.psnr_min:.2f}")
    console.print(thresholds, highlight=False)


def _print_tradeoff(console: Any, points: Sequence[TradeoffPoint], title: str) -> None:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col in ("coefficients", "threshold", "computed fraction", "PSNR (dB)", "worst PSNR (dB)"):
        table.add_column(col)
    for p in points:
        table.add_row(p.label, f"{p.threshold:g}", f"{p.computed_fraction:.3f}", f"{p.psnr:.2f}", f"{p.psnr_min:.2f}")
    console.print(table, highlight=False)


def _error(args: argparse.Namespace, exc: CalibrationError) -> int:
    parser: argparse.ArgumentParser = args.calibrate_parser
    parser.print_usage(sys.stderr)
    print(f"{parser.prog}: error: --{exc.argument}: {exc.message}", file=sys.stderr)
    return 2


def _run_calibration(
    console: Any, target: CalibrationTarget, args: argparse.Namespace, settings: SearchSettings
) -> CalibrationResult:
    """:func:`calibrate` with a rich progress display: the uncached samples, then the search's candidates."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        sampling = progress.add_task("uncached samples", total=args.samples)
        searching = None
        if args.method == "search":
            searching = progress.add_task(f"search ({settings.samples} seed(s))", total=settings.budget, start=False)

        def on_sample(k: int, s: int, seconds: float) -> None:
            progress.console.print(f"  sample {k + 1}/{args.samples} (seed {s}): {seconds:.2f} s", highlight=False)
            progress.advance(sampling)
            if searching is not None and k + 1 == args.samples:
                progress.start_task(searching)

        def on_candidate(index: int, budget: int, candidate: SearchCandidate) -> None:
            at = ", ".join(f"{v:.2f}" for v in candidate.psnr_at)
            progress.console.print(
                f"  candidate {index}/{budget} {candidate.label}: PSNR {at} dB at computed fractions "
                f"{', '.join(f'{f:g}' for f in settings.fractions)} (objective {candidate.objective:.3f})",
                highlight=False,
            )
            if searching is not None:
                progress.advance(searching)

        return calibrate(
            target,
            num_steps=args.steps,
            samples=args.samples,
            seed=args.seed,
            on_sample=on_sample,
            method=args.method,
            search=settings,
            on_candidate=on_candidate,
        )


def _cmd_calibrate(args: argparse.Namespace, console: Any) -> int:
    from ditcache.caches.teacache import TeaCacheConfig
    from ditcache.presets.teacache import infer_teacache_model

    try:
        config = _parse_config(args.config)
        if args.cfg is not None:
            if "guidance_scale" in config and config["guidance_scale"] != args.cfg:
                raise CalibrationError(
                    "cfg", f"{args.cfg:g} conflicts with guidance_scale={config['guidance_scale']!r} in --config"
                )
            config["guidance_scale"] = args.cfg
        name = _check_name(args.name) if args.name is not None else None
        out = _writable_dir(args.out)
        try:
            target = load_target(args.model, config)
        except CalibrationError as exc:
            if exc.argument == "config" and args.cfg is not None and "guidance_scale" in exc.message:
                raise CalibrationError("cfg", f"the factory does not accept guidance_scale ({exc.message})") from None
            raise
        if args.method == "search" and args.search_samples > args.samples:
            raise CalibrationError(
                "search-samples",
                f"{args.search_samples} exceeds --samples ({args.samples}): the candidates are judged on "
                "calibration seeds",
            )
    except CalibrationError as exc:
        return _error(args, exc)
    if name is not None:
        target = attrs.evolve(target, name=name)
    console.print(
        f"ditcache calibrate: {target.profile_name} ({type(target.transformer).__name__}), {args.steps} steps x "
        f"{args.samples} sample(s), seeds {args.seed}-{args.seed + args.samples - 1}, uncached",
        highlight=False,
    )

    settings = SearchSettings(budget=args.search_budget, samples=args.search_samples, fractions=args.search_fractions)
    try:
        result = _run_calibration(console, target, args, settings)
    except TypeError as exc:  # --method search: run() returned no tensor to compare
        if "target.run" not in str(exc):
            raise
        return _error(args, CalibrationError("method", str(exc)))
    paths = result.save(out)
    _print_summary(console, result, paths, out)
    if args.evaluate:
        configs: list[tuple[str, Any]] = []
        try:
            preset, _ = infer_teacache_model(target.transformer)
        except ValueError:
            preset = None
        for t in args.evaluate:
            if preset is not None:
                configs.append((f"borrowed {preset}", TeaCacheConfig(rel_l1_thresh=t, model=preset)))
        own = [p.threshold for p in result.search.thresholds] if result.search is not None else args.evaluate
        for t in own:
            configs.append(("calibrated", TeaCacheConfig(rel_l1_thresh=t, profile=paths["teacache"])))
        first = args.seed + args.samples
        seeds = list(range(first, first + args.eval_samples))
        console.print(f"evaluating on seeds {seeds[0]}-{seeds[-1]} (held out from calibration) ...", highlight=False)
        try:
            points = evaluate_teacache(target, configs, num_steps=args.steps, seeds=seeds)
        except TypeError as exc:  # run() returned no tensor: the profiles are written, the comparison impossible
            return _error(args, CalibrationError("evaluate", str(exc)))
        _print_tradeoff(
            console, points, f"[bold]TeaCache trade-off[/bold], {args.steps} steps, PSNR against uncached outputs"
        )
    return 0
