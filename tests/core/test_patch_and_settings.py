"""The registry owns every attribute it patches; hooks and caches compare by identity, settings explicitly.

Proves: ``HookRegistry.patch_attribute`` is undone by the rebuild that restores ``forward`` (owner removed, last
middleware removed, ``clear()``), restoring a previous instance attribute or leaving a foreign replacement alone;
the diffusers ``cache_context`` bridge goes through it, so clearing the registry restores a cached model exactly
(this failed before: the bridge survived ``clear()``); ``same_settings`` decides no-op re-registration while
objects hash and compare by identity; ``insertion_index`` places caches by level alone.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

import ditcache
from _support.flux import denoise, make_flux, make_inputs
from ditcache.caches.dbcache import DBCache, DBCacheConfig
from ditcache.caches.teacache import TeaCache, TeaCacheConfig
from ditcache.core.cache import LEVELS, CacheMiddleware, insertion_index
from ditcache.core.hooks import CallNext, ForwardCall, HookRegistry, same_settings


def passthrough(call: ForwardCall, call_next: CallNext) -> Any:
    return call_next(call)


def marker() -> str:
    return "patched"


# ---------------------------------------------------------------------------------------------- patch_attribute
def test_patch_is_undone_with_the_last_middleware_and_restores_a_previous_instance_attribute() -> None:
    m = nn.Linear(2, 2)
    m.__dict__["tag"] = "mine"
    reg = HookRegistry.get_or_create(m)
    with pytest.raises(ValueError, match="nothing is registered"):
        reg.patch_attribute("tag", marker)
    reg.register("a", passthrough)
    reg.patch_attribute("tag", marker)
    reg.patch_attribute("extra", 1)
    assert m.__dict__["tag"] is marker and m.__dict__["extra"] == 1 and reg.patched_attribute("tag") is marker
    reg.patch_attribute("tag", 2)  # a second patch of the same name keeps the original to restore
    reg.remove("a")
    assert m.__dict__["tag"] == "mine" and "extra" not in m.__dict__ and "forward" not in m.__dict__
    assert HookRegistry.get(m) is None and "_ditcache_hooks" not in m.__dict__


def test_owned_patch_goes_with_its_owner_and_a_foreign_replacement_stays() -> None:
    m = nn.Linear(2, 2)
    reg = HookRegistry.get_or_create(m)
    reg.register("a", passthrough)
    reg.register("b", passthrough)
    with pytest.raises(ValueError, match=r"owner: 'zzz' is not registered"):
        reg.patch_attribute("x", 1, owner="zzz")
    with pytest.raises(ValueError, match="name: expected an attribute name other than 'forward'"):
        reg.patch_attribute("forward", 1)
    reg.patch_attribute("x", 1, owner="b")
    reg.patch_attribute("y", 2, owner="a")
    reg.remove("b")
    assert "x" not in m.__dict__ and m.__dict__["y"] == 2
    m.__dict__["y"] = "someone else's"
    reg.clear()
    assert m.__dict__["y"] == "someone else's"  # replaced since: not ours to undo
    reg.register("a", passthrough)
    reg.patch_attribute("z", 3)
    reg.restore_attribute("z")
    assert "z" not in m.__dict__ and reg.names() == ["a"]


def test_clearing_the_registry_restores_a_cached_diffusers_model_exactly() -> None:
    model = make_flux()
    before = dict(model.__dict__)
    assert "cache_context" not in before and hasattr(type(model), "cache_context")
    ditcache.apply_teacache_hook(model, {"rel_l1_thresh": 0.3, "model": "flux.1-dev"})
    assert "cache_context" in model.__dict__  # the bridge, owned by the registry
    reg = HookRegistry.get(model)
    assert reg is not None
    reg.clear()
    assert model.__dict__.keys() == before.keys()
    assert all(model.__dict__[k] is v for k, v in before.items())
    # The pipeline-style branch names still work on the restored model, and the cache comes back cleanly.
    cache = ditcache.apply_teacache_hook(model, {"rel_l1_thresh": 0.3, "model": "flux.1-dev"})
    denoise(model, 4, cfg=3.0, inputs=make_inputs(model), branch_mode="cache_context")
    assert {str(s.branch) for s in cache.stats()} == {"cond", "uncond"}
    ditcache.remove_cache(model)
    # diffusers' own cache_context leaves its hook registry behind (its attribute, not ours)
    assert model.__dict__.keys() - {"_diffusers_hook"} == before.keys()


# --------------------------------------------------------------------------------------------- same_settings
def test_caches_compare_by_identity_and_settings_explicitly() -> None:
    cfg = TeaCacheConfig(model="flux.1-dev")
    a, b = TeaCache(cfg, cfg.resolve(None)), TeaCache(cfg, cfg.resolve(None))
    other = TeaCache(TeaCacheConfig(model="flux.1-dev", rel_l1_thresh=0.9), cfg.resolve(None))
    assert a != b and len({a, b}) == 2
    assert a.same_settings(b) and same_settings(a, b) and not a.same_settings(other)
    assert not a.same_settings(DBCache(DBCacheConfig()))
    assert same_settings(passthrough, passthrough) and not same_settings(passthrough, marker)
    model = make_flux()
    assert ditcache.apply_cache(model, a) is a
    assert ditcache.apply_cache(model, b) is a  # same settings: a no-op returning the applied one
    with pytest.raises(ValueError, match="different config is already applied"):
        ditcache.apply_cache(model, other)


# ------------------------------------------------------------------------------------------------ placement
class Observer(CacheMiddleware[None]):
    name = "observer"

    def new_state(self) -> None:
        return None

    def process(self, ctx: Any, call_next: Any) -> Any:
        self.record(ctx, True)
        return call_next(ctx)


def test_caches_are_placed_by_level_alone() -> None:
    assert LEVELS == ("step", None, "block")
    tea_cfg = TeaCacheConfig(model="flux.1-dev")
    tea, db, obs = TeaCache(tea_cfg, tea_cfg.resolve(None)), DBCache(DBCacheConfig(fn_compute_blocks=1)), Observer(None)
    assert insertion_index([], obs) == 0
    assert insertion_index([tea, db], obs) == 1
    assert insertion_index([obs], tea) == 0 and insertion_index([obs], db) == 1
    assert insertion_index([tea, obs], Observer(None)) == 2  # same level: after the ones already there
    assert not hasattr(CacheMiddleware, "order")
    model = make_flux()
    for cache in (db, obs, tea):
        ditcache.apply_cache(model, cache)
    runtime = ditcache.get_cache_runtime(model)
    assert runtime is not None and runtime.middlewares == [tea, obs, db]
    out = denoise(model, 3, inputs=make_inputs(model))
    assert torch.isfinite(out).all() and len(obs.stats()[-1].decisions) == 3
