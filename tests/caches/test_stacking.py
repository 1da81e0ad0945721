"""The stacking contract of the cache middlewares, on the tiny random Flux of ``tests/_support/flux.py`` (20-step loop).

* Order: a step-level cache (TeaCache, MagCache; ``order`` 0) always sits outside the block-level DBCache (``order``
  10), whatever the order the caches were applied in, and applying in either order gives identical runs.
* Composition: the outer cache decides whole-step reuse; DBCache only sees, and records, the steps the outer one
  computes, and on those it behaves exactly as DBCache alone fed the same calls.
* Refusal: two step-level caches on one module are refused with an error naming both; the module keeps running
  the first one as if nothing had happened.
* Reset on change: adding or removing a cache restarts every remaining cache, which from the next call on behaves
  exactly as if it had been applied alone; ``remove_cache`` with no name restores the module exactly.
* CFG: every cache of a stack keeps its state per branch.

Exactness is ``torch.equal`` throughout: the same float32 operations run in the same order on CPU.
"""

from __future__ import annotations

import copy
import functools
import itertools
from collections.abc import Callable
from typing import Any

import pytest
import torch
from diffusers import FluxTransformer2DModel

import ditcache
from _support.flux import BranchMode, FluxCall, FluxInputs, denoise, replay
from _support.probes import count_block_calls, decisions
from ditcache.core import CacheMiddleware
from ditcache.core.cache import insertion_index
from ditcache.core.hooks import HookRegistry
from ditcache.core.runtime import get_cache_runtime

STEPS = 20
NUM_BLOCKS = 4  # 2 double + 2 single blocks in the tiny Flux
LINEAR = (0.0, 0.0, 0.0, 10.0, 0.0)  # TeaCache polynomial for the random model: 10 * x

Spec = tuple[str, dict[str, Any]]
"""A cache to apply: its name and its config fields."""

TEA: Spec = ("teacache", {"rel_l1_thresh": 0.6, "coefficients": LINEAR})
MAG: Spec = ("magcache", {"threshold": 0.06, "max_skip_steps": 3, "retention_ratio": 0.1, "model": "flux.1-dev"})
DB: Spec = (
    "dbcache",
    {"fn_compute_blocks": 1, "bn_compute_blocks": 0, "max_warmup_steps": 4, "residual_diff_threshold": 0.3},
)
TEA_NEVER: Spec = ("teacache", {**TEA[1], "rel_l1_thresh": 1e-9})  # the accumulated distance always exceeds it
MAG_NEVER: Spec = ("magcache", {**MAG[1], "retention_ratio": 0.99})  # int(0.99 * 20 + 0.5) = 20: all retained
DB_NEVER: Spec = ("dbcache", {**DB[1], "residual_diff_threshold": 0.0})  # <= 0 never caches

STEP_LEVEL = [TEA, MAG]
STEP_LEVEL_NEVER = {"teacache": TEA_NEVER, "magcache": MAG_NEVER}

_APPLY: dict[str, Callable[[torch.nn.Module, dict[str, Any]], CacheMiddleware[Any]]] = {
    "teacache": ditcache.apply_teacache_hook,
    "magcache": ditcache.apply_magcache_hook,
    "dbcache": ditcache.apply_dbcache_hook,
}


pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------------------------ helpers
def apply(model: torch.nn.Module, spec: Spec) -> CacheMiddleware[Any]:
    name, settings = spec
    return _APPLY[name](model, settings)


def stacked(base: FluxTransformer2DModel, *specs: Spec) -> tuple[FluxTransformer2DModel, list[CacheMiddleware[Any]]]:
    """A deep copy of ``base`` with ``specs`` applied in that order and the step count made known."""
    model = copy.deepcopy(base)
    caches = [apply(model, spec) for spec in specs]
    ditcache.refresh(model, num_inference_steps=STEPS)
    return model, caches


