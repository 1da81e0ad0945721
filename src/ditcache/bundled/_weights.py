"""What the bundled models share: their config base, their module base and one weights loader.

Each bundled model (:mod:`ditcache.bundled.model`, :mod:`ditcache.bundled.patches`) ships a safetensors file and a
JSON metadata file (with the ``model`` config) inside this package; :func:`load_bundled` loads either.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any, Protocol, TypeVar

import attrs
import torch
from torch import nn

from ditcache.core.validators import StrictConfig

__all__ = [
    "BundledModule",
    "RopeConfig",
    "bundled_file",
    "check_rope_axes",
    "file_sha256",
    "load_bundled",
    "load_json_object",
    "rope_axes",
]


def rope_axes(value: Any) -> Any:
    """Converter of ``axes_dims_rope``: an iterable of ints as a tuple; anything else unchanged, for
    :func:`check_rope_axes` to refuse."""
    try:
        return tuple(int(v) for v in value)
    except (TypeError, ValueError):
        return value


def check_rope_axes(inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """Validator of ``axes_dims_rope`` (after :func:`rope_axes`): exactly 3 ints."""
    where = f"{type(inst).__name__}.{attribute.name}"
    if not isinstance(value, tuple):
        raise TypeError(f"{where}: expected 3 ints, got {value!r}")
    if len(value) != 3:
        raise ValueError(f"{where}: expected 3 ints, got {len(value)}")


class RopeConfig(StrictConfig):
    """Mixin of the bundled model configs (attrs classes with an ``axes_dims_rope`` tuple): strict ``from_dict``
    and a JSON-ready ``to_dict``."""

    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        """The settings as JSON-ready values."""
        out = attrs.asdict(self)  # type: ignore[arg-type]
        out["axes_dims_rope"] = list(out["axes_dims_rope"])
        return out


class BundledModule(nn.Module):
    """Base of the bundled models: ``device`` and ``dtype`` of the parameters."""

    @property
    def device(self) -> torch.device:
        """Device of the parameters."""
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the parameters."""
        return next(self.parameters()).dtype


def bundled_file(name: str) -> Path:
    """Path of the file ``name`` shipped inside the ``ditcache.bundled`` package."""
    return Path(str(resources.files("ditcache.bundled").joinpath(name)))


def load_json_object(path: str | Path) -> dict[str, Any]:
    """The JSON object in the file at ``path`` (ValueError naming the file if it holds anything else)."""
    p = Path(path)
    with open(p, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict):
        raise ValueError(f"{p.name}: expected a JSON object, got {type(data).__name__}")
    return data


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class _Config(Protocol):
    @classmethod
    def from_dict(cls, data: Any) -> Any: ...


M = TypeVar("M", bound=nn.Module)


def load_bundled(
    model_cls: type[M],
    config_cls: type[_Config],
    weights_file: str,
    weights: str | Path | None,
    device: torch.device | str,
    dtype: torch.dtype,
) -> M:
    """Build ``model_cls(config)`` from the weights at ``weights`` (default: the bundled ``weights_file``) and the
    config in the JSON next to them (``config_cls()`` without one); eval mode on ``device`` in ``dtype``, no
    gradients."""
    from safetensors.torch import load_file

    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype: expected a floating torch.dtype (float32, float16, bfloat16), got {dtype!r}")
    path = Path(weights) if weights is not None else bundled_file(weights_file)
    if not path.is_file():
        raise FileNotFoundError(
            f"weights: no file at {path}; the bundled weights ship as ditcache/bundled/{weights_file}"
        )
    meta_path = path.with_suffix(".json")
    meta = load_json_object(meta_path) if meta_path.is_file() else {}
    config = config_cls.from_dict(meta["model"]) if "model" in meta else config_cls()
    model = model_cls(config)  # type: ignore[call-arg]
    missing, unexpected = model.load_state_dict(load_file(str(path)), strict=False)
    if missing or unexpected:
        raise ValueError(
            f"weights: {path.name} does not match {model_cls.__name__}: missing {missing}, unexpected {unexpected}"
        )
    model.requires_grad_(False)
    return model.to(device=device, dtype=dtype).eval()
