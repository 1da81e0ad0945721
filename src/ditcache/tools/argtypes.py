"""Argument types shared by the ``ditcache`` sub-commands (argparse ``type=`` callables with clear messages)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

__all__ = ["float_list", "guidance_scale", "int_in", "number_at_least"]


def int_in(low: int, high: int) -> Callable[[str], int]:
    """An integer in ``[low, high]``."""

    def parse(text: str) -> int:
        try:
            value: int | None = int(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected an integer in [{low}, {high}], got {text!r}")
        return value

    return parse


def guidance_scale(text: str) -> float:
    """A classifier-free guidance scale: a finite number > 1."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a finite number > 1, got {text!r}")
    return value


def number_at_least(low: float) -> Callable[[str], float]:
    """A finite number >= ``low``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < low:
            raise argparse.ArgumentTypeError(f"expected a finite number >= {low:g}, got {text!r}")
        return value

    return parse


def float_list(check: Callable[[float], bool], allowed: str) -> Callable[[str], list[float]]:
    """Comma-separated finite numbers, each passing ``check`` (``allowed`` describes them in the message)."""

    def parse(text: str) -> list[float]:
        values = []
        for part in text.split(","):
            try:
                value = float(part)
            except ValueError:
                value = math.nan
            if not math.isfinite(value) or not check(value):
                raise argparse.ArgumentTypeError(f"expected comma-separated numbers {allowed}, got {text!r}")
            values.append(value)
        return values

    return parse
