"""The bundled trained digits DiT: weights, metadata, sampler determinism, quality, and caching transparency."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers import FluxTransformer2DModel

import ditcache
from ditcache.bundled import (
    NULL_CLASS,
    DigitsDiT,
    DigitsDiTConfig,
    StepEvent,
    euler_flow_sample,
    load_digits_dit,
    load_metadata,
    sample,
    sample_tokens,
    sigma_schedule,
    weights_path,
)
from ditcache.bundled.model import Conditioning, file_sha256, pack_images, unpack_tokens

# The shipped weights classify at 100% with CFG 3.0 on the training script's quality run (20 per class, 30 steps);
# this short run (2 per class, 20 steps) must reach at least 18/20.
MIN_CFG_ACCURACY = 0.9


@pytest.fixture(scope="module")
def model() -> DigitsDiT:
    torch.set_num_threads(1)
    return load_digits_dit()


def _expected_param_count(config: DigitsDiTConfig) -> int:
    """Parameters of a FluxTransformer2DModel + conditioner, from the architecture (not from the weights)."""
    d = config.num_attention_heads * config.attention_head_dim
    hd, mlp, c, p, tok = config.attention_head_dim, 4 * d, 4, config.pooled_projection_dim, config.cond_tokens
    lin = lambda i, o: i * o + o  # noqa: E731
    embed = lin(256, d) + lin(d, d) + lin(p, d) + lin(d, d)  # timestep MLP + pooled-text MLP
    io = lin(c, d) + lin(config.joint_attention_dim, d) + lin(d, 2 * d) + lin(d, c)  # x/context in, norm_out, out
    attn_joint = 6 * lin(d, d) + 2 * lin(d, d) + 4 * hd  # q,k,v,add_q,add_k,add_v; to_out, to_add_out; qk norms
    double = 2 * lin(d, 6 * d) + attn_joint + 2 * (lin(d, mlp) + lin(mlp, d))
    single = lin(d, 3 * d) + lin(d, mlp) + lin(d + mlp, d) + 3 * lin(d, d) + 2 * hd
    cond = (NULL_CLASS + 1) * (tok * config.joint_attention_dim + p)
    return embed + io + config.num_layers * double + config.num_single_layers * single + cond


def test_weights_load_with_expected_architecture(model: DigitsDiT) -> None:
    assert isinstance(model.transformer, FluxTransformer2DModel)
    n = sum(p.numel() for p in model.parameters())
    assert n == _expected_param_count(model.config)
    assert weights_path().stat().st_size <= 10 * 1024 * 1024
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    # trained, not freshly initialised: a fresh model with the same seed differs
    with torch.random.fork_rng():
        torch.manual_seed(0)
        fresh = DigitsDiT(model.config)
    assert not torch.equal(fresh.transformer.proj_out.weight, model.transformer.proj_out.weight)


def test_metadata_matches_weights(model: DigitsDiT) -> None:
    from safetensors import safe_open

    meta = load_metadata()
    assert meta["weights_sha256"] == file_sha256(weights_path())
    assert meta["parameter_count"] == sum(p.numel() for p in model.parameters())
    assert DigitsDiTConfig.from_dict(meta["model"]) == model.config
    with safe_open(str(weights_path()), "pt") as f:
        keys = set(f.keys())
        assert all(f.get_tensor(k).dtype == torch.float32 for k in keys) == (meta["weights_dtype"] == "float32")
    assert keys == set(model.state_dict())
    assert math.isfinite(meta["final_loss"]) and 0 < meta["final_loss"] < 1
    scores = meta["quality"]["accuracy_by_guidance"]
    assert scores[meta["quality"]["best_guidance"]] >= MIN_CFG_ACCURACY
    assert max(v for k, v in scores.items() if k != "none") > scores["none"]


def test_pack_unpack_roundtrip_and_flux_order() -> None:
    images = torch.rand(3, 16, 16)
    tokens = pack_images(images)
    assert tokens.shape == (3, 64, 4)
    torch.testing.assert_close(unpack_tokens(tokens), images * 2 - 1)
    # token (r, c) holds the 2x2 patch at rows 2r..2r+1, cols 2c..2c+1, row-major inside the patch
    r, c = 3, 5
    patch = images[0, 2 * r : 2 * r + 2, 2 * c : 2 * c + 2].reshape(4) * 2 - 1
    torch.testing.assert_close(tokens[0, r * 8 + c], patch)


def test_conditioning_shapes(model: DigitsDiT) -> None:
    cond = model.conditioning([0, 9, NULL_CLASS])
    assert cond.encoder_hidden_states.shape == (3, model.config.cond_tokens, model.config.joint_attention_dim)
    assert cond.pooled_projections.shape == (3, model.config.pooled_projection_dim)
    assert cond.txt_ids.shape == (model.config.cond_tokens, 3) and not cond.txt_ids.any()
    assert cond.img_ids.shape == (64, 3)
    assert cond.img_ids[9].tolist() == [0.0, 1.0, 1.0]  # (0, row, col) grid
    with pytest.raises(ValueError, match=r"allowed values are 0\.\.9"):
        model.conditioning([11])
    with pytest.raises(TypeError, match="integer class labels"):
        model.conditioning(torch.tensor([1.0]))


def test_sigma_schedule() -> None:
    s = sigma_schedule(4)
    assert s.tolist() == [1.0, 0.75, 0.5, 0.25, 0.0]
    shifted = sigma_schedule(4, shift=3.0)
    assert shifted[0] == 1.0 and shifted[-1] == 0.0 and bool((shifted[1:-1] > s[1:-1]).all())
    with pytest.raises(ValueError, match="num_steps"):
        sigma_schedule(0)
    with pytest.raises(ValueError, match="shift"):
        sigma_schedule(4, shift=0.0)


def test_sampling_quality_and_cfg_calls(model: DigitsDiT) -> None:
    pytest.importorskip("sklearn")
    from ditcache.bundled import DigitClassifier

    labels = torch.arange(10).repeat_interleave(2)
    events: list[StepEvent] = []
    images = sample(model, labels, num_steps=20, guidance_scale=3.0, seed=0, callback=events.append)
    assert images.shape == (20, 16, 16) and images.min() >= 0 and images.max() <= 1
    accuracy = DigitClassifier().accuracy(images, labels)
    assert accuracy >= MIN_CFG_ACCURACY, f"CFG 3.0 samples classified correctly: {accuracy:.2f}"
    assert [e.step for e in events] == list(range(20))
    assert all(e.transformer_calls == 2 and e.seconds >= 0 for e in events)
    assert events[0].sigma == 1.0 and events[-1].sigma_next == 0.0


def test_cfg_uses_separate_named_branches(model: DigitsDiT, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    original = type(model.transformer).cache_context

    def spy(self: FluxTransformer2DModel, name: str):  # type: ignore[no-untyped-def]
        seen.append(name)
        return original(self, name)

    monkeypatch.setattr(type(model.transformer), "cache_context", spy)
    sample(model, [1, 2], num_steps=3, guidance_scale=2.0, seed=0)
    guided = list(seen)
    seen.clear()
    sample(model, [1, 2], num_steps=3, guidance_scale=None, seed=0)
    assert guided == ["cond", "uncond"] * 3
    assert seen == ["cond"] * 3


def test_guidance_builds_the_uncond_branch_only_when_guided(model: DigitsDiT) -> None:
    cond = model.conditioning([1, 2])
    built: list[int] = []

    def uncond() -> Conditioning:
        built.append(1)
        return model.conditioning([NULL_CLASS, NULL_CLASS])

    noise = torch.randn(2, 64, 4, generator=torch.Generator().manual_seed(0))
    for scale in (None, 1.0):
        out = euler_flow_sample(model.transformer, model.velocity, cond, uncond, noise, 2, scale)
        assert built == []
        assert torch.equal(out, euler_flow_sample(model.transformer, model.velocity, cond, None, noise, 2, scale))
    lazy = euler_flow_sample(model.transformer, model.velocity, cond, uncond, noise, 2, 2.0)
    assert built == [1]  # built once, not per step
    eager = euler_flow_sample(model.transformer, model.velocity, cond, uncond(), noise, 2, 2.0)
    assert torch.equal(lazy, eager)
    assert torch.equal(lazy, sample_tokens(model, [1, 2], 2, 2.0, noise=noise))
    with pytest.raises(ValueError, match="uncond"):
        euler_flow_sample(model.transformer, model.velocity, cond, None, noise, 2, 2.0)


def test_shifted_schedule_reaches_the_transformer(model: DigitsDiT) -> None:
    timesteps: list[float] = []

    def record(module: torch.nn.Module, args: tuple[object, ...], kwargs: dict[str, object]) -> None:
        t = kwargs["timestep"]
        assert isinstance(t, torch.Tensor)
        timesteps.append(float(t[0]))

    handle = model.transformer.register_forward_pre_hook(record, with_kwargs=True)
    try:
        events: list[StepEvent] = []
        sample(model, [5], num_steps=4, shift=3.0, seed=0, callback=events.append)
    finally:
        handle.remove()
    expected = sigma_schedule(4, shift=3.0)[:-1].tolist()
    assert timesteps == pytest.approx(expected)
    assert [e.sigma for e in events] == pytest.approx(expected)
    assert all(e.transformer_calls == 1 for e in events)


def test_sampling_is_deterministic(model: DigitsDiT) -> None:
    a = sample(model, [3, 7], num_steps=5, guidance_scale=2.0, seed=123)
    b = sample(model, [3, 7], num_steps=5, guidance_scale=2.0, seed=123)
    c = sample(model, [3, 7], num_steps=5, guidance_scale=2.0, seed=124)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_never_skipping_teacache_is_bit_identical(model: DigitsDiT) -> None:
    labels = [0, 4, 8]
    plain = sample(model, labels, num_steps=8, guidance_scale=3.0, seed=5)
    cache = ditcache.apply_teacache_hook(model.transformer, ditcache.TeaCacheConfig(rel_l1_thresh=1e-12))
    try:
        cached = sample(model, labels, num_steps=8, guidance_scale=3.0, seed=5)
        stats = cache.stats()
    finally:
        ditcache.remove_cache(model.transformer)
    assert torch.equal(plain, cached)
    computed = sum(len(s.computed_steps) for s in stats)
    assert computed == 16  # 8 steps x 2 branches, none skipped
    # the cache was really in the path: a permissive threshold skips steps and changes the result
    ditcache.apply_teacache_hook(model.transformer, ditcache.TeaCacheConfig(rel_l1_thresh=10.0))
    try:
        skipping = sample(model, labels, num_steps=8, guidance_scale=3.0, seed=5)
    finally:
        ditcache.remove_cache(model.transformer)
    assert not torch.equal(plain, skipping)
