"""Fixtures of the calibration tests: a private profile directory, the bundled-model target, captured log events."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from _support.calibration import LABELS, restored_ditcache_logger
from _support.logs import event_of
from ditcache import profiles
from ditcache.calibration import CalibrationTarget, digits_dit_target


@pytest.fixture(autouse=True)
def _isolate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """A private profile directory (``tmp_path / "store"``), wide rich tables, and the ``ditcache`` logger
    restored after the command line configured it."""
    monkeypatch.setenv(profiles.PROFILE_DIR_ENV, str(tmp_path / "store"))
    monkeypatch.setenv("COLUMNS", "200")
    with restored_ditcache_logger():
        yield


@pytest.fixture(scope="module")
def digits_target() -> CalibrationTarget:
    """The bundled digits model drawing :data:`LABELS` with CFG 3."""
    return digits_dit_target(guidance_scale=3.0, labels=LABELS)


@pytest.fixture
def ditcache_logs(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """A function returning the structlog event dicts logged so far by ``ditcache`` loggers (captured at DEBUG)."""
    monkeypatch.setattr(logging.getLogger("ditcache"), "propagate", True)

    def events() -> list[dict[str, Any]]:
        return [e for r in caplog.records if r.name.startswith("ditcache") and (e := event_of(r)) is not None]

    with caplog.at_level(logging.DEBUG, logger="ditcache"):
        yield events
