"""The built-in extractors (Flux, Qwen-Image, Wan) reproduce their diffusers model's forward exactly.

Each model is built from a tiny random config (seeded) and run for a few consecutive "denoising" calls with
a changing timestep and fresh latents. A TeaCache whose threshold can never be reached (the rescale
polynomial is the identity, the threshold 1e-12) decides on every call but always computes, so the hooked
output must be bit-identical to the native forward of an untouched deep copy. The other tests check the
block stack's slicing, gradient checkpointing, the extractor lookup and the runtime's checks of what an
extractor returns.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from diffusers import FluxTransformer2DModel, QwenImageTransformer2DModel, WanTransformer3DModel
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from torch import nn

import ditcache
from ditcache import CacheContext, TeaCacheConfig
from ditcache.core import FunctionExtractor, get_extractor

FLOW_TIMESTEPS = (1.0, 0.8, 0.55, 0.3)  # Flux / Qwen-Image: t in [0, 1], scaled by 1000 inside
WAN_TIMESTEPS = (999.0, 800.0, 550.0, 300.0)  # Wan: t in [0, 1000]

# rescale(x) = x and a threshold no positive distance stays under: every call is decided, none is skipped.
NEVER_SKIP = TeaCacheConfig(rel_l1_thresh=1e-12, coefficients=(0.0, 0.0, 0.0, 1.0, 0.0))

Call = tuple[tuple[Any, ...], dict[str, Any]]


# --------------------------------------------------------------------------------------------- tiny models
def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=gen)


def build_flux(guidance_embeds: bool = False) -> FluxTransformer2DModel:
    torch.manual_seed(0)
    return FluxTransformer2DModel(
        patch_size=1,
        in_channels=8,
        num_layers=2,
        num_single_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=24,
        pooled_projection_dim=16,
        guidance_embeds=guidance_embeds,
        axes_dims_rope=(4, 6, 6),
    ).eval()


def build_qwen(zero_cond_t: bool = False, use_additional_t_cond: bool = False) -> QwenImageTransformer2DModel:
    torch.manual_seed(0)
    return QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=16,
        out_channels=4,
        num_layers=3,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=24,
        axes_dims_rope=(4, 6, 6),
        zero_cond_t=zero_cond_t,
        use_additional_t_cond=use_additional_t_cond,
    ).eval()


WAN_TEXT_LEN_I2V = 512  # diffusers' Wan cross-attention hard-codes the text length to 512 when image tokens are added


def build_wan(i2v: bool = False) -> WanTransformer3DModel:
    torch.manual_seed(0)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=4,
        out_channels=4,
        text_dim=16,
        freq_dim=32,
        ffn_dim=48,
        num_layers=3,
        cross_attn_norm=True,
        rope_max_seq_len=32,
        image_dim=20 if i2v else None,
        added_kv_proj_dim=24 if i2v else None,
    ).eval()


# ------------------------------------------------------------------------------------------ call sequences
def flux_calls(
    model: nn.Module,
    batch: int,
    return_dict: bool,
    *,
    guidance: bool = False,
    controlnet: int = 0,
    controlnet_single: int = 0,
    repeat: bool = False,
    joint_attention_kwargs: dict[str, Any] | None = None,
) -> list[Call]:
    gen = _seeded(1)
    img, txt, dim = 8, 5, model.inner_dim
    prompt = _randn(gen, batch, txt, 24)
    pooled = _randn(gen, batch, 16)
    img_ids = torch.stack(torch.meshgrid(torch.zeros(1), torch.arange(2.0), torch.arange(4.0), indexing="ij"), -1)
    fixed: dict[str, Any] = {
        "encoder_hidden_states": prompt,
        "pooled_projections": pooled,
        "img_ids": img_ids.reshape(-1, 3),
        "txt_ids": torch.zeros(txt, 3),
        "return_dict": return_dict,
    }
    if guidance:
        fixed["guidance"] = torch.full((batch,), 3.5)
    if controlnet:
        fixed["controlnet_block_samples"] = [_randn(gen, batch, img, dim) * 0.1 for _ in range(controlnet)]
        fixed["controlnet_blocks_repeat"] = repeat
    if controlnet_single:
        fixed["controlnet_single_block_samples"] = [
            _randn(gen, batch, img, dim) * 0.1 for _ in range(controlnet_single)
        ]
    if joint_attention_kwargs is not None:
        fixed["joint_attention_kwargs"] = joint_attention_kwargs
    return [
        ((), {"hidden_states": _randn(gen, batch, img, 8), "timestep": torch.full((batch,), t), **fixed})
        for t in FLOW_TIMESTEPS
    ]


def qwen_calls(
    model: nn.Module,
    batch: int,
    return_dict: bool,
    *,
    mask: bool = False,
    images_per_sample: int = 1,
    additional_t_cond: bool = False,
    controlnet: int = 0,
    attention_kwargs: dict[str, Any] | None = None,
) -> list[Call]:
    gen = _seeded(2)
    txt, dim = 6, model.inner_dim
    shapes = [(1, 2, 4), (1, 2, 2), (1, 4, 2)][:images_per_sample]
    img = sum(f * h * w for f, h, w in shapes)
    fixed: dict[str, Any] = {
        "encoder_hidden_states": _randn(gen, batch, txt, 24),
        "img_shapes": [list(shapes) for _ in range(batch)],
        "guidance": None,
        "return_dict": return_dict,
    }
    if mask:
        m = torch.ones(batch, txt, dtype=torch.long)
        m[0, 4:] = 0  # trailing padding on the first sample
        if batch > 1:
            m[1, 1] = 0  # a hole: masks need not be contiguous
        fixed["encoder_hidden_states_mask"] = m
    if additional_t_cond:
        fixed["additional_t_cond"] = torch.arange(batch) % 2
    if controlnet:
        fixed["controlnet_block_samples"] = [_randn(gen, batch, img, dim) * 0.1 for _ in range(controlnet)]
    if attention_kwargs is not None:
        fixed["attention_kwargs"] = attention_kwargs
    return [
        ((), {"hidden_states": _randn(gen, batch, img, 16), "timestep": torch.full((batch,), t), **fixed})
        for t in FLOW_TIMESTEPS
    ]


def wan_calls(
    model: nn.Module,
    batch: int,
    return_dict: bool,
    *,
    i2v: bool = False,
    per_token_timestep: bool = False,
    positional: bool = False,
    attention_kwargs: dict[str, Any] | None = None,
) -> list[Call]:
    gen = _seeded(3)
    frames, height, width = 2, 4, 4
    tokens = frames * (height // 2) * (width // 2)
    prompt = _randn(gen, batch, WAN_TEXT_LEN_I2V if i2v else 7, 16)
    image = _randn(gen, batch, 3, 20) if i2v else None
    calls: list[Call] = []
    for t in WAN_TIMESTEPS:
        latents = _randn(gen, batch, 4, frames, height, width)
        # Wan 2.2 TI2V passes one timestep per latent token, shape (batch, tokens)
        timestep = torch.full((batch, tokens), t) if per_token_timestep else torch.full((batch,), t)
        kwargs: dict[str, Any] = {"return_dict": return_dict}
        if i2v:
            kwargs["encoder_hidden_states_image"] = image
        if attention_kwargs is not None:
            kwargs["attention_kwargs"] = attention_kwargs
        if positional:
            calls.append(((latents, timestep, prompt), kwargs))
        else:
            calls.append(
                (
                    (),
                    {
                        "hidden_states": latents,
                        "timestep": timestep,
                        "encoder_hidden_states": prompt,
                        **kwargs,
                    },
                )
            )
    return calls


@dataclass(frozen=True)
class Case:
    """One model configuration and the keyword options of its call sequence."""

    build: Callable[[], nn.Module]
    calls: Callable[..., list[Call]]
    options: dict[str, Any] = field(default_factory=dict)
    config: TeaCacheConfig = NEVER_SKIP

    def make(self, batch: int, return_dict: bool) -> tuple[nn.Module, list[Call]]:
        model = self.build()
        return model, self.calls(model, batch, return_dict, **self.options)


CASES = {
    "flux": Case(build_flux, flux_calls),
    "flux-guidance": Case(lambda: build_flux(guidance_embeds=True), flux_calls, {"guidance": True}),
    "flux-controlnet": Case(
        build_flux, flux_calls, {"controlnet": 1, "controlnet_single": 2, "joint_attention_kwargs": {}}
    ),
    "flux-controlnet-repeat": Case(build_flux, flux_calls, {"controlnet": 1, "repeat": True}),
    "qwen": Case(build_qwen, qwen_calls),
    "qwen-mask": Case(build_qwen, qwen_calls, {"mask": True, "attention_kwargs": {}}),
    "qwen-zero-cond-t": Case(lambda: build_qwen(zero_cond_t=True), qwen_calls, {"images_per_sample": 3}),
    "qwen-additional-t-cond": Case(
        lambda: build_qwen(use_additional_t_cond=True), qwen_calls, {"additional_t_cond": True}
    ),
    "qwen-controlnet": Case(build_qwen, qwen_calls, {"controlnet": 2, "mask": True}),
    "wan-t2v": Case(build_wan, wan_calls),
    "wan-t2v-positional": Case(build_wan, wan_calls, {"positional": True, "attention_kwargs": {}}),
    "wan-i2v": Case(lambda: build_wan(i2v=True), wan_calls, {"i2v": True}),
    "wan-ti2v-per-token-timestep": Case(build_wan, wan_calls, {"per_token_timestep": True}),
    # TeaCache4Wan2.1's use_ret_steps mode decides on the 6-way timestep projection instead of temb
    "wan-ret-indicator": Case(
        build_wan,
        wan_calls,
        config=TeaCacheConfig(rel_l1_thresh=1e-12, coefficients=(0.0, 0.0, 0.0, 1.0, 0.0), indicator="timestep_proj"),
    ),
}


# ------------------------------------------------------------------------------------------------- helpers
def sample(out: Any, return_dict: bool) -> torch.Tensor:
    """The output tensor, after checking the return type matches ``return_dict``."""
    if return_dict:
        assert isinstance(out, Transformer2DModelOutput)
        return out.sample
    assert isinstance(out, tuple) and len(out) == 1
    return out[0]


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
            expected = sample(native(*args, **kwargs), return_dict)
            got = sample(model(*args, **kwargs), return_dict)
            assert got.shape == expected.shape and got.dtype == expected.dtype
            assert torch.equal(got, expected), f"step {step}: max |diff| {(got - expected).abs().max().item()}"

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
        assert torch.equal(sample(model(*args, **kwargs), return_dict), sample(native(*args, **kwargs), return_dict))


def extract(model: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Iterator[CacheContext]:
    """Yield the context the model's extractor builds for a call, inside the extractor's scope."""
    ext = get_extractor(model)
    with ext.scope(model, kwargs) as scoped:
        yield ext.extract(model, args, scoped)


# --------------------------------------------------------------------------------------------- equivalence
@pytest.mark.parametrize("return_dict", [True, False], ids=["return_dict", "tuple"])
@pytest.mark.parametrize("batch", [1, 2], ids=["b1", "b2"])
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_never_skipping_teacache_matches_native_forward(case: str, batch: int, return_dict: bool) -> None:
    model, calls = CASES[case].make(batch, return_dict)
    assert_hooked_equals_native(model, calls, return_dict, CASES[case].config)


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_context_reproduces_forward_and_blocks_slice(case: str) -> None:
    """``postprocess(*run_blocks())`` is the forward; the stack run block by block equals it run whole."""
    model, calls = CASES[case].make(2, True)
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
            assert torch.equal(h, h_all)
            assert (e is None and e_all is None) or torch.equal(e, e_all)  # type: ignore[arg-type]
            assert torch.equal(ctx.postprocess(h_all, e_all).sample, expected)
            # the raw call arguments, as the caller passed them (generation / CFG-branch detection)
            call = dict(kwargs)
            if args:
                call.update(zip(("hidden_states", "timestep", "encoder_hidden_states"), args))
            assert ctx.timestep is call["timestep"]
            assert ctx.condition is call["encoder_hidden_states"]


def test_wan_blocks_hand_back_the_same_text_tensor() -> None:
    """Wan's blocks leave the text stream alone; the stack returns the very same object (no zero residual)."""
    model, calls = CASES["wan-i2v"].make(1, True)
    args, kwargs = calls[0]
    with torch.no_grad():
        for ctx in extract(model, args, kwargs):
            e_in = ctx.encoder_hidden_states
            assert e_in is not None and e_in.shape[1] == 3 + WAN_TEXT_LEN_I2V  # image tokens first, then text
            _, e_out = ctx.run_blocks()
            assert e_out is e_in
            assert ctx.modulated_input is ctx.temb is ctx.extra_states["temb"]
            assert ctx.extra_states["timestep_proj"].shape == (1, 6, ctx.hidden_states.shape[-1])


