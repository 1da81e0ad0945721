"""The one rule for which step counts have preset step masks, shared by the backends and the mask builder."""

from __future__ import annotations

import pytest

from ditcache.backends import cache_dit_backend
from ditcache.backends.ditcache_backend import DitCacheBackend
from ditcache.caches.step_masks import SCM_PRESETS, preset_available, preset_mask


@pytest.mark.parametrize("steps", range(1, 41))
def test_preset_available_matches_the_mask_builder(steps: int) -> None:
    for name in SCM_PRESETS:
        if preset_available(steps):
            assert len(preset_mask(name, steps)) == steps
        else:
            with pytest.raises(ValueError, match="4, 6 and >= 8"):
                preset_mask(name, steps)
    assert cache_dit_backend.scm_supported(steps) is preset_available(steps)


def test_ditcache_backend_drops_the_preset_where_none_exists() -> None:
    backend = DitCacheBackend({"ditcache_stack": ["db_cache"], "scm_steps_mask_policy": "fast"})
    assert [n for n in range(1, 12) if backend.dbcache_config(n).steps_computation_mask is None] == [1, 2, 3, 5, 7]
    assert backend.dbcache_config(None).steps_computation_mask is None
    assert backend.dbcache_config(20).steps_computation_mask == "fast"
