"""Fixtures of the bench tests: wide tables, and the ``ditcache`` logger and torch's thread count restored."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _restore(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("COLUMNS", "200")
    logger = logging.getLogger("ditcache")
    saved = (list(logger.handlers), logger.level, logger.propagate, torch.get_num_threads())
    yield
    logger.handlers[:] = saved[0]
    logger.setLevel(saved[1])
    logger.propagate = saved[2]
    torch.set_num_threads(saved[3])
