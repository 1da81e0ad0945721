"""Structured logging: key-value events through structlog, on top of stdlib logging.

Every ditcache logger is a child of the stdlib logger ``"ditcache"``, so an application controls ditcache's output
with ordinary logging configuration, and nothing is printed below WARNING unless asked. :func:`configure_logging`
is the one place that attaches a handler rendering the events (console or JSON); the command line calls it once.

Events are named ``area.what`` (``cache.decision``, ``cache.generation``, ...) and carry their data as keys.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

__all__ = ["KVLogger", "configure_logging", "get_logger"]


def _wrap(std: logging.Logger) -> Any:
    """The structlog logger over ``std`` (structlog is imported here, on the first event, not with ditcache)."""
    import structlog

    processors: list[Any] = [
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _render_or_wrap,
    ]
    return structlog.wrap_logger(std, processors=processors, wrapper_class=structlog.stdlib.BoundLogger)


def _structlog_handler_in_effect(std: logging.Logger) -> bool:
    """Whether a handler that ``std``'s records reach formats with structlog's ProcessorFormatter."""
    import structlog

    logger: logging.Logger | None = std
    while logger is not None:
        for handler in logger.handlers:
            if isinstance(handler.formatter, structlog.stdlib.ProcessorFormatter):
                return True
        logger = logger.parent if logger.propagate else None
    return False


def _render_or_wrap(logger: Any, method: str, event: Any) -> Any:
    """Last processor: hand the event dict to a structlog formatter where one is configured, else render it.

    Without :func:`configure_logging` (or another structlog formatter) the records reach plain handlers or Python's
    last-resort handler, which would print the raw event dict; they get a readable ``event key=value`` line instead,
    and the event dict itself as the record attribute ``ditcache_event`` (for filters and tests).
    """
    import structlog

    if _structlog_handler_in_effect(logger):
        return structlog.stdlib.ProcessorFormatter.wrap_for_formatter(logger, method, event)
    shown = {k: v for k, v in event.items() if k not in ("timestamp", "level", "logger")}
    name = event.get("logger")
    text = structlog.processors.KeyValueRenderer(key_order=["event"], drop_missing=True)(logger, method, shown)
    # The rendered line is the record's message; the whole event dict rides along as ``record.ditcache_event``.
    return ((f"[{name}] {text}" if name else text,), {"extra": {"ditcache_event": dict(event)}})


class KVLogger:
    """A structlog logger bound to a stdlib logger, with a cheap level check for hot paths.

    The structlog side is built on the first emitted event (as structlog's own lazy proxy does), so creating loggers
    at import time costs nothing and imports nothing.
    """

    __slots__ = ("_bound_logger", "_std")

    def __init__(self, name: str) -> None:
        self._std = logging.getLogger(name)
        self._bound_logger: Any = None

    @property
    def _bound(self) -> Any:
        if self._bound_logger is None:
            self._bound_logger = _wrap(self._std)
        return self._bound_logger

    def is_enabled_for(self, level: int) -> bool:
        """Whether an event at ``level`` would be emitted (use before building costly event data)."""
        return self._std.isEnabledFor(level)

    def debug(self, event: str, **kw: Any) -> None:
        """Emit ``event`` with its key-value data at DEBUG (skipped cheaply when that level is off)."""
        if self._std.isEnabledFor(logging.DEBUG):
            self._bound.debug(event, **kw)

    def info(self, event: str, **kw: Any) -> None:
        """Emit ``event`` with its key-value data at INFO (skipped cheaply when that level is off)."""
        if self._std.isEnabledFor(logging.INFO):
            self._bound.info(event, **kw)

    def warning(self, event: str, **kw: Any) -> None:
        """Emit ``event`` with its key-value data at WARNING (skipped cheaply when that level is off)."""
        if self._std.isEnabledFor(logging.WARNING):
            self._bound.warning(event, **kw)

    def error(self, event: str, **kw: Any) -> None:
        """Emit ``event`` with its key-value data at ERROR."""
        self._bound.error(event, **kw)


def get_logger(name: str = "ditcache") -> KVLogger:
    """A key-value logger under the ``ditcache`` namespace."""
    if name != "ditcache" and not name.startswith("ditcache."):
        name = f"ditcache.{name}"
    return KVLogger(name)


_HANDLER_ATTR = "_ditcache_handler"


def configure_logging(level: int | str = "INFO", *, fmt: str = "console", stream: TextIO | None = None) -> None:
    """Attach one handler to the ``ditcache`` logger rendering events as ``console`` text or ``json`` lines.

    Calling it again replaces the handler (configuration happens once, in one place).
    """
    if fmt not in ("console", "json"):
        raise ValueError(f"fmt: expected 'console' or 'json', got {fmt!r}")
    import structlog

    renderer: Any = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        foreign_pre_chain=[structlog.stdlib.add_log_level, structlog.stdlib.add_logger_name],
    )
    root = logging.getLogger("ditcache")
    for h in list(root.handlers):
        if getattr(h, _HANDLER_ATTR, False):
            root.removeHandler(h)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    setattr(handler, _HANDLER_ATTR, True)
    root.addHandler(handler)
    root.setLevel(level if isinstance(level, int) else level.upper())
    root.propagate = False
