"""CFG-branch identity, hardened (issue 10): names per thread and task, automatic identity, automatic roles.

Proves: the diffusers ``cache_context`` name belongs to the thread or asyncio task that opened it (item 3); the
automatic identity is the live prompt tensor and its version, so cond and uncond embeddings rebuilt at one address
never share state, while per-call views of one tensor still share a branch (item 4); automatic roles follow the latent
each CFG pair is computed on, so two requests in lockstep each get a cond and an uncond branch (item 5).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
import torch

import ditcache
from _support.flux import FluxInputs, denoise, flow_sigmas, make_flux, make_inputs

TEACACHE = ditcache.TeaCacheConfig(rel_l1_thresh=0.6, model="flux.1-dev")


# ------------------------------------------------------------------------------------ item 3: threads and tasks
def test_a_cache_context_name_stays_in_its_thread(one_thread: None) -> None:
    model = make_flux()
    cache = ditcache.apply_teacache_hook(model, TEACACHE)
    runtime = ditcache.get_cache_runtime(model)
    assert runtime is not None
    opened, release = threading.Event(), threading.Event()

    def other_thread() -> None:
        with model.cache_context("uncond"):  # type: ignore[operator]
            opened.set()
            release.wait(30)

    thread = threading.Thread(target=other_thread)
    thread.start()
    try:
        assert opened.wait(30)
        assert runtime.external_context is None  # this thread opened no scope
        denoise(model, 3, inputs=make_inputs(model))
    finally:
        release.set()
        thread.join()
    assert [str(s.branch).startswith("auto:") for s in cache.stats()] == [True]


def test_interleaved_cache_context_scopes_of_two_tasks_do_not_stick(one_thread: None) -> None:
    model = make_flux()
    ditcache.apply_teacache_hook(model, TEACACHE)
    runtime = ditcache.get_cache_runtime(model)
    assert runtime is not None
    seen: dict[str, Any] = {}

    a_in, b_in, a_out = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def task_a() -> None:
        with model.cache_context("cond"):  # type: ignore[operator]
            a_in.set()
            await b_in.wait()
            seen["cond"] = runtime.external_context
        a_out.set()

    async def task_b() -> None:
        await a_in.wait()
        with model.cache_context("uncond"):  # type: ignore[operator]
            b_in.set()
            await a_out.wait()
            seen["uncond"] = runtime.external_context

    async def main() -> None:
        # a enters, b enters, a leaves, b leaves: scopes that interleave instead of nesting
        await asyncio.gather(task_a(), task_b())

    asyncio.run(main())
    assert seen == {"cond": ("cond", {}), "uncond": ("uncond", {})}
    assert runtime.external_context is None


# ------------------------------------------------------------------------------------ item 4: automatic identity
def _rebuilt_cfg_loop(model: torch.nn.Module, inputs: FluxInputs, steps: int) -> torch.Tensor:
    """True CFG whose prompt embeddings are written into one buffer before each call (one address, two contents)."""
    sigmas = flow_sigmas(steps)
    buffer = torch.empty_like(inputs.prompt_embeds)
    latents = inputs.latents
    with torch.no_grad():
        for i in range(steps):
            preds = []
            for prompt, pooled in (
                (inputs.prompt_embeds, inputs.pooled_prompt_embeds),
                (inputs.negative_prompt_embeds, inputs.negative_pooled_prompt_embeds),
            ):
                buffer.copy_(prompt)
                kw = {"img_ids": inputs.img_ids, "txt_ids": inputs.txt_ids, "return_dict": False}
                t = sigmas[i].expand(1)
                preds.append(
                    model(
                        hidden_states=latents, encoder_hidden_states=buffer, pooled_projections=pooled, timestep=t, **kw
                    )[0]
                )
            latents = latents + (sigmas[i + 1] - sigmas[i]) * (preds[1] + 3.0 * (preds[0] - preds[1]))
    return latents


def test_embeddings_rebuilt_at_one_address_never_share_a_branch(one_thread: None) -> None:
    inputs = make_inputs(make_flux())
    native = _rebuilt_cfg_loop(make_flux(), inputs, 8)
    model = make_flux()
    cache = ditcache.apply_teacache_hook(model, TEACACHE)
    out = _rebuilt_cfg_loop(model, inputs, 8)
    # every call is its own branch: computed, so the output is the native one bit for bit
    assert all(d.computed for s in cache.stats() for d in s.decisions)
    assert torch.equal(out, native)


def test_views_of_one_prompt_tensor_share_a_branch(one_thread: None) -> None:
    inputs = make_inputs(make_flux())
    ref_model = make_flux()
    ref_cache = ditcache.apply_teacache_hook(ref_model, TEACACHE)
    ref = denoise(ref_model, 8, inputs=inputs)

    model = make_flux()
    cache = ditcache.apply_teacache_hook(model, TEACACHE)
    original = model.forward
    calls = []

    def forward(*args: Any, **kw: Any) -> Any:  # a new view of the same prompt tensor at every call
        kw["encoder_hidden_states"] = kw["encoder_hidden_states"][:, :]
        calls.append(kw["encoder_hidden_states"])
        return original(*args, **kw)

    model.forward = forward  # type: ignore[method-assign]
    out = denoise(model, 8, inputs=inputs)
    assert len({id(c) for c in calls}) == 8 and len(cache.stats()) == 1
    assert [s.decisions for s in cache.stats()] == [s.decisions for s in ref_cache.stats()]
    assert torch.equal(out, ref)


# ------------------------------------------------------------------------------------ item 5: lockstep requests
def _lockstep(model: torch.nn.Module, requests: list[FluxInputs], steps: int, copy_latents: bool) -> None:
    sigmas = flow_sigmas(steps)
    latents = [r.latents for r in requests]
    with torch.no_grad():
        for i in range(steps):
            for k, r in enumerate(requests):
                preds = []
                for prompt, pooled in (
                    (r.prompt_embeds, r.pooled_prompt_embeds),
                    (r.negative_prompt_embeds, r.negative_pooled_prompt_embeds),
                ):
                    h = latents[k].clone() if copy_latents else latents[k]
                    preds.append(
                        model(
                            hidden_states=h,
                            encoder_hidden_states=prompt,
                            pooled_projections=pooled,
                            timestep=sigmas[i].expand(1),
                            img_ids=r.img_ids,
                            txt_ids=r.txt_ids,
                            return_dict=False,
                        )[0]
                    )
                latents[k] = latents[k] + (sigmas[i + 1] - sigmas[i]) * (preds[1] + 3.0 * (preds[0] - preds[1]))


@pytest.mark.parametrize("copy_latents", [False, True])
def test_two_cfg_requests_in_lockstep_each_have_a_cond_and_an_uncond(copy_latents: bool, one_thread: None) -> None:
    model = make_flux()
    cache = ditcache.apply_magcache_hook(
        model, ditcache.MagCacheConfig(model="flux.1-dev", num_inference_steps=6, threshold=0.3)
    )
    requests = [make_inputs(model, seed=1), make_inputs(model, seed=2)]
    if copy_latents:  # one request only: a caller copying the latent per call keeps the arrival-order roles
        requests = requests[:1]
    _lockstep(model, requests, 6, copy_latents)
    roles = [s.decisions[0].info["role"] for s in cache.stats()]
    assert roles == ["cond", "uncond"] * len(requests)
