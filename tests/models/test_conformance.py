"""Every model extractor reproduces its diffusers model's forward exactly, and all three caches run on it.

One suite, parametrised over the model cases of ``tests/models/cases/`` (one small file per model family). Each
case builds a tiny random model (seeded) and runs a few consecutive "denoising" calls with a changing timestep and
fresh latents. A TeaCache whose threshold can never be reached (the rescale polynomial is the identity, the
threshold 1e-12) decides on every call but always computes, so the hooked output must be bit-identical
(``torch.equal``) to the native forward of an untouched deep copy: at batch 1 and 2, ``return_dict`` both ways, in
fp32 and bf16 on CPU (and on CUDA where present), with gradient checkpointing. Then TeaCache, MagCache and DBCache
(``Fn``/``Bn`` reaching into the first and last block lists) each skip steps of a short run. The rest checks the
block stack's slicing, the extractor lookup, refusals and the runtime's checks of what an extractor returns.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import attrs
import pytest
import torch
from cases import ALL, NEVER_SKIP, NO_CHECKPOINTING, REFUSALS, Call
from diffusers import FluxTransformer2DModel, QwenImageTransformer2DModel, WanTransformer3DModel
from torch import nn

import ditcache
from ditcache import CacheContext, DBCacheConfig, MagCacheConfig, TeaCacheConfig
from ditcache.core import FunctionExtractor, get_extractor
from ditcache.models import MODEL_TABLE, UNSUPPORTED


def tagged(tag: str) -> list[str]:
    return [case_id for case_id, case in ALL.items() if tag in case.tags]


@functools.cache
def model_class(case_id: str) -> str:
    """The class name of a case's model (built once)."""
    return type(ALL[case_id].build()).__name__


# ------------------------------------------------------------------------------------------------- helpers
def sample(out: Any, native: Any, return_dict: bool) -> Any:
    """The output sample, after checking the return type matches the native one and ``return_dict``."""
    assert type(out) is type(native)
    if return_dict:
        return out.sample
    if isinstance(native, tuple):
        assert isinstance(out, tuple) and len(out) == len(native) == 1
        return out[0]
    return out  # Kandinsky 5 returns the bare tensor


def first(out: Any) -> Any:
    """The sample of a model output (tuple, output class or bare tensor)."""
    if isinstance(out, tuple):
        return out[0]
    return out.sample if hasattr(out, "sample") else out


def tensors(x: Any) -> list[torch.Tensor]:
    """The tensors of a sample: itself, or the per-sample tensors of a list output (Z-Image, Lumina2, ...)."""
    return [x] if isinstance(x, torch.Tensor) else [t for item in x for t in tensors(item)]


def same(got: Any, expected: Any) -> bool:
    """Bit-equal samples (tensors or lists of tensors), with equal shapes and dtypes."""
    a, b = tensors(got), tensors(expected)
    return len(a) == len(b) and all(
        x.shape == y.shape and x.dtype == y.dtype and torch.equal(x, y) for x, y in zip(a, b)
    )


def max_diff(got: Any, expected: Any) -> float:
    return max(float((x.float() - y.float()).abs().max()) for x, y in zip(tensors(got), tensors(expected)))


def ditcache_attrs(module: nn.Module) -> list[str]:
    return [k for k in vars(module) if k.startswith("_ditcache") or k in ("forward", "cache_context")]


def move(value: Any, device: torch.device | str, dtype: torch.dtype, memo: dict[int, torch.Tensor]) -> Any:
    """Move tensors (also inside lists, tuples and dicts) to ``device``; floating ones also to ``dtype``.

    ``memo`` maps a tensor's id to its moved copy, so a tensor shared by several calls (the prompt embeddings)
    stays one shared tensor: the runtime tells CFG branches apart by the conditioning tensor's identity.
    """
    if isinstance(value, torch.Tensor):
        if id(value) not in memo:
            memo[id(value)] = value.to(device, dtype) if value.is_floating_point() else value.to(device)
        return memo[id(value)]
    if isinstance(value, list):
        return [move(v, device, dtype, memo) for v in value]
    if isinstance(value, tuple):
        return tuple(move(v, device, dtype, memo) for v in value)
    if isinstance(value, dict):
        return {k: move(v, device, dtype, memo) for k, v in value.items()}
    return value


