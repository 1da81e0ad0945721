"""Fixtures of the evaluation tests: the bundled model, loaded once per module with one torch thread."""

from __future__ import annotations

import pytest
import torch

from ditcache.bundled import DigitsDiT, load_digits_dit


@pytest.fixture(scope="module")
def model() -> DigitsDiT:
    torch.set_num_threads(1)
    return load_digits_dit()
