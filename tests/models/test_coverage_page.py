"""``docs/coverage.md`` is generated from the registry and must match it; every diffusers DiT class is either
covered or refused with a reason."""

from __future__ import annotations

from pathlib import Path

import diffusers

from ditcache.models import SUPPORTED, UNSUPPORTED
from ditcache.models.coverage import coverage, render_coverage_page

PAGE = Path(__file__).resolve().parents[2] / "docs" / "coverage.md"


def test_coverage_page_matches_the_registry() -> None:
    assert PAGE.read_text() == render_coverage_page(), (
        "docs/coverage.md is stale: run `PYTHONPATH=src python -m ditcache.models.coverage > docs/coverage.md`"
    )


def test_every_known_class_is_covered_or_refused() -> None:
    assert not set(SUPPORTED) & set(UNSUPPORTED)
    assert len(SUPPORTED) + len(UNSUPPORTED) == 67  # the generation DiTs of diffusers 0.42 (survey)
    for name in [*SUPPORTED, *UNSUPPORTED]:
        assert hasattr(diffusers, name), name
    for row in coverage():
        assert row.models, f"{row.class_name}: the module docstring names no models"
        assert row.teacache is not None and row.magcache is not None, row.class_name
