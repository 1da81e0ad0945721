"""Running an evaluation (:func:`evaluate`) and calibrating MagCache for it (:func:`calibrate_magcache`)."""

from __future__ import annotations

import copy
import gc
import math
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import attrs
import torch
from torch import nn

from ditcache.bundled import get_bundled_model
from ditcache.core.metrics import psnr
from ditcache.profiles import Profile
from ditcache.tools.evaluation.counting import BlockCounter, BranchDecisions, block_list
from ditcache.tools.evaluation.results import Evaluation, RunResult, max_abs_error
from ditcache.tools.evaluation.settings import BeforeRun, EvalSettings, Method

__all__ = ["PROFILE_MODEL", "calibrate_magcache", "evaluate", "evaluation_units", "profile_model_name"]

PROFILE_MODEL = "ditcache-digits-dit"
"""The model name calibrated profiles of the bundled digits model carry (:func:`profile_model_name`)."""


def _transformer(model: nn.Module) -> nn.Module:
    """``model.transformer``: the module caches are applied to and blocks are counted on."""
    tf = model.transformer
    assert isinstance(tf, nn.Module)
    return tf


def profile_model_name(model: str) -> str:
    """The model name the calibrated profiles of the bundled model ``model`` carry: ``ditcache-<name>-dit``."""
    return f"ditcache-{get_bundled_model(model).name}-dit"


def calibrate_magcache(
    model: nn.Module, settings: EvalSettings, *, seed: int | None = None, path: str | Path | None = None
) -> Profile:
    """Calibrate MagCache's magnitude-ratio curves (one per CFG branch) on a copy of ``model``, the bundled model
    ``settings.model``.

    One uncached generation with ``settings``' labels, steps and guidance, from ``seed`` (default: a seed other
    than the evaluation's, so the curve is not fitted to the very samples it is judged on). Returns the profile;
    with ``path`` it is also written there (load it with ``MagCacheConfig(profile=path)``).
    """
    from ditcache.caches.magcache import MagCache, MagCacheConfig, apply_magcache_hook

    entry = get_bundled_model(settings.model)
    calibration_seed = settings.seed + 1000 if seed is None else seed
    work = copy.deepcopy(model)
    cache = apply_magcache_hook(_transformer(work), MagCacheConfig(calibrate=True))
    assert isinstance(cache, MagCache)
    entry.sample(
        work,
        list(settings.labels),
        settings.num_steps,
        settings.guidance_scale,
        calibration_seed,
        shift=settings.shift,
    )
    meta = {
        "calibration_seed": calibration_seed,
        "labels": list(settings.labels),
        "guidance_scale": settings.guidance_scale,
        "shift": settings.shift,
        "sampler": f"the bundled {entry.name} model's sampler (Euler flow matching)",
    }
    name = profile_model_name(entry.name)
    profile = cache.calibration_profile(model=name, metadata=meta)
    if path is not None:
        cache.save_profile(path, model=name, metadata=meta)
    return profile


# ---------------------------------------------------------------------------------------------- evaluation
def evaluation_units(num_methods: int, settings: EvalSettings) -> int:
    """Progress units :func:`evaluate` reports: one per sampling run (first run and timed runs of every method,
    the baseline and the block-less copy)."""
    return (num_methods + 1) * (1 + settings.repeats) + settings.repeats


@attrs.define
class _Entry:
    method: Method
    model: nn.Module | None
    before: BeforeRun | None
    error: str | None = None
    images: torch.Tensor | None = None
    calls: list[list[int]] = attrs.field(factory=list)
    seconds: list[float] = attrs.field(factory=list)
    reproducible: bool = True


def _clock(timer: str) -> Callable[[], float]:
    return time.perf_counter if timer == "wall" else time.process_time


def _run(entry_model: nn.Module, before: BeforeRun | None, settings: EvalSettings) -> torch.Tensor:
    if before is not None:
        before()
    return get_bundled_model(settings.model).sample(
        entry_model,
        list(settings.labels),
        settings.num_steps,
        settings.guidance_scale,
        settings.seed,
        shift=settings.shift,
    )