def test_qwen_zero_cond_t_context() -> None:
    """zero_cond_t: the blocks are conditioned on 2B embeddings (t and 0); the indicator keeps the batch."""
    model, calls = CASES["qwen-zero-cond-t"].make(2, True)
    args, kwargs = calls[0]
    with torch.no_grad():
        for ctx in extract(model, args, kwargs):
            ctx.validate()
            assert ctx.temb.shape[0] == 4
            assert ctx.modulated_input.shape == ctx.hidden_states.shape
            index = ctx.extra_states["modulate_index"]
            assert index.shape == ctx.hidden_states.shape[:2]
            assert index[:, :8].eq(0).all() and index[:, 8:].eq(1).all()


def count_checkpointed_calls(model: nn.Module) -> list[int]:
    """Wrap the model's (real) gradient-checkpointing function to count its calls; returns the live counter."""
    counter = [0]
    checkpoint = model._gradient_checkpointing_func

    def counting(*args: Any, **kwargs: Any) -> Any:
        counter[0] += 1
        return checkpoint(*args, **kwargs)

    model._gradient_checkpointing_func = counting
    return counter


@pytest.mark.parametrize("case", ["flux-controlnet", "qwen-mask", "wan-i2v"])
def test_gradient_checkpointing_matches_native(case: str) -> None:
    """Gradient checkpointing on and grad enabled: outputs and parameter gradients equal the native ones."""
    model, calls = CASES[case].make(1, True)
    model.train()
    model.enable_gradient_checkpointing()
    native = copy.deepcopy(model)
    counts = [count_checkpointed_calls(model), count_checkpointed_calls(native)]
    ditcache.apply_teacache_hook(model, NEVER_SKIP)
    args, kwargs = calls[0]
    out, ref = model(*args, **kwargs).sample, native(*args, **kwargs).sample
    assert torch.equal(out, ref)
    # every block went through the checkpointing function, in both
    assert counts[0] == counts[1] == [len(get_extractor(model).block_modules(model))]
    out.square().mean().backward()
    ref.square().mean().backward()
    for (name, p), q in zip(model.named_parameters(), native.parameters()):
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is not None:
            assert torch.equal(p.grad, q.grad), name
    ditcache.remove_cache(model)


