"""What a step-level cache keeps from computed steps and gives back on skipped ones.

TeaCache and MagCache decide whole steps. By default (target ``"residual"``) a computed step stores ``output -
input`` of the block stack for each stream and a skipped step adds it to its own input (the embeddings and the
head still run). With TaylorSeer forecasting on, the residual added on a skipped step is the TaylorSeer
extrapolation of the residuals of the computed steps to the skipped step's index instead of the last one.

With target ``"output"`` the cache forecasts the model's *output* (the tensor the postprocess returns, e.g. the
velocity) instead: computed steps record it, skipped steps return the forecast as the model's return value
(:class:`~ditcache.core.cache.FinalOutput`) and skip the head as well. That is what diffusers' TaylorSeer "lite"
mode extrapolates; on a smooth output it is the more accurate of the two.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import torch

from ditcache.caches.taylorseer import FORECAST_METHODS, TaylorSeer
from ditcache.core.cache import FinalOutput
from ditcache.core.context import BlockOutput, CacheContext
from ditcache.core.metrics import rel_l1
from ditcache.core.validators import StrictConfig, from_dict, int_ge, is_bool, one_of, optional, plain_scalar

__all__ = [
    "FORECAST_TARGETS",
    "ForecastSettings",
    "OutputCache",
    "ResidualCache",
    "StepReuse",
    "settle_forecast",
]

FORECAST_TARGETS = ("residual", "output")
"""What a step-level cache reuses on skipped steps: the blocks' residual, or the model's output."""


_FLAT = {
    "order": "taylorseer_order",
    "method": "taylorseer_method",
    "target": "taylorseer_target",
    "derivative_delay": "taylorseer_derivative_delay",
    "encoder": "taylorseer_encoder",
}
"""ForecastSettings field -> the flat config keyword that spells it (``TeaCacheConfig(taylorseer_order=2)``)."""


@attrs.frozen
class ForecastSettings(StrictConfig):
    """How a cache forecasts what it reuses on skipped steps (TaylorSeer, see :mod:`ditcache.caches.taylorseer`).

    The one forecasting option of the three caches: ``TeaCacheConfig(forecast=ForecastSettings(order=2))``,
    ``MagCacheConfig(forecast={"order": 2, "method": "newton"})`` or ``DBCacheConfig(forecast=ForecastSettings())``.
    The flat spellings (``taylorseer=True, taylorseer_order=2, ...``) build the same settings.
    """

    order: int = attrs.field(default=1, converter=plain_scalar, validator=int_ge(0))
    """Order of the expansion (1 or 2 are usual; 0 reuses the last value)."""
    method: str = attrs.field(default="taylor", validator=one_of(FORECAST_METHODS))
    """``"taylor"`` (the published expansion) or ``"newton"`` (exact for polynomials up to the order)."""
    target: str = attrs.field(default="residual", validator=one_of(FORECAST_TARGETS))
    """``"residual"``: the blocks' residual (the head still runs); ``"output"``: the model's output itself (step-level
    caches only, the outermost one; diffusers' TaylorSeer lite)."""
    derivative_delay: int | None = attrs.field(
        default=None, converter=plain_scalar, validator=optional(int_ge(0), "the cache's default")
    )
    """Updates fewer than this many steps after a generation's first step form no derivatives. None: the cache's
    default (DBCache 3, as cache-dit; TeaCache and MagCache 0)."""
    encoder: bool = attrs.field(default=True, converter=plain_scalar, validator=is_bool)
    """Also forecast the encoder (text) stream's residual (cache-dit's ``enable_encoder_calibrator``)."""

    def forecaster(self) -> TaylorSeer:
        """A fresh forecaster for one stream."""
        return TaylorSeer(self.order, method=self.method, derivative_delay=self.derivative_delay or 0)


def settle_forecast(config: Any, *, derivative_delay: int | None = None, block_level: bool = False) -> None:
    """Reconcile a config's nested ``forecast`` with its flat ``taylorseer*`` settings (call from post-init).

    The config declares ``_forecast: ForecastSettings | None = attrs.field(default=None)`` (keyword ``forecast``)
    and the flat fields it supports (``taylorseer``, ``taylorseer_order``, ``taylorseer_method`` and optionally
    ``taylorseer_target``, ``taylorseer_derivative_delay``, ``taylorseer_encoder``).

    Afterwards ``config._forecast`` is a complete :class:`ForecastSettings` (None when forecasting is off) and the
    flat fields mirror it, so both spellings give equal configs. A nested value may be a ForecastSettings or a
    dict; flat settings given beside it must agree with it. ``derivative_delay`` (if given) fills a None delay;
    ``block_level`` refuses the ``"output"`` target (a block-level cache cannot return the model's output).
    """
    name = type(config).__name__
    flat = {key: kw for key, kw in _FLAT.items() if hasattr(config, kw)}
    defaults = {f.name: f.default for f in attrs.fields(type(config))}
    nested = config._forecast
    if nested is not None:
        if isinstance(nested, Mapping):
            try:
                nested = from_dict(ForecastSettings, nested)
            except (TypeError, ValueError) as exc:
                msg = str(exc).replace("ForecastSettings", f"{name}.forecast", 1)
                raise type(exc)(msg) from None
        elif not isinstance(nested, ForecastSettings):
            raise TypeError(f"{name}.forecast: expected a ForecastSettings, a dict or None, got {nested!r}")
        given = {kw: getattr(config, kw) for kw in flat.values() if getattr(config, kw) != defaults[kw]}
        if config.taylorseer:
            given["taylorseer"] = True
        clash = [kw for key, kw in flat.items() if kw in given and given[kw] != getattr(nested, key)]
        if clash:
            raise ValueError(
                f"{name}.forecast: the flat setting(s) {clash} disagree with forecast={nested!r}; give the "
                "forecasting settings one way (forecast=... or taylorseer=True, taylorseer_*=...)"
            )
        object.__setattr__(config, "taylorseer", True)
    elif config.taylorseer:
        nested = ForecastSettings(**{key: getattr(config, kw) for key, kw in flat.items()})
    else:
        target = flat.get("target")
        if target is not None and getattr(config, target) == "output":
            raise ValueError(
                f"{name}.taylorseer_target: 'output' forecasts with TaylorSeer; set taylorseer=True "
                "(taylorseer_order=0 reuses the last output)"
            )
    if nested is not None:
        if nested.derivative_delay is None and derivative_delay is not None:
            nested = attrs.evolve(nested, derivative_delay=derivative_delay)
        if block_level and nested.target != "residual":
            raise ValueError(
                f"{name}.forecast.target: a block-level cache forecasts the middle blocks' residual; expected "
                f"'residual', got {nested.target!r}"
            )
        for key, kw in flat.items():
            object.__setattr__(config, kw, getattr(nested, key))
    object.__setattr__(config, "_forecast", nested)


class ResidualCache:
    """One branch's cached residual, per stream; see the module docstring."""

    __slots__ = ("_forecast", "encoder", "encoder_seer", "hidden", "hidden_seer", "step")

    def __init__(self, forecast: ForecastSettings | None = None) -> None:
        self._forecast = forecast
        self.hidden: torch.Tensor | None = None
        self.encoder: torch.Tensor | None = None
        self.step = -1
        self.hidden_seer: TaylorSeer | None = forecast.forecaster() if forecast else None
        self.encoder_seer: TaylorSeer | None = forecast.forecaster() if forecast and forecast.encoder else None

    def usable_for(self, hidden_states: torch.Tensor) -> bool:
        """Whether a residual exists and fits this step's hidden states."""
        h = self.hidden
        return h is not None and h.shape == hidden_states.shape and h.device == hidden_states.device

    def store(
        self,
        step: int,
        h_in: torch.Tensor,
        e_in: torch.Tensor | None,
        h_out: torch.Tensor,
        e_out: torch.Tensor | None,
    ) -> None:
        """Record a computed step: ``output - input`` per stream (none for a stream the blocks left unchanged)."""
        self.hidden = h_out - h_in
        self.encoder = (
            None if (e_out is None or e_in is None or e_out is e_in or e_out.shape != e_in.shape) else e_out - e_in
        )
        self.step = step
        if self.hidden_seer is not None:
            self.hidden_seer.update(self.hidden, step)
        if self.encoder_seer is not None:
            if self.encoder is None:
                self.encoder_seer.reset()
            else:
                self.encoder_seer.update(self.encoder, step)

    def predict(self, step: int) -> torch.Tensor:
        """The hidden stream's residual a skip at ``step`` adds: the cached one, or its forecast."""
        res_h = self.hidden
        assert res_h is not None, "predict() needs a stored residual; check usable_for() first"
        if self.hidden_seer is not None and self.hidden_seer.ready:
            return self.hidden_seer.approximate(step)
        return res_h

    def apply(self, step: int, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None) -> BlockOutput:
        """This step's output: its input plus the cached (or forecast) residual."""
        res_h = self.predict(step)
        res_e = self.encoder
        if res_e is not None and self.encoder_seer is not None and self.encoder_seer.ready:
            res_e = self.encoder_seer.approximate(step)
        hidden = hidden_states + res_h
        encoder = encoder_hidden_states
        if encoder is not None and res_e is not None and res_e.shape == encoder.shape:
            encoder = encoder + res_e
        return hidden, encoder


def _sample_field(output: Any) -> Any:
    """The sample part of a model's return value: the value itself (a tensor), the first item of a tuple or list,
    or ``.sample`` / ``["sample"]``; None when there is none."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        return output[0] if output else None
    return output.get("sample") if isinstance(output, Mapping) else getattr(output, "sample", None)


def output_tensor(output: Any) -> torch.Tensor:
    """The sample tensor of a model's return value: a tensor, a tuple/list starting with one, or ``.sample`` /
    ``["sample"]``. TypeError when there is none (output forecasting and calibration need it)."""
    sample = _sample_field(output)
    if isinstance(sample, torch.Tensor):
        return sample
    raise TypeError(
        f"model output: cannot find the output tensor in a {type(output).__name__}; expected a tensor, a tuple/list "
        "starting with one, or an object with a .sample tensor"
    )


def output_values(output: Any) -> torch.Tensor:
    """The sample values of a model's return value as one tensor: :func:`output_tensor`, or, for a model whose
    sample is a list of per-sample tensors (Z-Image, Lumina-style variable sizes), their values flattened and
    concatenated (what an error between two outputs needs; a forecast needs :func:`output_tensor`)."""
    sample = _sample_field(output)
    if isinstance(sample, list) and sample and all(isinstance(t, torch.Tensor) for t in sample):
        return torch.cat([t.reshape(-1) for t in sample])
    return output_tensor(output)


def with_output_tensor(template: Any, tensor: torch.Tensor) -> Any:
    """``template`` (a return value of the model) with its sample tensor replaced by ``tensor``."""
    if isinstance(template, torch.Tensor):
        return tensor
    if isinstance(template, tuple):
        return (tensor, *template[1:])
    if isinstance(template, list):
        return [tensor, *template[1:]]
    if dataclasses.is_dataclass(template) and not isinstance(template, type):
        return dataclasses.replace(template, sample=tensor)
    raise TypeError(f"taylorseer_target: cannot rebuild a {type(template).__name__} output")


class OutputCache:
    """One branch's forecast of the model's output (see the module docstring)."""

    __slots__ = ("seer", "template")

    def __init__(self, forecast: ForecastSettings) -> None:
        self.seer = forecast.forecaster()
        self.template: Any = None

    @property
    def ready(self) -> bool:
        """Whether a computed output was recorded."""
        return self.seer.ready and self.template is not None

    def store(self, step: int, output: Any) -> None:
        """Record the real output of a computed step."""
        self.seer.update(output_tensor(output).detach(), step)
        self.template = output

    def forecast(self, step: int) -> Any:
        """The forecast output of a skipped step, in the structure of the last real one."""
        return with_output_tensor(self.template, self.seer.approximate(step))


class StepReuse:
    """A step-level cache's per-branch memory: :meth:`compute` on computed steps, :meth:`reuse` on skipped ones."""

    __slots__ = ("_signature", "output", "residual")

    def __init__(self, forecast: ForecastSettings | None) -> None:
        self.residual = ResidualCache(forecast)
        self.output: OutputCache | None = (
            OutputCache(forecast) if forecast is not None and forecast.target == "output" else None
        )
        self._signature: tuple[Any, ...] | None = None

    def usable_for(self, ctx: CacheContext) -> bool:
        """Whether this step can be skipped: something was stored that fits it."""
        if self.output is not None:
            h = ctx.hidden_states
            return self.output.ready and self._signature == (h.shape, h.device)
        return self.residual.usable_for(ctx.hidden_states)

    def compute(self, ctx: CacheContext, call_next: Callable[[CacheContext], BlockOutput]) -> BlockOutput | FinalOutput:
        """Run the rest of the stack, remember what a skipped step will need, return the result."""
        return self.compute_measured(ctx, call_next, measure=False)[0]

    def compute_measured(
        self, ctx: CacheContext, call_next: Callable[[CacheContext], BlockOutput], *, measure: bool = True
    ) -> tuple[BlockOutput | FinalOutput, float | None]:
        """:meth:`compute`, and with ``measure`` the relative L1 error a skip would have made at this step, in the
        model's output either way: ``rel_l1(reused, computed)`` of the forecast output (target ``"output"``), or of
        the output the postprocess makes from the blocks' output with the reused residual (target ``"residual"``;
        the head then runs twice more, on both results). None when nothing could have been reused. The result is
        that of :meth:`compute` bit for bit; measuring costs one forecast and one host sync."""
        h_in, e_in = ctx.hidden_states, ctx.encoder_hidden_states
        measure = measure and self.usable_for(ctx)
        if self.output is None:
            hidden, encoder = call_next(ctx)  # the guess is built after the blocks: no extra tensor during them
            error = None
            if measure:
                guess = output_values(ctx.postprocess(*self.residual.apply(ctx.step, h_in, e_in)))
                error = rel_l1(guess, output_values(ctx.postprocess(hidden, encoder)), ctx.reducer)
            self.residual.store(ctx.step, h_in, e_in, hidden, encoder)
            return (hidden, encoder), error
        hidden, encoder = call_next(ctx)
        out = ctx.postprocess(hidden, encoder)
        error = rel_l1(self.output.seer.approximate(ctx.step), output_tensor(out), ctx.reducer) if measure else None
        self.output.store(ctx.step, out)
        self._signature = (h_in.shape, h_in.device)
        return FinalOutput(out), error

    def reuse(self, ctx: CacheContext) -> BlockOutput | FinalOutput:
        """The result of a skipped step."""
        if self.output is not None:
            return FinalOutput(self.output.forecast(ctx.step))
        return self.residual.apply(ctx.step, ctx.hidden_states, ctx.encoder_hidden_states)