def cast_like_from_pretrained(model: nn.Module, device: str, dtype: torch.dtype) -> nn.Module:
    """Move ``model`` to ``device`` and its parameters to ``dtype``, as ``from_pretrained(torch_dtype=...)`` does.

    The parameters diffusers keeps in float32 (``_keep_in_fp32_modules``: Wan's norms, time embedder and
    modulation tables) stay float32, so the forward's mixed-precision paths run as they do in deployment.
    """
    keep = tuple(getattr(model, "_keep_in_fp32_modules", None) or ())
    model.to(device)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if not any(k in name.split(".") for k in keep):
                param.data = param.data.to(dtype)
    return model


def assert_hooked_equals_native(
    model: nn.Module, calls: Sequence[Call], return_dict: bool, config: TeaCacheConfig = NEVER_SKIP
) -> None:
    """Hook ``model`` with a never-skipping TeaCache and compare every call with an untouched deep copy."""
    native = copy.deepcopy(model)
    keys = list(model.state_dict())
    cache = ditcache.apply_teacache_hook(model, config)
    with torch.no_grad():
        for step, (args, kwargs) in enumerate(calls):
            ref = native(*args, **kwargs)
            expected = sample(ref, ref, return_dict)
            got = sample(model(*args, **kwargs), ref, return_dict)
            assert same(got, expected), f"step {step}: max |diff| {max_diff(got, expected)}"

    # The cache decided every call (a distance was measured after the first) and computed each one.
    stats = cache.stats()
    assert len(stats) == 1, f"expected one generation, the step clock saw {len(stats)}"
    generation = stats[0]
    assert [d.step for d in generation.decisions] == list(range(len(calls)))
    assert generation.skipped_steps == []
    assert all(d.info["distance"] > 0 for d in generation.decisions[1:])

    ditcache.remove_cache(model)
    assert ditcache_attrs(model) == []
    assert list(model.state_dict()) == keys
    args, kwargs = calls[-1]
    with torch.no_grad():
        assert same(first(model(*args, **kwargs)), first(native(*args, **kwargs)))


