"""Extractor for diffusers ``WanVACETransformer3DModel`` (Wan2.1-VACE 1.3B/14B, Wan2.2-VACE-Fun).

Mirrors ``WanVACETransformer3DModel.forward`` of diffusers 0.42: Wan's preprocessing plus the control-video patch
embedding, then the cached ``blocks``; after block ``i`` of ``vace_layers`` the next VACE hint is added (times its
``control_hidden_states_scale``), in block order, as diffusers pops them. The hints come from the ``vace_blocks``,
which depend on the preprocessed inputs only: without grad they run when the first hinted block has run, so a step
that a cache skips whole does not pay for them (with grad, before the blocks, as diffusers orders them). Output as Wan.

Modulated input (TeaCache's indicator): the timestep embedding ``temb``, as Wan; ``extra_states`` has
``"timestep_proj"`` too.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ditcache.core.context import CacheContext
from ditcache.models import _diffusers
from ditcache.presets.rules import PresetRule, config_value, none_published


def _magcache(config: Any) -> tuple[str, bool]:
    dim = (config_value(config, "num_attention_heads") or 0) * (config_value(config, "attention_head_dim") or 0)
    if dim == 5120:
        return "wan2.1-t2v-14b", True
    return "wan2.1-vace-1.3b", dim == 1536


@_diffusers.diffusers_extractor(
    "WanVACETransformer3DModel",
    name="wan-vace",
    blocks=("blocks",),
    teacache=none_published("no TeaCache set is published for Wan-VACE"),
    magcache=PresetRule(
        ("wan2.1-vace-1.3b", "wan2.1-t2v-14b"),
        _magcache,
        "VACE-1.3B: its own curve; VACE-14B: the T2V-14B curve, as the MagCache authors do",
    ),
)
def extract(
    self: Any,
    hidden_states: torch.Tensor,
    timestep: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    encoder_hidden_states_image: torch.Tensor | None = None,
    control_hidden_states: torch.Tensor | None = None,
    control_hidden_states_scale: torch.Tensor | None = None,
    return_dict: bool = True,
    attention_kwargs: dict[str, Any] | None = None,
) -> CacheContext:
    if control_hidden_states is None:
        raise ValueError("WanVACETransformer3DModel call: control_hidden_states is required")
    condition, raw_timestep = encoder_hidden_states, timestep
    grid = _diffusers.wan_grid(self, hidden_states)
    batch_size = hidden_states.shape[0]
    vace_layers = self.config.vace_layers
    if control_hidden_states_scale is None:
        control_hidden_states_scale = control_hidden_states.new_ones(len(vace_layers))
    scales = torch.unbind(control_hidden_states_scale)
    if len(scales) != len(vace_layers):
        raise ValueError(
            f"Length of `control_hidden_states_scale` {len(scales)} should be equal to {len(vace_layers)}."
        )

    rotary_emb = self.rope(hidden_states)
    hidden_states = self.patch_embedding(hidden_states).flatten(2).transpose(1, 2)
    control = self.vace_patch_embedding(control_hidden_states).flatten(2).transpose(1, 2)
    padding = control.new_zeros(batch_size, hidden_states.size(1) - control.size(1), control.size(2))
    control = torch.cat([control, padding], dim=1)

    temb, timestep_proj, encoder_hidden_states, encoder_hidden_states_image = self.condition_embedder(
        timestep, encoder_hidden_states, encoder_hidden_states_image
    )
    timestep_proj = timestep_proj.unflatten(1, (6, -1))
    if encoder_hidden_states_image is not None:
        encoder_hidden_states = torch.concat([encoder_hidden_states_image, encoder_hidden_states], dim=1)
    h_in, e_in = hidden_states, encoder_hidden_states

    hinted = [i for i in range(len(self.blocks)) if i in vace_layers]  # the blocks that pop a hint, in order
    hints: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def run_vace() -> None:  # the VACE blocks run on the preprocessed inputs, once per call
        c = control
        for k, block in enumerate(self.vace_blocks):
            states, c = _diffusers.call_block(self, block, h_in, e_in, c, timestep_proj, rotary_emb)
            if k < len(hinted):
                hints[hinted[k]] = (states, scales[k])

    if torch.is_grad_enabled():
        run_vace()  # in diffusers' order, so that the gradients accumulate in the same order

    def add_hint(index: int, h: torch.Tensor) -> torch.Tensor:
        if index not in hinted:
            return h
        if not hints:
            run_vace()
        hint, scale = hints[index]
        return h + hint.to(h.device) * scale

    def call(block: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        return _diffusers.call_block(self, block, h, e, timestep_proj, rotary_emb)

    return CacheContext(
        modulated_input=temb,
        hidden_states=hidden_states,
        encoder_hidden_states=encoder_hidden_states,
        temb=temb,
        blocks=_diffusers.block_stack(_diffusers.BlockList(self.blocks, call, "h", add_hint)),
        postprocess=lambda h, e: _diffusers.wan_output(self, temb, h, grid, return_dict),
        extra_states={"temb": temb, "timestep_proj": timestep_proj, "rotary_emb": rotary_emb},
        timestep=raw_timestep,
        condition=condition,
    )