def run(
    model: FluxTransformer2DModel,
    inputs: FluxInputs,
    cfg: float | None = None,
    *,
    on_step: Callable[[int], None] | None = None,
    trace: list[FluxCall] | None = None,
    branch_mode: BranchMode = "auto",
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One generation: the final latents and the model's output of every call."""
    outputs: list[torch.Tensor] = []
    handle = model.register_forward_hook(lambda mod, args, out: outputs.append(out[0]))
    try:
        final = denoise(model, STEPS, cfg, inputs=inputs, on_step=on_step, trace=trace, branch_mode=branch_mode)
    finally:
        handle.remove()
    return final, outputs


def block_runs_per_step(model: FluxTransformer2DModel, inputs: FluxInputs) -> tuple[torch.Tensor, list[int]]:
    """Run one generation; return the final latents and how many block executions each step made."""
    marks: list[int] = []
    with count_block_calls(model) as counts:
        final, _ = run(model, inputs, on_step=lambda i: marks.append(sum(counts)))
        marks.append(sum(counts))
    return final, [b - a for a, b in itertools.pairwise(marks)]


def at_step(step: int, action: Callable[[], object]) -> Callable[[int], None]:
    """An ``on_step`` callback running ``action`` just before step ``step``'s calls."""

    def hook(i: int) -> None:
        if i == step:
            action()

    return hook


def names(model: torch.nn.Module) -> list[str]:
    runtime = get_cache_runtime(model)
    assert runtime is not None
    return [mw.name for mw in runtime.middlewares]


# ------------------------------------------------------------------------------------------------------ order
@pytest.mark.parametrize("outer", STEP_LEVEL, ids=lambda s: s[0])
def test_step_level_sits_outside_block_level_in_either_application_order(
    base: FluxTransformer2DModel, inputs: FluxInputs, outer: Spec
) -> None:
    model_a, (outer_a, db_a) = stacked(base, outer, DB)
    model_b, (db_b, outer_b) = stacked(base, DB, outer)
    for model in (model_a, model_b):
        assert names(model) == [outer[0], "dbcache"]
        runtime = get_cache_runtime(model)
        assert runtime is not None
        step_mw, block_mw = runtime.middlewares
        assert (step_mw.level, block_mw.level) == ("step", "block")
        assert insertion_index([step_mw], block_mw) == 1 and insertion_index([block_mw], step_mw) == 0
    out_a, calls_a = run(model_a, inputs)
    out_b, calls_b = run(model_b, inputs)
    assert torch.equal(out_a, out_b)
    assert all(torch.equal(x, y) for x, y in zip(calls_a, calls_b, strict=True))
    assert decisions(outer_a) == decisions(outer_b)
    assert decisions(db_a) == decisions(db_b)
    # The setting is one where both caches act, so the comparison covers reuse at both levels.
    assert outer_a.stats()[-1].skipped_steps and db_a.stats()[-1].skipped_steps


# ------------------------------------------------------------------------------------------------------ composition
@pytest.mark.parametrize("outer", STEP_LEVEL, ids=lambda s: s[0])
def test_dbcache_acts_only_inside_the_steps_the_outer_cache_computes(
    base: FluxTransformer2DModel, inputs: FluxInputs, outer: Spec
) -> None:
    model, (outer_mw, db) = stacked(base, outer, DB)
    trace: list[FluxCall] = []
    marks: list[int] = []
    with count_block_calls(model) as counts:
        final, outputs = run(model, inputs, trace=trace, on_step=lambda i: marks.append(sum(counts)))
        marks.append(sum(counts))
    per_step = [b - a for a, b in itertools.pairwise(marks)]
    computed = outer_mw.stats()[-1].computed_steps
    skipped = outer_mw.stats()[-1].skipped_steps
    db_cached = db.stats()[-1].skipped_steps
    assert skipped and db_cached, "both caches should act at this setting"
    # DBCache records exactly the steps the outer cache computes.
    assert [d.step for d in db.stats()[-1].decisions] == computed
    # Blocks per step: none on an outer skip, the Fn first blocks on a DBCache hit, all of them otherwise.
    fn = DB[1]["fn_compute_blocks"]
    expected = [0 if s in skipped else fn if s in db_cached else NUM_BLOCKS for s in range(STEPS)]
    assert per_step == expected

    # On the steps the outer cache computes, DBCache is exactly DBCache alone fed those calls at those step indices.
    solo = copy.deepcopy(base)
    solo_db = apply(solo, DB)
    ditcache.refresh(solo, num_inference_steps=STEPS)
    with torch.no_grad():
        for call in trace:
            if call.step in computed:
                with solo.cache_context("cond", step_index=call.step):
                    assert torch.equal(solo(**call.kwargs)[0], outputs[call.step])
    assert decisions(solo_db) == decisions(db)

    # The combination saves more block executions than either cache alone.
    alone_outer, _ = stacked(base, outer)
    alone_db, _ = stacked(base, DB)
    _, outer_steps = block_runs_per_step(alone_outer, inputs)
    _, db_steps = block_runs_per_step(alone_db, inputs)
    assert sum(per_step) < min(sum(outer_steps), sum(db_steps))
    assert torch.isfinite(final).all()


@pytest.mark.parametrize("outer", ["teacache", "magcache"])
def test_never_skipping_outer_cache_equals_dbcache_alone(
    base: FluxTransformer2DModel, inputs: FluxInputs, outer: str
) -> None:
    model, (outer_mw, db) = stacked(base, STEP_LEVEL_NEVER[outer], DB)
    alone, (db_alone,) = stacked(base, DB)
    out, _ = run(model, inputs)
    ref, _ = run(alone, inputs)
    assert outer_mw.stats()[-1].skipped_steps == []
    assert db_alone.stats()[-1].skipped_steps, "DBCache alone should cache at this setting"
    assert torch.equal(out, ref)
    assert decisions(db) == decisions(db_alone)


@pytest.mark.parametrize("outer", STEP_LEVEL, ids=lambda s: s[0])
def test_never_hitting_dbcache_equals_the_outer_cache_alone(
    base: FluxTransformer2DModel, inputs: FluxInputs, outer: Spec
) -> None:
    model, (outer_mw, db) = stacked(base, outer, DB_NEVER)
    alone, (outer_alone,) = stacked(base, outer)
    out, _ = run(model, inputs)
    ref, _ = run(alone, inputs)
    assert db.stats()[-1].skipped_steps == []
    assert outer_alone.stats()[-1].skipped_steps, "the outer cache alone should skip at this setting"
    assert torch.equal(out, ref)
    assert decisions(outer_mw) == decisions(outer_alone)


# ------------------------------------------------------------------------------------------------------ refusal
@pytest.mark.parametrize(("first", "second"), [(TEA, MAG), (MAG, TEA)], ids=["teacache-then-magcache", "reverse"])
def test_two_step_level_caches_are_refused_and_the_first_keeps_working(
    base: FluxTransformer2DModel, inputs: FluxInputs, first: Spec, second: Spec
) -> None:
    model, (first_mw,) = stacked(base, first)
    with pytest.raises(ValueError, match="step-level") as info:
        apply(model, second)
    message = str(info.value)
    assert f"{second[0]!r}" in message and f"{first[0]!r}" in message
    assert names(model) == [first[0]]
    alone, (alone_mw,) = stacked(base, first)
    out, _ = run(model, inputs)
    ref, _ = run(alone, inputs)
    assert torch.equal(out, ref)
    assert decisions(first_mw) == decisions(alone_mw)
    assert first_mw.stats()[-1].skipped_steps

    # Refused in the middle of a generation: nothing changed, so nothing was reset either.
    refusals: list[str] = []

    def try_second(step: int) -> None:
        if step == STEPS // 2:
            with pytest.raises(ValueError, match="step-level") as err:
                apply(model, second)
            refusals.append(str(err.value))

    out, _ = run(model, inputs, on_step=try_second)
    assert refusals and torch.equal(out, ref)
    assert decisions(first_mw) == decisions(alone_mw)

    # With a block-level cache in the stack, the refusal leaves the whole stack as it was.
    apply(model, DB)
    with pytest.raises(ValueError, match="step-level"):
        apply(model, second)
    assert names(model) == [first[0], "dbcache"]


# ------------------------------------------------------------------------------------------------------ reset on change
PAIRS = [(TEA, DB), (MAG, DB)]
PAIR_IDS = ["teacache+dbcache", "magcache+dbcache"]


@pytest.mark.parametrize("removed", [0, 1], ids=["remove-outer", "remove-inner"])
@pytest.mark.parametrize("pair", PAIRS, ids=PAIR_IDS)
def test_removing_one_cache_leaves_the_other_as_if_applied_alone(
    base: FluxTransformer2DModel, inputs: FluxInputs, pair: tuple[Spec, Spec], removed: int
) -> None:
    kept = pair[1 - removed]
    model, caches = stacked(base, *pair)
    run(model, inputs)
    assert [mw.name for mw in ditcache.remove_cache(model, pair[removed][0])] == [pair[removed][0]]
    assert names(model) == [kept[0]]
    out, _ = run(model, inputs)
    alone, (alone_mw,) = stacked(base, kept)
    ref, _ = run(alone, inputs)
    assert torch.equal(out, ref)
    assert decisions(caches[1 - removed]) == decisions(alone_mw)
    assert alone_mw.stats()[-1].skipped_steps


@pytest.mark.parametrize("removed", [0, 1], ids=["remove-outer", "remove-inner"])
@pytest.mark.parametrize("pair", PAIRS, ids=PAIR_IDS)
def test_removing_one_cache_mid_generation(
    base: FluxTransformer2DModel, inputs: FluxInputs, pair: tuple[Spec, Spec], removed: int
) -> None:
    at = 7
    kept = pair[1 - removed]
    model, caches = stacked(base, *pair)
    kept_mw = caches[1 - removed]
    trace: list[FluxCall] = []
    _, outputs = run(
        model, inputs, trace=trace, on_step=at_step(at, lambda: ditcache.remove_cache(model, pair[removed][0]))
    )
    assert names(model) == [kept[0]]
    # From the call after the removal on, the kept cache restarted: exactly a fresh one fed the remaining calls.
    restarted = decisions(kept_mw)
    assert len(restarted) == STEPS - at and restarted[0][:2] == (0, True)
    fresh, (fresh_mw,) = stacked(base, kept)
    for got, want in zip(replay(fresh, trace[at:]), outputs[at:], strict=True):
        assert torch.equal(got, want)
    assert decisions(fresh_mw) == restarted
    # The next generation is exact.
    out, _ = run(model, inputs)
    alone, (alone_mw,) = stacked(base, kept)
    ref, _ = run(alone, inputs)
    assert torch.equal(out, ref)
    assert decisions(kept_mw) == decisions(alone_mw)


@pytest.mark.parametrize("pair", PAIRS, ids=PAIR_IDS)
def test_adding_a_cache_mid_generation_restarts_the_stack(
    base: FluxTransformer2DModel, inputs: FluxInputs, pair: tuple[Spec, Spec]
) -> None:
    at = 7
    for first, second in (pair, pair[::-1]):
        model, _ = stacked(base, first)
        trace: list[FluxCall] = []
        add_second = functools.partial(apply, model, second)
        _, outputs = run(model, inputs, trace=trace, on_step=at_step(at, add_second))
        assert names(model) == [pair[0][0], pair[1][0]]
        fresh, _ = stacked(base, *pair)
        for got, want in zip(replay(fresh, trace[at:]), outputs[at:], strict=True):
            assert torch.equal(got, want)
        out, _ = run(model, inputs)
        ref, _ = run(stacked(base, *pair)[0], inputs)
        assert torch.equal(out, ref)
    # Re-applying an equal cache is no change: no restart, the generation runs on undisturbed.
    model, (mw,) = stacked(base, pair[0])
    alone, (alone_mw,) = stacked(base, pair[0])
    out, _ = run(model, inputs, on_step=at_step(at, lambda: apply(model, pair[0])))
    ref, _ = run(alone, inputs)
    assert torch.equal(out, ref) and decisions(mw) == decisions(alone_mw)


@pytest.mark.parametrize("pair", PAIRS, ids=PAIR_IDS)
def test_remove_cache_removes_every_cache_and_restores_the_module(
    base: FluxTransformer2DModel, inputs: FluxInputs, pair: tuple[Spec, Spec]
) -> None:
    native, _ = run(copy.deepcopy(base), inputs)
    model, caches = stacked(base, *pair)
    assert "forward" in model.__dict__ and "cache_context" in model.__dict__
    cached, _ = run(model, inputs)
    assert not torch.equal(cached, native)
    removed = ditcache.remove_cache(model)
    assert sorted(mw.name for mw in removed) == sorted(mw.name for mw in caches)
    assert get_cache_runtime(model) is None and HookRegistry.get(model) is None
    for sub in model.modules():
        leftovers = [k for k in vars(sub) if k == "forward" or k == "cache_context" or k.startswith("_ditcache")]
        assert leftovers == [], f"{type(sub).__name__} keeps {leftovers}"
    assert type(model).forward is FluxTransformer2DModel.forward
    out, _ = run(model, inputs)
    assert torch.equal(out, native)
    assert ditcache.remove_cache(model) == []


# ------------------------------------------------------------------------------------------------------ CFG
@pytest.mark.parametrize("pair", PAIRS, ids=PAIR_IDS)
def test_cfg_stack_keeps_per_branch_state_in_both_caches(
    base: FluxTransformer2DModel, inputs: FluxInputs, pair: tuple[Spec, Spec]
) -> None:
    model, caches = stacked(base, *pair)
    trace: list[FluxCall] = []
    out, outputs = run(model, inputs, 3.0, trace=trace)
    for mw in caches:
        finished = mw.stats()[-2:]
        assert len({s.branch for s in finished}) == 2
        assert all(s.skipped_steps for s in finished), f"{mw.name} should act on both branches"
    # Each branch's calls, fed alone to a fresh stack, give exactly the interleaved run's outputs: no state leaks
    # between cond and uncond in either cache.
    for branch in ("cond", "uncond"):
        indices = [i for i, call in enumerate(trace) if call.branch == branch]
        fresh, _ = stacked(base, *pair)
        for got, i in zip(replay(fresh, [trace[i] for i in indices]), indices, strict=True):
            assert torch.equal(got, outputs[i])
    # The comparison can fail: one shared branch for both (a wrong setup) mixes the state and changes the outputs.
    shared, _ = stacked(base, *pair)
    with ditcache.cfg_branch("shared"):
        mixed = replay(shared, trace)
    assert any(not torch.equal(a, b) for a, b in zip(mixed, outputs, strict=True))
    # Pipeline-style names (cache_context) reach both caches and give the same run.
    named, named_caches = stacked(base, *pair)
    named_out, _ = run(named, inputs, 3.0, branch_mode="cache_context")
    assert torch.equal(named_out, out)
    for mw in named_caches:
        assert {str(s.branch) for s in mw.stats()[-2:]} == {"cond", "uncond"}