def extract(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Iterator[CacheContext]:
    """Yield the context the model's extractor builds for a call, inside the extractor's scope."""
    ext = get_extractor(model)
    with ext.scope(model, kwargs) as scoped:
        yield ext.extract(model, args, scoped)


# --------------------------------------------------------------------------------------------- equivalence
@pytest.mark.parametrize("return_dict", [True, False], ids=["return_dict", "tuple"])
@pytest.mark.parametrize("batch", [1, 2], ids=["b1", "b2"])
@pytest.mark.parametrize("case", list(ALL))
def test_never_skipping_teacache_matches_native_forward(case: str, batch: int, return_dict: bool) -> None:
    model, calls = ALL[case].make(batch, return_dict)
    assert_hooked_equals_native(model, calls, return_dict, ALL[case].config)


@pytest.mark.parametrize("case", list(ALL))
def test_a_measuring_tolerance_matches_native_forward(case: str) -> None:
    """Under ``rtol`` every computed call also runs the head on what a skip would have returned; with a tolerance
    no inexact reuse meets, the outputs still equal the native ones bit for bit (a step is skipped only after a
    reuse was measured exact, as when a case repeats its inputs)."""
    model, calls = ALL[case].make(1, False)
    native = copy.deepcopy(model)
    config = attrs.evolve(ALL[case].config, rel_l1_thresh=None, rtol=1e-9, warmup_steps=0)
    cache = ditcache.apply_teacache_hook(model, config)
    with torch.no_grad():
        for step, (args, kwargs) in enumerate(calls):
            got, ref = first(model(*args, **kwargs)), first(native(*args, **kwargs))
            assert same(got, ref), f"step {step}: max |diff| {max_diff(got, ref)}"
    (generation,) = cache.stats()
    measured = [d.info["measured_error"] for d in generation.decisions if d.info["measured_error"] is not None]
    assert measured
    assert not generation.skipped_steps or min(measured) <= 1e-9
    ditcache.remove_cache(model)


ON_GPU = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.mark.parametrize(
    ("device", "dtype"),
    [
        pytest.param("cpu", torch.bfloat16, id="cpu-bf16"),
        pytest.param("cuda", torch.float32, id="cuda-fp32", marks=ON_GPU),
        pytest.param("cuda", torch.bfloat16, id="cuda-bf16", marks=ON_GPU),
    ],
)
@pytest.mark.parametrize("case", tagged("dtype"))
def test_never_skipping_teacache_matches_native_forward_on_device(case: str, device: str, dtype: torch.dtype) -> None:
    """The same equivalence in bf16 (with float32 islands) and on CUDA, asserted bit-exact (torch.equal).

    No tolerance is needed in any dtype: the hooked call launches the same kernels on the same inputs in the
    same order as the native forward (the extractor adds no op to the computed path and reorders no
    reduction), and the cuBLAS / SDPA forward kernels are deterministic for identical shapes on one device.
    """
    model, calls = ALL[case].make(2, True)
    model = cast_like_from_pretrained(model, device, dtype)
    memo: dict[int, torch.Tensor] = {}
    calls = [move(call, device, dtype, memo) for call in calls]
    assert_hooked_equals_native(model, calls, True, ALL[case].config)


@pytest.mark.parametrize("case", list(ALL))
def test_context_reproduces_forward_and_blocks_slice(case: str) -> None:
    """``postprocess(*run_blocks())`` is the forward; the stack run block by block equals it run whole."""
    model, calls = ALL[case].make(2, True)
    args, kwargs = calls[1]
    with torch.no_grad():
        expected = model(*args, **kwargs).sample
        for ctx in extract(model, args, kwargs):
            ctx.validate()
            blocks = ctx.blocks
            assert list(blocks.modules) == list(get_extractor(model).block_modules(model))
            h_all, e_all = blocks(ctx.hidden_states, ctx.encoder_hidden_states)
            h, e = ctx.hidden_states, ctx.encoder_hidden_states
            for i in range(len(blocks)):
                h, e = blocks[i : i + 1](h, e)
                assert h.shape == ctx.hidden_states.shape  # a residual can be taken between any two blocks
            assert torch.equal(h, h_all)
            assert (e is None and e_all is None) or torch.equal(e, e_all)  # type: ignore[arg-type]
            assert same(ctx.postprocess(h_all, e_all).sample, expected)
            # the raw call arguments, as the caller passed them (generation / CFG-branch detection)
            assert ctx.timestep is ALL[case].argument(calls[1], ALL[case].timestep)
            if ALL[case].condition is not None:
                assert ctx.condition is ALL[case].argument(calls[1], ALL[case].condition)


def count_checkpointed_calls(model: nn.Module) -> list[int]:
    """Wrap the model's (real) gradient-checkpointing function to count its calls; returns the live counter."""
    counter = [0]
    checkpoint = model._gradient_checkpointing_func

    def counting(*args: Any, **kwargs: Any) -> Any:
        counter[0] += 1
        return checkpoint(*args, **kwargs)

    model._gradient_checkpointing_func = counting
    return counter


@pytest.mark.parametrize("case", tagged("checkpointing"))
def test_gradient_checkpointing_matches_native(case: str) -> None:
    """Gradient checkpointing on and grad enabled: outputs and parameter gradients equal the native ones."""
    model, calls = ALL[case].make(1, True)
    model.train()
    model.enable_gradient_checkpointing()
    native = copy.deepcopy(model)
    counts = [count_checkpointed_calls(model), count_checkpointed_calls(native)]
    ditcache.apply_teacache_hook(model, NEVER_SKIP)
    args, kwargs = calls[0]
    torch.manual_seed(0)  # training mode: both draw the same random numbers (DiT's class-label dropout, ...)
    out = model(*args, **kwargs).sample
    torch.manual_seed(0)
    ref = native(*args, **kwargs).sample
    assert same(out, ref)
    # every cached block went through the checkpointing function, and as often as natively
    assert counts[0] == counts[1]
    assert counts[0][0] >= len(get_extractor(model).block_modules(model))
    sum(t.square().mean() for t in tensors(out)).backward()
    sum(t.square().mean() for t in tensors(ref)).backward()
    for (name, p), q in zip(model.named_parameters(), native.parameters()):
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is not None:
            assert torch.equal(p.grad, q.grad), name
    ditcache.remove_cache(model)


@pytest.mark.parametrize("case", [c for c in tagged("loop") if ALL[c].attention_kwargs is not None])
def test_attention_kwargs_scale_is_not_mutated(case: str) -> None:
    """The LoRA scope pops ``scale`` from a copy: the caller's dict is left as it was (as diffusers does)."""
    model, calls = ALL[case].make(1, True)
    name = ALL[case].attention_kwargs
    assert name is not None
    ditcache.apply_teacache_hook(model, NEVER_SKIP)
    args, kwargs = calls[0]
    attention_kwargs = {"scale": 1.0}
    with torch.no_grad():
        model(*args, **{**kwargs, name: attention_kwargs})
    assert attention_kwargs == {"scale": 1.0}
    ditcache.remove_cache(model)


# ------------------------------------------------------------------------------------------ caches skip steps
def _loop_configs(n_calls: int, n_blocks: int) -> dict[str, Any]:
    return {
        "teacache": TeaCacheConfig(
            rel_l1_thresh=1e9, coefficients=(0.0, 0.0, 0.0, 1.0, 0.0), warmup_steps=1, num_inference_steps=n_calls
        ),
        "magcache": MagCacheConfig(
            threshold=10.0,
            max_skip_steps=2,
            retention_ratio=0.2,
            mag_ratios=(1.0,) * n_calls,
            num_inference_steps=n_calls,
        ),
        "dbcache": DBCacheConfig(
            fn_compute_blocks=1,
            bn_compute_blocks=1 if n_blocks >= 3 else 0,
            max_warmup_steps=1,
            residual_diff_threshold=10.0,
            num_inference_steps=n_calls,
        ),
    }


_APPLY: dict[str, Callable[..., Any]] = {
    "teacache": ditcache.apply_teacache_hook,
    "magcache": ditcache.apply_magcache_hook,
    "dbcache": ditcache.apply_dbcache_hook,
}


@pytest.mark.parametrize("cache_name", list(_APPLY))
@pytest.mark.parametrize("case", tagged("loop"))
def test_each_cache_skips_steps_of_a_short_run(case: str, cache_name: str) -> None:
    """TeaCache, MagCache and DBCache (first block of the first list, last block of the last list computed) skip
    steps; the first (computed) call equals the native one and every output keeps the native shape."""
    model, calls = ALL[case].make(2, False)
    native = copy.deepcopy(model)
    n_blocks = len(get_extractor(model).block_modules(model))
    cache = _APPLY[cache_name](model, _loop_configs(len(calls), n_blocks)[cache_name])
    with torch.no_grad():
        for step, (args, kwargs) in enumerate(calls):
            got, ref = first(model(*args, **kwargs)), first(native(*args, **kwargs))
            assert [t.shape for t in tensors(got)] == [t.shape for t in tensors(ref)]
            assert all(torch.isfinite(t).all() for t in tensors(got))
            if step == 0:
                assert same(got, ref)
    stats = cache.stats()
    assert len(stats) == 1
    assert stats[0].skipped_steps, f"{cache_name} skipped nothing on {case}"
    assert 0 not in stats[0].skipped_steps
    ditcache.remove_cache(model)
    assert ditcache_attrs(model) == []


# ------------------------------------------------------------------------------------------------ coverage
def test_every_supported_class_has_every_kind_of_case() -> None:
    classes: dict[str, set[str]] = {}
    for case_id, case in ALL.items():
        tags = set(case.tags)
        if "checkpointing" not in tags and not case.build()._supports_gradient_checkpointing:
            tags.add("checkpointing")  # diffusers gives this class no gradient checkpointing path to test
        classes.setdefault(model_class(case_id), set()).update(tags)
    missing = {
        name: sorted(
            {"dtype", "checkpointing", "loop"} - tags - ({"checkpointing"} if name in NO_CHECKPOINTING else set())
        )
        for name, tags in classes.items()
    }
    assert {k: v for k, v in missing.items() if v} == {}
    assert set(classes) == set(MODEL_TABLE) - set(UNSUPPORTED)


@pytest.mark.parametrize("name", sorted(UNSUPPORTED))
def test_unsupported_classes_are_refused_with_the_reason(name: str) -> None:
    """A known class that ditcache does not cache is refused at apply time, with the reason."""
    ext = get_extractor(name)
    with pytest.raises(ValueError) as info:
        ext.check(nn.Linear(1, 1))
    assert f"{name} is not supported by ditcache" in str(info.value)
    assert UNSUPPORTED[name] in str(info.value)
    assert name not in {model_class(case_id) for case_id in ALL}


@pytest.mark.parametrize("refusal", list(REFUSALS))
def test_uncacheable_configurations_are_refused(refusal: str) -> None:
    """Branch-dependent compute and KV-cache modes raise a clear error (at apply time when the model says so,
    else at the call), and the model still runs natively once the cache is removed."""
    spec = REFUSALS[refusal]
    model = spec.build()
    if spec.call is None:
        with pytest.raises(ValueError, match=spec.match):
            ditcache.apply_teacache_hook(model, NEVER_SKIP)
        assert ditcache_attrs(model) == []
        return
    args, kwargs = spec.call(model)
    ditcache.apply_teacache_hook(model, NEVER_SKIP)
    with torch.no_grad(), pytest.raises(ValueError, match=spec.match):
        model(*args, **kwargs)
    ditcache.remove_cache(model)
    assert ditcache_attrs(model) == []


# ---------------------------------------------------------------------------------------- model specifics
def test_wan_blocks_hand_back_the_same_text_tensor() -> None:
    """Wan's blocks leave the text stream alone; the stack returns the very same object (no zero residual)."""
    model, calls = ALL["wan-i2v"].make(1, True)
    args, kwargs = calls[0]
    with torch.no_grad():
        for ctx in extract(model, args, kwargs):
            e_in = ctx.encoder_hidden_states
            assert e_in is not None and e_in.shape[1] == 3 + 512  # image tokens first, then text
            _, e_out = ctx.run_blocks()
            assert e_out is e_in
            assert ctx.modulated_input is ctx.temb is ctx.extra_states["temb"]
            assert ctx.extra_states["timestep_proj"].shape == (1, 6, ctx.hidden_states.shape[-1])


def test_qwen_zero_cond_t_context() -> None:
    """zero_cond_t: the blocks are conditioned on 2B embeddings (t and 0); the indicator keeps the batch."""
    model, calls = ALL["qwen-zero-cond-t"].make(2, True)
    args, kwargs = calls[0]
    with torch.no_grad():
        for ctx in extract(model, args, kwargs):
            ctx.validate()
            assert ctx.temb.shape[0] == 4
            assert ctx.modulated_input.shape == ctx.hidden_states.shape
            index = ctx.extra_states["modulate_index"]
            assert index.shape == ctx.hidden_states.shape[:2]
            assert index[:, :8].eq(0).all() and index[:, 8:].eq(1).all()


def test_wan_ti2v_image_to_video_timestep_is_tracked_across_steps() -> None:
    model, calls = ALL["wan-ti2v-per-token-timestep"].make(1, True)
    for _, kwargs in calls:
        kwargs["timestep"] = kwargs["timestep"].clone()
        kwargs["timestep"][:, :4] = 0  # first latent frame = the conditioning image (WanImageToVideoPipeline)
    assert_hooked_equals_native(model, calls, True)


# -------------------------------------------------------------------------------------------------- lookup
class _FluxSubclass(FluxTransformer2DModel):
    """A fine-tune's own class: still a Flux transformer."""


def test_subclass_resolves_to_the_parent_extractor() -> None:
    flux = get_extractor(FluxTransformer2DModel)
    assert flux.name == "flux"
    assert get_extractor(_FluxSubclass) is flux
    assert get_extractor(QwenImageTransformer2DModel).name == "qwenimage"
    assert get_extractor(WanTransformer3DModel).name == "wan"
    assert get_extractor("WanTransformer3DModel") is get_extractor(WanTransformer3DModel)


def test_unknown_module_lists_the_supported_models() -> None:
    with pytest.raises(ditcache.core.ExtractorNotFoundError) as info:
        get_extractor(nn.Linear(4, 4))
    message = str(info.value)
    for name in ("FluxTransformer2DModel", "QwenImageTransformer2DModel", "WanTransformer3DModel"):
        assert name in message
    assert "Linear" in message


def test_apply_on_unsupported_module_leaves_it_untouched() -> None:
    module = nn.Linear(4, 4)
    with pytest.raises(ditcache.core.ExtractorNotFoundError):
        ditcache.apply_teacache_hook(module, NEVER_SKIP)
    assert ditcache_attrs(module) == []
    assert ditcache.get_cache_runtime(module) is None


# ------------------------------------------------------------------------------------------ bad extractors
def _flux_with(transform: Callable[[CacheContext], Any]) -> FunctionExtractor:
    def fn(module: nn.Module, *args: Any, **kwargs: Any) -> Any:
        return transform(get_extractor(module).extract(module, args, kwargs))

    return FunctionExtractor(fn, blocks=lambda m: get_extractor(m).block_modules(m), name="bad")


@pytest.mark.parametrize(
    ("transform", "error", "match"),
    [
        (
            lambda ctx: ctx.evolve(modulated_input=torch.cat([ctx.modulated_input] * 2)),
            ValueError,
            "modulated_input",
        ),
        (lambda ctx: {"hidden_states": ctx.hidden_states}, TypeError, "CacheContext"),
    ],
    ids=["wrong-batch-modulated-input", "not-a-context"],
)
def test_bad_extractor_output_is_refused(
    transform: Callable[[CacheContext], Any], error: type[Exception], match: str
) -> None:
    model, calls = ALL["flux"].make(1, True)
    args, kwargs = calls[0]
    with torch.no_grad():
        expected = model(*args, **kwargs).sample
        ditcache.apply_teacache_hook(model, NEVER_SKIP, extractor=_flux_with(transform))
        with pytest.raises(error, match=match):
            model(*args, **kwargs)
        ditcache.remove_cache(model)
        assert ditcache_attrs(model) == []
        assert torch.equal(model(*args, **kwargs).sample, expected)
