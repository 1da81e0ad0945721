"""``ditcache.tools.bench.sweeps``: unique names, every family swept, settings reaching the configs."""

from __future__ import annotations

from ditcache.tools.bench import (
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
        assert all(m.params["teacache"]["taylorseer_target"] == "output" for m in forecast_output)
