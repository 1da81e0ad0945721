"""``ditcache.tools.bench.sweeps``: unique names, every family swept, settings reaching the configs."""

from __future__ import annotations

import pytest

from ditcache import DBCacheConfig, MagCacheConfig, TeaCacheConfig
from ditcache.tools.bench import (
    OUR_SWEEP,
    SweepRow,
    method_from_row,
    our_methods,
    peer_methods,
)


def test_sweeps_have_unique_names_and_cover_every_family() -> None:
    for quick in (False, True):
        methods = our_methods("profile.json", quick=quick) + peer_methods([1.0, 0.9, 0.8], quick=quick)
        names = [m.name for m in methods]
        assert len(names) == len(set(names))
        fams = {m.family for m in methods}
        for needed in ("teacache", "magcache", "dbcache", "diffusers-fbc", "diffusers-magcache", "cache-dit-dbcache"):
            assert any(f.startswith(needed) for f in fams), needed
        assert any("+dbcache" in f for f in fams)  # a stack
        assert any(f.endswith("taylorseer") for f in fams if f.startswith(("teacache", "magcache", "dbcache")))
        assert any(f == "cache-dit-dbcache-taylorseer" for f in fams)
        # TaylorSeer forecasting the model output is swept, and the setting reaches the cache's config
        forecast_output = [m for m in methods if m.family.endswith("+taylorseer-output")]
        assert forecast_output
        for m in forecast_output:
            (cache,) = (k for k in ("teacache", "magcache") if k in m.params)
            assert m.params[cache]["taylorseer_target"] == "output"
        # the error tolerance is swept for both step-level caches, and reaches their configs
        for cache in ("teacache", "magcache"):
            tolerant = [m for m in methods if m.family.startswith(f"{cache}-rtol")]
            assert tolerant and all(0 < m.params[cache]["rtol"] < 1 for m in tolerant)


def test_sweep_rows_are_data_with_nothing_model_specific() -> None:
    for row in OUR_SWEEP:
        for method in [method_from_row(row, "calibrated.json")]:
            tea = method.params.get("teacache", {})
            assert "model" not in tea  # the library resolves the preset from the transformer's class
            if "magcache" in method.params:
                assert method.params["magcache"]["profile"] == "calibrated.json"


def test_extra_rows_from_configs_or_dicts() -> None:
    extra = [
        SweepRow("teacache-new", "TeaCache new knob", {"teacache": {"rel_l1_thresh": 0.5, "max_consecutive_skips": 3}}),
        SweepRow(None, "Mag over DB", ({"magcache": {"threshold": 0.1}}, DBCacheConfig(fn_compute_blocks=1))),
        ("magcache", "Mag own ratios", MagCacheConfig(threshold=0.1, mag_ratios=[1.0, 0.9, 0.8])),
        SweepRow(None, "Tea", TeaCacheConfig(rel_l1_thresh=0.3)),
    ]
    methods = our_methods("p.json", quick=True, extra=extra)
    by_name = {m.name: m for m in methods}
    assert list(by_name)[-4:] == [row[1] for row in extra]
    assert by_name["TeaCache new knob"].family == "teacache-new"
    assert by_name["TeaCache new knob"].params["teacache"] == {"rel_l1_thresh": 0.5, "max_consecutive_skips": 3}
    stack = by_name["Mag over DB"]
    assert stack.family == "magcache+dbcache" and stack.params["magcache"]["profile"] == "p.json"
    assert "profile" not in by_name["Mag own ratios"].params["magcache"]  # its own ratios are kept
    with pytest.raises(ValueError, match="configs: unknown cache 'fbc'"):
        method_from_row(("x", "x", {"fbc": {}}), "p.json")
    with pytest.raises(TypeError, match="configs: expected a cache config"):
        method_from_row(("x", "x", 3), "p.json")
    with pytest.raises(ValueError, match="names no cache"):
        method_from_row(("x", "x", ()), "p.json")
