"""Calibration targets: what calibration needs from a model, the bundled digits model as one, and import paths.

A model is calibrated through a :class:`CalibrationTarget`: the transformer (what the caches hook) and a function
``run(num_steps, seed)`` that runs one complete generation with it, returning the generated output. The command
line (``ditcache calibrate``) builds one from an import path ``package.module:factory`` (:func:`load_target`); the
default is the bundled digits model (:func:`digits_dit_target`).
"""

from __future__ import annotations

import importlib
import inspect
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import nn

from ditcache.core.extractor import Extractor, get_extractor
from ditcache.profiles import ProfileError, profile_path

__all__ = ["DEFAULT_TARGET", "CalibrationError", "CalibrationTarget", "digits_dit_target", "load_target"]

DEFAULT_TARGET = "ditcache.calibration.target:digits_dit_target"
"""The import path of the target ``ditcache calibrate`` uses without ``--model``: the bundled digits model."""


class CalibrationError(ValueError):
    """A calibration input is invalid; :attr:`argument` names it (``model``, ``config``, ``out``, ...)."""

    def __init__(self, argument: str, message: str) -> None:
        super().__init__(f"{argument}: {message}")
        self.argument = argument
        self.message = message


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
    tensor with the batch first (latents or images; only the trade-off evaluation, the search and the comparison
    with the borrowed preset use it). A factory for the command line returns one (``ditcache calibrate --model
    package.module:factory``); an object with the attributes ``transformer`` and ``run`` (and optionally ``name``,
    ``extractor``, ``data_range``) works too.
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


def load_target(
    spec: str | None = None,
    config: Mapping[str, Any] | None = None,
    *,
    directory: str | Path | None = None,
) -> CalibrationTarget:
    """Import ``package.module:factory`` (default: :data:`DEFAULT_TARGET`) and call ``factory(**config)``.

    ``directory`` (the command line passes the current directory) is put first on ``sys.path`` if it is not on it
    yet, so that a module of the project one works in is found as ``python -m`` would find it; the ``ditcache``
    script alone only sees installed packages. Raises :class:`CalibrationError` naming ``model`` (bad import path,
    not callable, wrong return type, no extractor for the transformer) or ``config`` (arguments the factory does
    not accept).
    """
    spec = DEFAULT_TARGET if spec is None else spec
    kwargs = dict(config or {})
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise CalibrationError("model", f"expected an import path 'package.module:factory', got {spec!r}")
    if directory is not None:
        where = str(Path(directory).expanduser().resolve())
        if where not in sys.path:
            sys.path.insert(0, where)
            importlib.invalidate_caches()
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any import failure is a bad --model
        hint = f" (searched the installed packages and {directory})" if directory is not None else ""
        raise CalibrationError(
            "model", f"cannot import module {module_name!r}: {type(exc).__name__}: {exc}{hint}"
        ) from exc
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