@pytest.mark.parametrize("case", ["flux", "qwen", "wan-t2v"])
def test_attention_kwargs_scale_is_not_mutated(case: str) -> None:
    """The LoRA scope pops ``scale`` from a copy: the caller's dict is left as it was (as diffusers does)."""
    model, calls = CASES[case].make(1, True)
    name = "joint_attention_kwargs" if case == "flux" else "attention_kwargs"
    ditcache.apply_teacache_hook(model, NEVER_SKIP)
    args, kwargs = calls[0]
    attention_kwargs = {"scale": 1.0}
    with torch.no_grad():
        model(*args, **{**kwargs, name: attention_kwargs})
    assert attention_kwargs == {"scale": 1.0}
    ditcache.remove_cache(model)


def test_wan_ti2v_image_to_video_timestep_is_tracked_across_steps() -> None:
    model, calls = CASES["wan-ti2v-per-token-timestep"].make(1, True)
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
    model, calls = CASES["flux"].make(1, True)
    args, kwargs = calls[0]
    with torch.no_grad():
        expected = model(*args, **kwargs).sample
        ditcache.apply_teacache_hook(model, NEVER_SKIP, extractor=_flux_with(transform))
        with pytest.raises(error, match=match):
            model(*args, **kwargs)
        ditcache.remove_cache(model)
        assert ditcache_attrs(model) == []
        assert torch.equal(model(*args, **kwargs).sample, expected)


