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


def test_split_inference_steps_is_memoised_and_matches_the_scheduler() -> None:
    from types import SimpleNamespace

    from diffusers import UniPCMultistepScheduler

    from ditcache.backends import base

    def expected(scheduler: UniPCMultistepScheduler, steps: int, ratio: float) -> tuple[int, int]:
        scheduler.set_timesteps(steps, device="cpu")
        high = int((scheduler.timesteps >= ratio * scheduler.config.num_train_timesteps).sum())
        return high, steps - high

    base._SPLIT_MEMO.clear()
    sched = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    pipe = SimpleNamespace(scheduler=sched, config={"boundary_ratio": 0.875})
    for steps in (4, 10, 40):
        split = base.split_inference_steps(pipe, steps)
        assert split == expected(UniPCMultistepScheduler.from_config(sched.config), steps, 0.875)
        assert 0 < split[0] < steps
    assert len(base._SPLIT_MEMO) == 3
    again = base.split_inference_steps(pipe, 10)
    assert again == expected(UniPCMultistepScheduler.from_config(sched.config), 10, 0.875)
    assert len(base._SPLIT_MEMO) == 3  # served from the memo
    assert sched.num_inference_steps is None  # the pipeline's scheduler is never touched
    other = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=12.0)
    pipe_other = SimpleNamespace(scheduler=other, config={"boundary_ratio": 0.875})
    assert base.split_inference_steps(pipe_other, 10) == expected(
        UniPCMultistepScheduler.from_config(other.config), 10, 0.875
    )
    assert len(base._SPLIT_MEMO) == 4  # another scheduler config is another entry
    assert base.split_inference_steps(SimpleNamespace(config={}), 10) == (10, 0)
