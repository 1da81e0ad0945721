"""The Flux extractor's rotary-embedding memo: reused only while the ids *and* the embedder are unchanged."""

from __future__ import annotations

from typing import Any

import torch
from diffusers.models.transformers.transformer_flux import FluxPosEmbed

import ditcache
from _support.flux import make_flux, make_inputs


def _call(model: torch.nn.Module, inputs: Any, img_ids: torch.Tensor | None = None) -> torch.Tensor:
    with torch.no_grad():
        return model(  # type: ignore[no-any-return]
            hidden_states=inputs.latents,
            encoder_hidden_states=inputs.prompt_embeds,
            pooled_projections=inputs.pooled_prompt_embeds,
            timestep=torch.tensor([0.5]),
            img_ids=inputs.img_ids if img_ids is None else img_ids,
            txt_ids=inputs.txt_ids,
            return_dict=False,
        )[0]


def _hooked_and_native() -> tuple[torch.nn.Module, torch.nn.Module, Any]:
    hooked, native = make_flux(), make_flux()
    ditcache.apply_teacache_hook(hooked, ditcache.TeaCacheConfig(rel_l1_thresh=0.4))
    return hooked, native, make_inputs(hooked)


def _fresh_step(model: torch.nn.Module) -> None:
    ditcache.refresh(model)  # every call is a step 0: always computed, so the output is the model's


def test_a_changed_theta_is_seen_by_the_memo() -> None:
    hooked, native, inputs = _hooked_and_native()
    assert torch.equal(_call(hooked, inputs), _call(native, inputs))
    for model in (hooked, native):
        model.pos_embed.theta = 500
    _fresh_step(hooked)
    assert torch.equal(_call(hooked, inputs), _call(native, inputs))


def test_a_replaced_embedder_or_patched_forward_is_seen_by_the_memo() -> None:
    hooked, native, inputs = _hooked_and_native()
    _call(hooked, inputs)
    for model in (hooked, native):
        model.pos_embed = FluxPosEmbed(theta=77, axes_dim=[4, 6, 6])
    _fresh_step(hooked)
    assert torch.equal(_call(hooked, inputs), _call(native, inputs))
    for model in (hooked, native):
        original = model.pos_embed.forward

        def halved(ids: torch.Tensor, original: Any = original) -> Any:
            return original(ids * 0.5)

        model.pos_embed.forward = halved
    _fresh_step(hooked)
    assert torch.equal(_call(hooked, inputs), _call(native, inputs))


def test_ids_changed_in_place_are_seen_by_the_memo() -> None:
    hooked, native, inputs = _hooked_and_native()
    ids = inputs.img_ids.clone()
    _call(hooked, inputs, ids)
    ids[:, 0] += 3.0
    _fresh_step(hooked)
    assert torch.equal(_call(hooked, inputs, ids), _call(native, inputs, ids))


def test_the_memo_is_reused_for_the_same_ids_and_embedder() -> None:
    hooked, _, inputs = _hooked_and_native()
    calls = []
    original = FluxPosEmbed.forward

    def counting(self: FluxPosEmbed, ids: torch.Tensor) -> Any:
        calls.append(1)
        return original(self, ids)

    hooked.pos_embed.forward = counting.__get__(hooked.pos_embed)
    for _ in range(3):
        _call(hooked, inputs)
    assert len(calls) == 1
