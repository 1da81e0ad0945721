"""The step clock is the one owner of CFG roles and generation boundaries (ditcache.core.clock, core.branch).

Proves: the one role rule (names by prefix, automatic branches by their position in a run); the clock announces
each generation's start and end exactly once (last step, restart, refresh, eviction); the caches keep one slot per
branch driven by those announcements; and the role reaches every cache through ``ctx.role`` (automatic and named
branches agree, also for TeaCache's per-branch polynomials).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from pathlib import Path

import pytest
import torch

import ditcache
from _support.flux import denoise, make_flux, make_inputs
from ditcache import profiles
from ditcache.caches.magcache import branch_role
from ditcache.caches.teacache import branch_coefficient_role
from ditcache.core.branch import named_role, role_of
from ditcache.core.clock import StepClock

SIG = ((1, 4), torch.float32, torch.device("cpu"))


class Recorder:
    """A generation listener that logs what the clock announces."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Hashable, int, str | None]] = []

    def generation_started(self, branch: Hashable, generation: int, role: str) -> None:
        self.events.append(("start", branch, generation, role))

    def generation_ended(self, branch: Hashable, generation: int) -> None:
        self.events.append(("end", branch, generation, None))


def auto(n: int) -> str:
    return f"auto:{n}:cpu:1x{n}"  # a name in the automatic namespace, as AutoIdentities gives


# ------------------------------------------------------------------------------------------------ the role rule
def test_one_role_rule_and_its_thin_delegates() -> None:
    for name, role in [("cond", "cond"), ("Uncond", "uncond"), ("negative_prompt", "uncond"), ("uncond_stg", "uncond")]:
        assert named_role(name) == role_of(name) == role_of(name, 5) == branch_role(name) == role
        assert branch_coefficient_role(name) == role
    assert role_of("cond_uncond") == "cond" and role_of(3) == "cond"  # any other name: cond
    for nameless in ("default", auto(3)):
        assert named_role(nameless) is None and branch_coefficient_role(nameless) is None
        assert role_of(nameless, 0) == "cond" and role_of(nameless, 1) == role_of(nameless, 2) == "uncond"
        assert branch_role(nameless) == "cond"
    with pytest.raises(ValueError, match=r"position: expected an int >= 0, got -1"):
        role_of("x", -1)


def test_automatic_roles_follow_the_order_of_each_run() -> None:
    clock = StepClock()
    a, b, c = auto(1), auto(2), auto(3)
    ticks = [clock.advance(br, t, SIG) for t in (1.0, 0.5) for br in (a, b)]
    expected = [(a, "cond", 0), (b, "uncond", 0), (a, "cond", 1), (b, "uncond", 1)]
    assert [(t.branch, t.role, t.step) for t in ticks] == expected
    # A new run started by b (it restarts first) makes b the conditional branch of that run.
    assert clock.advance(b, 1.0, SIG).role == "cond"
    assert clock.advance(a, 1.0, SIG).role == "uncond"
    # A branch arriving after the run moved past step 0 starts a new run.
    clock.advance(b, 0.5, SIG)
    assert clock.advance(c, 1.0, SIG).role == "cond"
    # Named branches keep their name's role wherever they come.
    assert clock.advance("uncond", 1.0, SIG).role == "uncond" and clock.advance("cond", 1.0, SIG).role == "cond"


# -------------------------------------------------------------------------------------------- boundaries
def test_each_generation_starts_and_ends_exactly_once() -> None:
    rec = Recorder()
    clock = StepClock([rec])
    for _ in range(2):  # two generations of two steps, both branches, each bounded by a refresh
        clock.refresh(2)
        for t in (1.0, 0.5):
            for br in ("cond", "uncond"):
                tick = clock.advance(br, t, SIG)
                clock.call_done(br)
                assert tick.started == (t == 1.0)
    assert rec.events == [
        ("start", "cond", 1, "cond"),
        ("start", "uncond", 2, "uncond"),
        ("end", "cond", 1, None),
        ("end", "uncond", 2, None),
        ("start", "cond", 3, "cond"),
        ("start", "uncond", 4, "uncond"),
        ("end", "cond", 3, None),
        ("end", "uncond", 4, None),
    ]


