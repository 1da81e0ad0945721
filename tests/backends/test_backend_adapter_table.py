"""Every entry of the cache-dit adapter table is verified by running cache-dit on a tiny model of its class.

Each entry is driven through :class:`CacheDiTBackend` (its block lists, forward patterns, patch functor and
separate-CFG flag) on a tiny random model built by the model-conformance cases (``tests/models/cases``), with the
case's short denoising-like call sequence (a pipeline with separate CFG calls the transformer twice per step, so
those entries get every call twice). For each: with ``residual_diff_threshold=0`` (never cache) the outputs equal the
native forward bit for bit, with a permissive threshold cache-dit's stats report cached steps, and ``disable``
restores the native forward and the very modules (no instance forward left by cache-dit or a patch functor, the same
block lists). Every covered class has an entry or a reason in ``REFUSED``, and the refusals are checked: the refused
classes and ControlNet residuals still break cache-dit, and the backend refuses them at enable, untouched.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

os.environ.setdefault("CACHE_DIT_LOG_LEVEL", "warning")

import cache_dit
from cache_dit import BlockAdapter
from cases import ALL, Call

from ditcache.backends.cache_dit_adapters import ADAPTER_CONFIGS, CONTROLNET_REFUSAL, REFUSED
from ditcache.backends.cache_dit_backend import CacheDiTBackend, build_block_adapter
from ditcache.models.coverage import SUPPORTED

CASE_OF = {
    "AllegroTransformer3DModel": "allegro",
    "AnyFlowTransformer3DModel": "anyflow",
    "AuraFlowTransformer2DModel": "auraflow",
    "BriaFiboTransformer2DModel": "bria-fibo",
    "BriaTransformer2DModel": "bria",
    "ChromaTransformer2DModel": "chroma-mask",
    "ChronoEditTransformer3DModel": "chronoedit-image",
    "CogVideoXTransformer3DModel": "cogvideox-rope",
    "CogView3PlusTransformer2DModel": "cogview3plus",
    "CogView4Transformer2DModel": "cogview4",
    "CosmosTransformer3DModel": "cosmos",
    "DiTTransformer2DModel": "dit",
    "EasyAnimateTransformer3DModel": "easyanimate",
    "ErnieImageTransformer2DModel": "ernie-image",
    "Flux2Transformer2DModel": "flux2-dev",
    "FluxTransformer2DModel": "flux-guidance",
    "HeliosTransformer3DModel": "helios",
    "HiDreamImageTransformer2DModel": "hidream",
    "HunyuanImageTransformer2DModel": "hunyuanimage",
    "HunyuanVideo15Transformer3DModel": "hunyuanvideo15-t2v",
    "HunyuanVideoFramepackTransformer3DModel": "hunyuanvideo-framepack",
    "HunyuanVideoTransformer3DModel": "hunyuanvideo",
    "Ideogram4Transformer2DModel": "ideogram4",
    "JoyImageEditPlusTransformer3DModel": "joyimage-edit-plus",
    "JoyImageEditTransformer3DModel": "joyimage-edit",
    "Kandinsky5Transformer3DModel": "kandinsky5",
    "Krea2Transformer2DModel": "krea2-mask",
    "LTXVideoTransformer3DModel": "ltx",
    "LongCatAudioDiTTransformer": "longcat-audio-dit",
    "LongCatImageTransformer2DModel": "longcat-image",
    "Lumina2Transformer2DModel": "lumina2",
    "LuminaNextDiT2DModel": "lumina-next",
    "MiniMaxMusic3Transformer1DModel": "minimax-music3",
    "MochiTransformer3DModel": "mochi",
    "MotifVideoTransformer3DModel": "motif-video",
    "NucleusMoEImageTransformer2DModel": "nucleus-moe",
    "OmniGenTransformer2DModel": "omnigen",
    "OvisImageTransformer2DModel": "ovis-image",
    "PRXTransformer2DModel": "prx",
    "PixArtTransformer2DModel": "pixart-sigma",
    "QwenImageTransformer2DModel": "qwen-mask",
    "SD3Transformer2DModel": "sd35",
    "SanaTransformer2DModel": "sana",
    "SanaVideoTransformer3DModel": "sana-video",
    "SkyReelsV2Transformer3DModel": "skyreels-v2",
    "StableAudio3DiTModel": "stable-audio3",
    "StableAudioDiTModel": "stable-audio",
    "WanTransformer3DModel": "wan-t2v",
    "WanVACETransformer3DModel": "wan-vace",
    "ZImageTransformer2DModel": "zimage",
}
"""Adapter-table class -> the conformance case it is driven on (one without ControlNet residuals)."""

BROKEN_UNDER_CACHE_DIT = {
    "AceStepTransformer1DModel": ("ace-step", {"layers": cache_dit.ForwardPattern.Pattern_3}),
    "ConsisIDTransformer3DModel": ("consisid-face", {"transformer_blocks": cache_dit.ForwardPattern.Pattern_0}),
    "WanAnimateTransformer3DModel": ("wan-animate", {"blocks": cache_dit.ForwardPattern.Pattern_2}),
}
"""Refused class -> a case and the natural block patterns on which cache-dit still fails (crash or wrong output)."""

NEVER_CACHE = cache_dit.DBCacheConfig(Fn_compute_blocks=1, Bn_compute_blocks=0, residual_diff_threshold=0.0)

CONTROLNET_CASES = ("flux-controlnet", "qwen-controlnet", "sana-controlnet", "zimage-controlnet")


class TinyPipeline:
    """A pipeline holding one transformer (and optionally a controlnet), as the backend sees it."""

    def __init__(self, transformer: nn.Module, controlnet: nn.Module | None = None) -> None:
        self.transformer = transformer
        self.controlnet = controlnet


def _sample(out: Any) -> Any:
    if isinstance(out, tuple):
        return out[0]
    return out.sample if hasattr(out, "sample") else out


def _tensors(x: Any) -> list[torch.Tensor]:
    return [x] if isinstance(x, torch.Tensor) else [t for item in x for t in _tensors(item)]


def _same(a: list[Any], b: list[Any]) -> bool:
    ta, tb = _tensors(a), _tensors(b)
    return len(ta) == len(tb) and all(x.shape == y.shape and torch.equal(x, y) for x, y in zip(ta, tb, strict=True))


def _run(model: nn.Module, calls: list[Call], repeat: int = 1) -> list[Any]:
    with torch.no_grad():
        return [_sample(model(*args, **kwargs)) for args, kwargs in calls for _ in range(repeat)]


def _instance_state(model: nn.Module) -> list[tuple[str, list[str], dict[str, int]]]:
    """Per module: the instance attributes cache-dit or a patch functor set, and the ids of its children."""
    keys = ("forward", "_is_patched", "_orig_forward", "_is_cached", "_context_manager", "_original_forward")
    return [
        (name, [k for k in keys if k in vars(m)], {k: id(v) for k, v in m._modules.items()})
        for name, m in model.named_modules()
    ]


def _cached_steps(backend: CacheDiTBackend, pipe: TinyPipeline) -> int:
    return sum(len(s.cached_steps or []) for s in backend.stats(pipe)["transformer"])


def test_every_covered_class_has_an_entry_or_a_refusal() -> None:
    assert not set(ADAPTER_CONFIGS) & set(REFUSED)
    assert set(SUPPORTED) == set(ADAPTER_CONFIGS) | set(REFUSED)
    assert all(isinstance(reason, str) and len(reason) > 40 for reason in REFUSED.values())
    assert set(CASE_OF) == set(ADAPTER_CONFIGS)
    assert set(BROKEN_UNDER_CACHE_DIT) == set(REFUSED)


@pytest.mark.parametrize("name", sorted(CASE_OF))
def test_cache_dit_on_the_declared_blocks(name: str) -> None:
    case = ALL[CASE_OF[name]]
    model, calls = case.make(1, False)
    assert type(model).__name__ == name
    repeat = 2 if ADAPTER_CONFIGS[name].has_separate_cfg else 1  # cond and uncond, one call each per step
    native = _run(model, calls, repeat)
    before = _instance_state(model)
    pipe = TinyPipeline(model)
    for threshold in (0.0, 1.0):
        backend = CacheDiTBackend(
            {"residual_diff_threshold": threshold, "max_warmup_steps": 1, "max_continuous_cached_steps": -1}
        )
        backend.enable(pipe)
        try:
            backend.refresh(pipe, len(calls), verbose=False)
            out = _run(model, calls, repeat)
            cached = _cached_steps(backend, pipe)
        finally:
            backend.disable(pipe)
        if threshold == 0.0:
            assert cached == 0
            assert _same(out, native), f"{name}: cache-dit changes the output even when it never caches"
        else:
            assert cached > 0, f"{name}: no step cached at residual_diff_threshold={threshold}"
        assert _instance_state(model) == before, f"{name}: disable left cache-dit's patches behind"
        assert _same(_run(model, calls, repeat), native)


@pytest.mark.parametrize("name", sorted(BROKEN_UNDER_CACHE_DIT))
def test_refused_classes_still_break_cache_dit(name: str) -> None:
    """If cache-dit learns to serve one of these exactly, this fails: move the class from REFUSED to the table."""
    case_id, patterns = BROKEN_UNDER_CACHE_DIT[name]
    model, calls = ALL[case_id].make(1, False)
    assert type(model).__name__ == name
    native = _run(model, calls)
    adapter = BlockAdapter(
        transformer=model,
        blocks=[getattr(model, n) for n in patterns],
        forward_pattern=list(patterns.values()),
        check_forward_pattern=True,
    )
    cache_dit.enable_cache(adapter, cache_config=NEVER_CACHE)
    try:
        cache_dit.refresh_context(model, num_inference_steps=len(calls))
        try:
            out = _run(model, calls)
        except AttributeError:
            return
        assert not _same(out, native)
    finally:
        cache_dit.disable_cache(model)


@pytest.mark.parametrize("case_id", CONTROLNET_CASES)
def test_controlnet_residuals_still_break_cache_dit(case_id: str) -> None:
    model, calls = ALL[case_id].make(1, False)
    native = _run(model, calls)
    cached = copy.deepcopy(model)
    adapter = build_block_adapter(cached, ADAPTER_CONFIGS[type(model).__name__])
    adapter.has_separate_cfg = False
    cache_dit.enable_cache(adapter, cache_config=NEVER_CACHE)
    cache_dit.refresh_context(cached, num_inference_steps=len(calls))
    assert not _same(_run(cached, calls), native)


def _refused(pipe: TinyPipeline, match: str) -> None:
    before = _instance_state(pipe.transformer)
    backend = CacheDiTBackend({"residual_diff_threshold": 0.0})
    with pytest.raises(ValueError, match=match):
        backend.enable(pipe)
    assert not backend.is_enabled()
    assert _instance_state(pipe.transformer) == before


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_enable_refuses_a_refused_class(name: str) -> None:
    model = ALL[BROKEN_UNDER_CACHE_DIT[name][0]].build()
    _refused(TinyPipeline(model), re.escape(f"{name} (pipeline TinyPipeline.transformer) is refused: {REFUSED[name]}"))


def test_enable_refuses_a_controlnet_pipeline() -> None:
    build: Callable[[], nn.Module] = ALL["flux"].build
    _refused(TinyPipeline(build(), controlnet=nn.Linear(2, 2)), "has a controlnet.*" + re.escape(CONTROLNET_REFUSAL))
    # no controlnet (None) is fine
    backend = CacheDiTBackend({"residual_diff_threshold": 0.0})
    pipe = TinyPipeline(build(), controlnet=None)
    backend.enable(pipe)
    backend.disable(pipe)


def test_the_serving_page_lists_the_table_and_the_refusals() -> None:
    page = (Path(__file__).parents[2] / "docs" / "serving.md").read_text()
    for name in (*ADAPTER_CONFIGS, *REFUSED):
        assert f"| `{name}` |" in page, f"docs/serving.md: no row for {name} in the cache-dit adapter coverage"
    for name, reason in REFUSED.items():
        assert f"| `{name}` | {reason} |" in page
