"""ditcache.core.log: key-value events through structlog on stdlib logging, configured in one place."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from ditcache.core.log import configure_logging, get_logger


@pytest.fixture
def restore_ditcache_logger() -> Iterator[None]:
    root = logging.getLogger("ditcache")
    handlers, level, propagate = list(root.handlers), root.level, root.propagate
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    root.propagate = propagate


@pytest.mark.usefixtures("restore_ditcache_logger")
def test_json_events_carry_their_keys_and_respect_the_level() -> None:
    stream = io.StringIO()
    configure_logging("info", fmt="json", stream=stream)
    log = get_logger("ditcache.test")
    log.debug("test.hidden", step=1)
    log.info("test.event", step=3, skipped=True)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [d["event"] for d in lines] == ["test.event"]
    assert lines[0]["step"] == 3 and lines[0]["skipped"] is True and lines[0]["level"] == "info"
    assert lines[0]["logger"] == "ditcache.test"
    assert log.is_enabled_for(logging.INFO) and not log.is_enabled_for(logging.DEBUG)


@pytest.mark.usefixtures("restore_ditcache_logger")
def test_configuring_twice_replaces_the_handler() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("info", stream=first)
    configure_logging("info", stream=second)
    get_logger().info("test.once", n=1)
    assert first.getvalue() == "" and "test.once" in second.getvalue() and "n=1" in second.getvalue()


def test_bad_format_names_the_argument_and_names_are_namespaced() -> None:
    with pytest.raises(ValueError, match=r"fmt: expected 'console' or 'json'"):
        configure_logging(fmt="xml")
    assert get_logger("mymodule")._std.name == "ditcache.mymodule"


def test_unconfigured_logging_prints_readable_lines_not_event_dicts() -> None:
    """Without configure_logging, a warning reaches Python's last-resort handler as ``event=... key=value``."""
    import subprocess
    import sys

    code = (
        "from ditcache.core.log import get_logger; "
        "get_logger('ditcache.test').warning('test.borrowed', model='flux', source='TeaCache4FLUX')"
    )
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stderr
    assert "event='test.borrowed'" in err and "model='flux'" in err and "source='TeaCache4FLUX'" in err
    assert "{" not in err and "[ditcache.test]" in err


@pytest.mark.usefixtures("restore_ditcache_logger")
def test_plain_stdlib_handler_gets_readable_lines() -> None:
    stream = io.StringIO()
    root = logging.getLogger("ditcache")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    get_logger("ditcache.test").info("test.plain", step=2)
    assert stream.getvalue().startswith("INFO [ditcache.test] event='test.plain'") and "step=2" in stream.getvalue()