# --------------------------------------------------------------------------------------- other dtypes / CUDA
ON_GPU = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
DEVICE_CASES = [
    "flux-guidance",
    "flux-controlnet",
    "qwen-mask",
    "qwen-zero-cond-t",
    "wan-i2v",
    "wan-ti2v-per-token-timestep",
]


@pytest.mark.parametrize(
    ("device", "dtype"),
    [
        pytest.param("cpu", torch.bfloat16, id="cpu-bf16"),
        pytest.param("cuda", torch.float32, id="cuda-fp32", marks=ON_GPU),
        pytest.param("cuda", torch.bfloat16, id="cuda-bf16", marks=ON_GPU),
    ],
)
@pytest.mark.parametrize("case", DEVICE_CASES)
def test_never_skipping_teacache_matches_native_forward_on_device(case: str, device: str, dtype: torch.dtype) -> None:
    """The same equivalence in bf16 (with Wan's float32 islands) and on CUDA, asserted bit-exact (torch.equal).

    No tolerance is needed in any dtype: the hooked call launches the same kernels on the same inputs in the
    same order as the native forward (the extractor adds no op to the computed path and reorders no
    reduction), and the cuBLAS / SDPA forward kernels are deterministic for identical shapes on one device.
    """
    model, calls = CASES[case].make(2, True)
    model = cast_like_from_pretrained(model, device, dtype)
    memo: dict[int, torch.Tensor] = {}
    calls = [move(call, device, dtype, memo) for call in calls]
    assert_hooked_equals_native(model, calls, True, CASES[case].config)
