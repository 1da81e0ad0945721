"""ditcache.tools.argtypes: the command-line argument types give messages naming the allowed values."""

from __future__ import annotations

import argparse

import pytest

from ditcache.tools.argtypes import float_list, guidance_scale, int_in, number_at_least


def test_int_in_accepts_the_bounds_only() -> None:
    parse = int_in(2, 5)
    assert parse("2") == 2 and parse("5") == 5
    for bad in ("1", "6", "x", "2.5"):
        with pytest.raises(argparse.ArgumentTypeError, match=r"expected an integer in \[2, 5\]"):
            parse(bad)


def test_numbers() -> None:
    assert guidance_scale("3") == 3.0 and number_at_least(0.0)("0") == 0.0
    for bad in ("1", "nan", "inf", "x"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected a finite number > 1"):
            guidance_scale(bad)
    with pytest.raises(argparse.ArgumentTypeError, match="expected a finite number >= 0"):
        number_at_least(0.0)("-0.5")


def test_float_list() -> None:
    parse = float_list(lambda v: 0 < v < 1, "in (0, 1)")
    assert parse("0.2,0.5") == [0.2, 0.5]
    for bad in ("0.2,1", "0.2,,0.3", "a"):
        with pytest.raises(argparse.ArgumentTypeError, match=r"expected comma-separated numbers in \(0, 1\)"):
            parse(bad)
