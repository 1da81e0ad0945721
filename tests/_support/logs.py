"""Reading ditcache's structured log events from captured records."""

from __future__ import annotations

import logging
from typing import Any


def event_of(record: logging.LogRecord) -> dict[str, Any] | None:
    """The event dict of a ditcache record: ``record.ditcache_event`` (plain handlers), or ``record.msg`` when
    structlog's ProcessorFormatter is in effect; None for other records."""
    event = getattr(record, "ditcache_event", None)
    if event is None and isinstance(record.msg, dict):
        event = record.msg
    return event