def _without_blocks(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose transformer has no blocks: every child ``ModuleList`` of blocks (as the model's
    extractor lists them) emptied."""
    bare = copy.deepcopy(model)
    tf = _transformer(bare)
    blocks = {id(b) for b in block_list(tf)}
    for attr, child in list(tf.named_children()):
        if isinstance(child, nn.ModuleList) and len(child) and all(id(b) in blocks for b in child):
            setattr(tf, attr, nn.ModuleList())
    return bare


def _decisions(calls: list[list[int]], settings: EvalSettings, num_blocks: int) -> tuple[BranchDecisions, ...]:
    branches = settings.branches
    expected = settings.num_steps * len(branches)
    if len(calls) != expected:
        raise RuntimeError(
            f"expected {expected} transformer calls ({settings.num_steps} steps x {len(branches)} branches), "
            f"counted {len(calls)}"
        )
    out = []
    for k, name in enumerate(branches):
        mine = calls[k :: len(branches)]
        out.append(BranchDecisions(name, tuple(c[0] for c in mine), tuple(c[1] for c in mine), num_blocks))
    return tuple(out)


def evaluate(
    methods: Sequence[Method],
    settings: EvalSettings | None = None,
    *,
    model: nn.Module | None = None,
    progress: Callable[[str], None] | None = None,
    shuffle_seed: int = 0,
) -> Evaluation:
    """Run every method and the uncached model with ``settings``; see the module docstring for what is measured.

    ``model`` is the model to copy, the bundled model ``settings.model`` (default: a fresh one from its registry
    entry, :func:`ditcache.bundled.get_bundled_model`); it is never modified. ``progress`` is called with a short
    description after every sampling run (:func:`evaluation_units` of them). A method whose installation or first
    run raises is reported with its :attr:`RunResult.error` instead of stopping the evaluation.
    """
    settings = settings if settings is not None else EvalSettings()
    names = [m.name for m in methods]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"methods: names must be unique, repeated: {dupes}")
    bundled = get_bundled_model(settings.model)
    base = model if model is not None else bundled.load()
    from ditcache.core.runtime import get_cache_runtime

    runtime = get_cache_runtime(_transformer(base))
    if runtime is not None and runtime.middlewares:
        raise ValueError(
            f"model: caches {[m.name for m in runtime.middlewares]} are applied to model.transformer; pass an "
            "uncached model (ditcache.remove_cache(model.transformer)): it is the uncached reference"
        )
    base = copy.deepcopy(base).eval()  # never touch the caller's model (caches install hooks on copies)
    tick = progress if progress is not None else (lambda _: None)

    baseline_method = Method("uncached", "baseline", "uncached")
    entries = [_Entry(baseline_method, copy.deepcopy(base), None)]
    for method in methods:
        work = copy.deepcopy(base)
        try:
            before = method.install(work, settings)
            entries.append(_Entry(method, work, before))
        except Exception as exc:  # a peer that cannot run here is reported, not fatal
            entries.append(_Entry(method, None, None, error=f"install: {type(exc).__name__}: {exc}"))
    bare = _without_blocks(base)

    num_blocks = len(block_list(_transformer(base)))
    with torch.inference_mode():
        # First run of every configuration: decisions, samples, and the warm-up of its code paths.
        for entry in entries:
            if entry.model is not None:
                try:
                    with BlockCounter(_transformer(entry.model)) as counter:
                        entry.images = _run(entry.model, entry.before, settings)
                    entry.calls = counter.calls
                    _decisions(entry.calls, settings, num_blocks)
                except Exception as exc:
                    entry.error = f"run: {type(exc).__name__}: {exc}"
                    entry.model = None
            tick(f"first run: {entry.method.name}")
        _run(bare, None, settings)  # warm-up of the block-less copy
        # Timed runs, interleaved in a shuffled order per round.
        clock = _clock(settings.timer)
        rng = random.Random(shuffle_seed)
        timed: list[_Entry | None] = [e for e in entries if e.model is not None]
        timed.append(None)  # the block-less copy
        bare_seconds: list[float] = []
        gc_was_enabled = gc.isenabled()
        gc.collect()
        try:
            for r in range(settings.repeats):
                order = list(timed)
                rng.shuffle(order)
                for item in order:
                    gc.collect(1)  # the young generations only: a full collection takes ~0.3 s with diffusers loaded
                    gc.disable()
                    target = bare if item is None else item.model
                    assert target is not None
                    before = None if item is None else item.before
                    start = clock()
                    images = _run(target, before, settings)
                    elapsed = clock() - start
                    if gc_was_enabled:
                        gc.enable()
                    if item is None:
                        bare_seconds.append(elapsed)
                        tick(f"timed run {r + 1}/{settings.repeats}: without blocks")
                        continue
                    item.seconds.append(elapsed)
                    if item.images is not None and not torch.equal(images, item.images):
                        item.reproducible = False
                    tick(f"timed run {r + 1}/{settings.repeats}: {item.method.name}")
        finally:
            if gc_was_enabled:
                gc.enable()

    fixed = min(bare_seconds)
    data_range = bundled.data_range
    reference = entries[0].images
    assert reference is not None
    base_seconds = min(entries[0].seconds)

    def result(entry: _Entry) -> RunResult:
        if entry.error is not None or entry.images is None:
            return RunResult(
                method=entry.method,
                seconds=math.inf,
                all_seconds=(),
                baseline_seconds=base_seconds,
                fixed_seconds=fixed,
                decisions=(),
                psnr=math.nan,
                max_abs_error=math.nan,
                reproducible=False,
                error=entry.error or "no samples",
            )
        return RunResult(
            method=entry.method,
            seconds=min(entry.seconds),
            all_seconds=tuple(entry.seconds),
            baseline_seconds=base_seconds,
            fixed_seconds=fixed,
            decisions=_decisions(entry.calls, settings, num_blocks),
            psnr=psnr(entry.images, reference, data_range),
            max_abs_error=max_abs_error(entry.images, reference),
            reproducible=entry.reproducible,
            images=entry.images,
        )

    return Evaluation(
        settings=settings,
        baseline=result(entries[0]),
        results=tuple(result(e) for e in entries[1:]),
        fixed_seconds=fixed,
        torch_threads=torch.get_num_threads(),
    )
