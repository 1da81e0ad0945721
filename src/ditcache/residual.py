"""The cached block-stack residual of a step-level cache, reused as is or forecast with TaylorSeer.

TeaCache and MagCache decide whole steps: a computed step stores ``output - input`` of the block stack for each
stream, a skipped step adds it to its own input. With forecasting on, the residual added on a skipped step is the
TaylorSeer extrapolation of the residuals of the computed steps to the skipped step's index instead of the last one.
"""

from __future__ import annotations

from typing import Any

import attrs
import torch

from .context import BlockOutput
from .taylorseer import FORECAST_METHODS, TaylorSeer

__all__ = ["ForecastSettings", "ResidualCache"]


def _v_order(inst: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"taylorseer_order: expected an int >= 0 (1 or 2 are usual), got {value!r}")


def _v_method(inst: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if value not in FORECAST_METHODS:
        raise ValueError(f"taylorseer_method: expected one of {list(FORECAST_METHODS)}, got {value!r}")


@attrs.frozen
class ForecastSettings:
    """How a step-level cache forecasts its residual (None of these: plain reuse)."""

    order: int = attrs.field(default=1, validator=_v_order)
    method: str = attrs.field(default="taylor", validator=_v_method)

    def forecaster(self) -> TaylorSeer:
        """A fresh forecaster for one stream."""
        return TaylorSeer(self.order, method=self.method)


class ResidualCache:
    """One branch's cached residual, per stream; see the module docstring."""

    __slots__ = ("_forecast", "encoder", "encoder_seer", "hidden", "hidden_seer", "step")

    def __init__(self, forecast: ForecastSettings | None = None) -> None:
        self._forecast = forecast
        self.hidden: torch.Tensor | None = None
        self.encoder: torch.Tensor | None = None
        self.step = -1
        self.hidden_seer: TaylorSeer | None = forecast.forecaster() if forecast else None
        self.encoder_seer: TaylorSeer | None = forecast.forecaster() if forecast else None

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

    def apply(self, step: int, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None) -> BlockOutput:
        """This step's output: its input plus the cached (or forecast) residual."""
        res_h = self.hidden
        assert res_h is not None, "apply() needs a stored residual; check usable_for() first"
        res_e = self.encoder
        if self.hidden_seer is not None and self.hidden_seer.ready:
            res_h = self.hidden_seer.approximate(step)
        if res_e is not None and self.encoder_seer is not None and self.encoder_seer.ready:
            res_e = self.encoder_seer.approximate(step)
        hidden = hidden_states + res_h
        encoder = encoder_hidden_states
        if encoder is not None and res_e is not None and res_e.shape == encoder.shape:
            encoder = encoder + res_e
        return hidden, encoder
