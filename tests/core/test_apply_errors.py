"""Apply-time refusals and first-call validation (issue 10: items 7, 11, 12, 13)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from diffusers import FirstBlockCacheConfig
from torch import nn

import ditcache
from _support.flux import denoise, make_flux
from ditcache.core import ExtractorNotFoundError, FunctionExtractor, get_cache_runtime

TEA = ditcache.TeaCacheConfig(rel_l1_thresh=0.4)


class _TinyDiT(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([nn.Linear(4, 4) for _ in range(3)])

    def forward(self, x: torch.Tensor, t: Any) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


def _extractor(
    timestep: Any = None, block_out: Callable[[torch.Tensor], Any] | None = None, keys: Any = None
) -> FunctionExtractor:
    def fn(module: _TinyDiT, x: torch.Tensor, t: Any) -> ditcache.CacheContext:
        def run_block(i: int, h: torch.Tensor, e: torch.Tensor | None) -> Any:
            out = module.blocks[i](h)
            return (out, e) if block_out is None else block_out(out)

        return ditcache.CacheContext(
            modulated_input=x,
            hidden_states=x,
            encoder_hidden_states=None,
            temb=x,
            blocks=ditcache.BlockStack(run_block, list(module.blocks)),
            postprocess=lambda h, e: h,
            timestep=t if timestep is None else timestep,
        )

    ext = FunctionExtractor(fn, name="tiny")
    ext.extra_state_keys = keys
    return ext


# ------------------------------------------------------------------------------ item 7
def test_one_cache_instance_cannot_serve_two_models() -> None:
    a, b = make_flux(), make_flux(seed=1)
    cache = ditcache.apply_teacache_hook(a, TEA)
    with pytest.raises(ValueError, match="already applied to another module"):
        ditcache.apply_cache(b, cache)
    assert get_cache_runtime(b) is None  # nothing installed
    assert ditcache.apply_cache(a, cache) is cache  # the same module again is a no-op
    ditcache.remove_cache(a)
    assert ditcache.apply_cache(b, cache) is cache  # free again once removed


# ------------------------------------------------------------------------------ item 11
@pytest.mark.parametrize(
    "apply", [ditcache.apply_teacache_hook, ditcache.apply_magcache_hook, ditcache.apply_dbcache_hook]
)
def test_a_module_without_extractor_gets_the_extractor_error(apply: Callable[..., Any]) -> None:
    with pytest.raises(ExtractorNotFoundError, match="no extractor is registered for Linear"):
        apply(nn.Linear(2, 2))


@pytest.mark.parametrize(
    "apply", [ditcache.apply_teacache_hook, ditcache.apply_magcache_hook, ditcache.apply_dbcache_hook]
)
def test_a_non_module_gets_a_type_error_naming_the_argument(apply: Callable[..., Any]) -> None:
    with pytest.raises(TypeError, match=r"module: expected a torch\.nn\.Module, got str"):
        apply("transformer")


def test_a_compiled_model_is_cached_through_its_original_module() -> None:
    reference = make_flux()
    ditcache.apply_teacache_hook(reference, TEA)
    expected = denoise(reference, 8)
    compiled = torch.compile(make_flux(), backend="eager")
    cache = ditcache.apply_teacache_hook(compiled, TEA)
    assert get_cache_runtime(compiled) is get_cache_runtime(compiled._orig_mod)  # type: ignore[arg-type]
    assert torch.equal(denoise(compiled, 8), expected)  # type: ignore[arg-type]
    assert cache.stats()[-1].skipped_steps  # it did skip
    assert ditcache.remove_cache(compiled) == [cache]
    assert get_cache_runtime(compiled._orig_mod) is None  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ item 12
def test_a_string_timestep_is_refused_naming_the_field() -> None:
    model = _TinyDiT()
    ditcache.apply_dbcache_hook(
        model, ditcache.DBCacheConfig(fn_compute_blocks=1, bn_compute_blocks=1), extractor=_extractor(timestep="0.5")
    )
    with pytest.raises(TypeError, match=r"CacheContext\.timestep: expected a torch.Tensor, a number or None, got str"):
        model(torch.randn(2, 4), 0.5)


@pytest.mark.parametrize(
    ("block_out", "error", "message"),
    [
        (lambda h: h, TypeError, r"CacheContext\.blocks: block 0 returned Tensor"),
        (
            lambda h: (h[:, :2], None),
            ValueError,
            r"CacheContext\.blocks: block 0 returned hidden_states Tensor\(2, 2\)",
        ),
        (lambda h: (h, h, h), TypeError, r"CacheContext\.blocks: block 0 returned tuple"),
    ],
)
def test_a_bad_block_output_is_refused_naming_the_field(
    block_out: Callable[[torch.Tensor], Any], error: type[Exception], message: str
) -> None:
    model = _TinyDiT()
    ditcache.apply_teacache_hook(
        model,
        ditcache.TeaCacheConfig(coefficients=(0.0, 0.0, 0.0, 1.0, 0.0)),
        extractor=_extractor(block_out=block_out),
    )
    with pytest.raises(error, match=message):
        model(torch.randn(2, 4), torch.tensor([0.5]))


def test_a_misspelled_indicator_is_refused_at_apply_when_the_extractor_declares_its_keys() -> None:
    model = _TinyDiT()
    cfg = ditcache.TeaCacheConfig(coefficients=(0.0, 0.0, 0.0, 1.0, 0.0), indicator="tim_proj")
    with pytest.raises(ValueError, match=r"TeaCacheConfig\.indicator: 'tim_proj' is not an extra_states key of "):
        ditcache.apply_teacache_hook(model, cfg, extractor=_extractor(keys=frozenset({"time_proj"})))
    assert get_cache_runtime(model) is None


# ------------------------------------------------------------------------------ item 13
@pytest.mark.parametrize("name", ["default", "auto:cpu:1234:1x8x32"])
def test_a_branch_name_reserved_for_automatic_branches_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="reserved for automatic branches"), ditcache.cfg_branch(name):
        pass


def test_ditcache_over_diffusers_own_cache_is_refused() -> None:
    model = make_flux()
    model.enable_cache(FirstBlockCacheConfig(threshold=0.1))
    with pytest.raises(ValueError, match=r"diffusers' own cache .*disable_cache\(\)"):
        ditcache.apply_teacache_hook(model, TEA)
    assert get_cache_runtime(model) is None
    model.disable_cache()
    ditcache.apply_teacache_hook(model, TEA)  # fine once diffusers' cache is off
