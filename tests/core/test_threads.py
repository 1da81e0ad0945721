"""Thread safety: separate cached models in separate threads are independent; one model shared by threads is
refused clearly on concurrent entry."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

import ditcache
from _support.flux import denoise, make_flux, make_inputs


def _cached(seed: int) -> torch.nn.Module:
    model = make_flux(seed=seed)
    ditcache.apply_teacache_hook(model, ditcache.TeaCacheConfig(rel_l1_thresh=0.4))
    return model


def test_separate_models_in_separate_threads_equal_single_threaded_runs() -> None:
    seeds = (0, 1, 2)
    expected = [denoise(m, 12, cfg=3.0, inputs=make_inputs(m)) for m in map(_cached, seeds)]
    models = [_cached(seed) for seed in seeds]
    barrier = threading.Barrier(len(models))

    def run(model: torch.nn.Module) -> list[torch.Tensor]:
        barrier.wait()
        return [denoise(model, 12, cfg=3.0, inputs=make_inputs(model)) for _ in range(2)]

    with ThreadPoolExecutor(len(models)) as pool:
        results = list(pool.map(run, models))
    for want, got in zip(expected, results, strict=True):
        assert all(torch.equal(want, out) for out in got)


def test_one_model_entered_from_two_threads_is_refused() -> None:
    model = _cached(0)
    inputs = make_inputs(model)
    inside, release = threading.Event(), threading.Event()

    def hold(module: torch.nn.Module, args: object) -> None:
        if threading.current_thread().name == "holder":
            inside.set()
            release.wait(30)

    handle = model.transformer_blocks[0].register_forward_pre_hook(hold)
    holder = threading.Thread(target=lambda: denoise(model, 2, inputs=inputs), name="holder")
    holder.start()
    try:
        assert inside.wait(30)
        with pytest.raises(RuntimeError, match="running a cached forward in another thread"):
            denoise(model, 2, inputs=inputs)
    finally:
        release.set()
        holder.join(30)
        handle.remove()
    out = denoise(model, 2, inputs=inputs)  # free again afterwards
    assert torch.isfinite(out).all()