def test_restart_refresh_and_eviction_end_the_open_generation() -> None:
    rec = Recorder()
    clock = StepClock([rec])
    clock.advance("x", 1.0, SIG)
    clock.advance("x", 0.5, SIG)
    clock.advance("x", 1.0, SIG)  # the timestep went back up: a new generation ends the first
    assert rec.events == [("start", "x", 1, "cond"), ("end", "x", 1, None), ("start", "x", 2, "cond")]
    rec.events.clear()
    clock.refresh(None)
    clock.refresh(None)  # nothing open any more: no second end
    assert rec.events == [("end", "x", 2, None)]
    rec.events.clear()
    clock.max_branches = 2
    for name in ("a", "b", "c"):
        clock.advance(name, 1.0, SIG)
    # x (closed by the refresh) went first, then a, whose open generation the eviction ended.
    assert rec.events == [
        ("start", "a", 3, "cond"),
        ("start", "b", 4, "cond"),
        ("end", "a", 3, None),
        ("start", "c", 5, "cond"),
    ]
    assert clock.branches() == ["b", "c"]


def test_the_timestep_is_read_only_when_the_timestep_rules_decide() -> None:
    reads: list[float] = []

    def lazy(t: float) -> Callable[[], float]:
        def read() -> float:
            reads.append(t)
            return t

        return read

    clock = StepClock()
    ticks = [clock.advance("x", lazy(t), SIG) for t in (1.0, 0.5, 1.0)]  # undriven: read once per call
    assert reads == [1.0, 0.5, 1.0] and [k.generation for k in ticks] == [1, 1, 2]  # a lazy value decides alike
    reads.clear()
    for i, t in enumerate((1.0, 0.5)):  # a step hint says where the loop is: never read
        clock.advance("y", lazy(t), SIG, i)
    assert reads == []
    clock.refresh(3, driven=True)  # a pipeline drives the generations: never read, a non-monotone run is one
    ticks = [clock.advance("x", lazy(t), SIG) for t in (1.0, 0.5, 1.0)]
    assert reads == [] and [(k.step, k.generation) for k in ticks] == [(0, 4), (1, 4), (2, 4)]


def test_a_cache_keeps_one_slot_per_branch_and_never_detects_generations() -> None:
    model = make_flux()
    inputs = make_inputs(model)
    cache = ditcache.apply_teacache_hook(model, {"rel_l1_thresh": 0.3, "model": "flux.1-dev"})
    ditcache.refresh(model, 4)
    denoise(model, 4, cfg=3.0, inputs=inputs, branch_mode="cfg_branch")
    assert cache._slots == {}  # both generations ended at their last step: no state kept
    assert [(s.branch, len(s.decisions)) for s in cache.stats()] == [("cond", 4), ("uncond", 4)]
    runtime = ditcache.get_cache_runtime(model)
    assert runtime is not None
    # A generation the clock did not announce is an error, not a silent restart.
    runtime.clock.advance("cond", 1.0, SIG)
    with pytest.raises(RuntimeError, match="a cache object serves one module"):
        cache.state(make_ctx_like(cache, "cond", generation=999))


def make_ctx_like(cache: ditcache.TeaCache, branch: str, generation: int) -> ditcache.CacheContext:
    from ditcache.core.context import BlockStack, CacheContext

    block = torch.nn.Identity()
    stack = BlockStack(lambda i, h, e: (h, e), [block])
    h = torch.zeros(1, 2, 4)
    return CacheContext(
        modulated_input=h,
        hidden_states=h,
        encoder_hidden_states=None,
        temb=torch.zeros(1, 4),
        blocks=stack,
        postprocess=lambda h, e: h,
        branch=branch,
        generation=generation,
    )


# ------------------------------------------------------------------------------------- roles reach the caches
def test_teacache_per_branch_fits_follow_ctx_role_for_automatic_and_named_branches(tmp_path: Path) -> None:
    # cond: a huge constant (never skips); uncond: zero (skips all but the forced first and last steps)
    profile = profiles.Profile(
        kind="teacache",
        model="m",
        data={
            "coefficients": [0, 0, 0, 0, 1],
            "branches": {"cond": {"coefficients": [0, 0, 0, 0, 1e6]}, "uncond": {"coefficients": [0, 0, 0, 0, 0]}},
        },
    )
    path = profiles.save_profile(profile, tmp_path / "split.json")
    steps = 6
    by_mode = {}
    for mode in ("auto", "cfg_branch", "cache_context"):
        model = make_flux()
        cache = ditcache.apply_teacache_hook(model, {"rel_l1_thresh": 0.5, "profile": str(path)})
        ditcache.refresh(model, steps)
        out = denoise(model, steps, cfg=3.0, inputs=make_inputs(model), branch_mode=mode)  # type: ignore[arg-type]
        by_mode[mode] = (out, [s.computed_steps for s in cache.stats()])
    ref_out, ref_computed = by_mode["cfg_branch"]
    assert ref_computed == [list(range(steps)), [0, steps - 1]]
    for out, computed in by_mode.values():
        assert computed == ref_computed and torch.equal(out, ref_out)
