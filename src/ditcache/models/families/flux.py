"""Extractor for diffusers ``FluxTransformer2DModel`` (FLUX.1 dev/schnell/Kontext and fine-tunes).

Mirrors ``FluxTransformer2DModel.forward`` of diffusers 0.42: embeddings, timestep/guidance/pooled conditioning,
RoPE, then the double-stream blocks followed by the single-stream blocks (one block stack of
``num_layers + num_single_layers`` blocks, ControlNet residuals added per block as diffusers does), then
``norm_out`` and ``proj_out``.

Modulated input (TeaCache's indicator): ``transformer_blocks[0].norm1(hidden_states, emb=temb)[0]``, as in
TeaCache4FLUX.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ditcache.core.context import CacheContext
from ditcache.models import _diffusers
from ditcache.presets.rules import fixed

_FLUX_DEV = {"num_layers": 19, "num_single_layers": 38}


@_diffusers.diffusers_extractor(
    "FluxTransformer2DModel",
    name="flux",
    blocks=("transformer_blocks", "single_transformer_blocks"),
    attention_kwargs="joint_attention_kwargs",
    teacache=fixed("flux.1-dev", _FLUX_DEV, "FLUX.1-Kontext-dev: pass model='flux.1-kontext-dev'"),
    magcache=fixed("flux.1-dev", _FLUX_DEV, "FLUX.1-Kontext-dev: pass model='flux.1-kontext-dev'"),
)
def extract(
    self: Any,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor | None = None,
    pooled_projections: torch.Tensor | None = None,
    timestep: torch.Tensor | None = None,
    img_ids: torch.Tensor | None = None,
    txt_ids: torch.Tensor | None = None,
    guidance: torch.Tensor | None = None,
    joint_attention_kwargs: dict[str, Any] | None = None,
    controlnet_block_samples: Sequence[torch.Tensor] | None = None,
    controlnet_single_block_samples: Sequence[torch.Tensor] | None = None,
    return_dict: bool = True,
    controlnet_blocks_repeat: bool = False,
) -> CacheContext:
    from diffusers.models.transformers import transformer_flux

    if timestep is None or encoder_hidden_states is None or img_ids is None or txt_ids is None:
        raise ValueError(
            "FluxTransformer2DModel call: timestep, encoder_hidden_states, img_ids and txt_ids are required"
        )
    condition = encoder_hidden_states
    raw_timestep = timestep
    hidden_states = self.x_embedder(hidden_states)

    timestep = timestep.to(hidden_states.dtype) * 1000
    if guidance is not None:
        guidance = guidance.to(hidden_states.dtype) * 1000

    temb = (
        self.time_text_embed(timestep, pooled_projections)
        if guidance is None
        else self.time_text_embed(timestep, guidance, pooled_projections)
    )
    encoder_hidden_states = self.context_embedder(encoder_hidden_states)

    raw_ids = (txt_ids, img_ids)  # the caller's tensors (the same objects every step): the RoPE memo's key
    if txt_ids.ndim == 3:
        transformer_flux.logger.warning(
            "Passing `txt_ids` 3d torch.Tensor is deprecated."
            "Please remove the batch dimension and pass it as a 2d torch Tensor"
        )
        txt_ids = txt_ids[0]
    if img_ids.ndim == 3:
        transformer_flux.logger.warning(
            "Passing `img_ids` 3d torch.Tensor is deprecated."
            "Please remove the batch dimension and pass it as a 2d torch Tensor"
        )
        img_ids = img_ids[0]

    image_rotary_emb = _ROPE.get(self, raw_ids, torch.cat((txt_ids, img_ids), dim=0))

    if joint_attention_kwargs is not None and "ip_adapter_image_embeds" in joint_attention_kwargs:
        ip_adapter_image_embeds = joint_attention_kwargs.pop("ip_adapter_image_embeds")
        ip_hidden_states = self.encoder_hid_proj(ip_adapter_image_embeds)
        joint_attention_kwargs.update({"ip_hidden_states": ip_hidden_states})

    double = self.transformer_blocks
    single = self.single_transformer_blocks

    def call(block: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> Any:
        return _diffusers.call_block(self, block, h, e, temb, image_rotary_emb, joint_attention_kwargs)

    stack = _diffusers.block_stack(
        _diffusers.BlockList(
            double,
            call,
            "eh",
            _diffusers.controlnet_residuals(controlnet_block_samples, len(double), repeat=controlnet_blocks_repeat),
        ),
        _diffusers.BlockList(
            single, call, "eh", _diffusers.controlnet_residuals(controlnet_single_block_samples, len(single))
        ),
    )

    norm = double[0].norm1 if len(double) else single[0].norm

    def postprocess(h: torch.Tensor, e: torch.Tensor | None) -> Any:
        h = self.norm_out(h, temb)
        output = self.proj_out(h)
        return _diffusers.model_output(output, return_dict)

    return CacheContext(
        modulated_input=_diffusers.adaln_input(norm, hidden_states, temb),
        hidden_states=hidden_states,
        encoder_hidden_states=encoder_hidden_states,
        temb=temb,
        blocks=stack,
        postprocess=postprocess,
        extra_states={"image_rotary_emb": image_rotary_emb},
        timestep=raw_timestep,
        condition=condition,
    )


class _RopeCache:
    """The last rotary embedding of each module, reused while its inputs are provably unchanged.

    The position ids of a denoising run are the same tensors at every step (pipelines build them once per run), so
    recomputing the embedding every call is pure overhead (~0.1 ms here, a large share of a skipped step's cost on
    a small model). Reuse is keyed without reading any tensor value (no host sync): on the identity and in-place
    version counter of the ``txt_ids`` and ``img_ids`` tensors (the memo holds them, so an identity is never reused
    by another tensor), and on the embedder itself: the ``pos_embed`` object, its class's ``forward`` and its plain
    attributes (``theta``, ``axes_dim``, a ``forward`` patched on the instance, ...), its parameters and buffers by
    identity and version. Anything else (grad mode, inference tensors, which have no version counter) recomputes.
    """

    def __init__(self) -> None:
        self._last: weakref.WeakKeyDictionary[nn.Module, tuple[tuple[Any, ...], Any]] = weakref.WeakKeyDictionary()

    def get(self, module: Any, raw_ids: tuple[torch.Tensor, torch.Tensor], ids: torch.Tensor) -> Any:
        """The embedding of ``ids`` (``raw_ids``: the caller's ``txt_ids`` and ``img_ids``, the memo's key)."""
        key = None if torch.is_grad_enabled() else _rope_key(module.pos_embed, *raw_ids)
        hit = self._last.get(module)
        if key is not None and hit is not None and _same_key(hit[0], key):
            return hit[1]
        rotary = module.pos_embed(ids)
        if key is not None:
            self._last[module] = (key, rotary)
        else:
            self._last.pop(module, None)
        return rotary


def _tensor_key(t: torch.Tensor) -> tuple[Any, ...] | None:
    if t.is_inference():  # no version counter: an in-place change could not be seen
        return None
    return (t, t._version, t.shape, t.dtype, t.device)


def _rope_key(embedder: Any, txt_ids: torch.Tensor, img_ids: torch.Tensor) -> tuple[Any, ...] | None:
    tensors = [txt_ids, img_ids]
    attributes: list[tuple[str, Any]] = []
    if isinstance(embedder, nn.Module):
        tensors += [p for p in embedder.parameters()] + [b for b in embedder.buffers()]
    for name, value in sorted(vars(embedder).items()):
        if name.startswith("_"):  # nn.Module's bookkeeping (hooks, parameters and buffers are keyed above)
            continue
        if isinstance(value, torch.Tensor):
            tensors.append(value)
        elif isinstance(value, (list, tuple)):
            attributes.append((name, tuple(value)))
        else:
            attributes.append((name, value))
    keys = [_tensor_key(t) for t in tensors]
    if any(k is None for k in keys):
        return None
    return (embedder, type(embedder).forward, tuple(attributes), tuple(keys))


def _same_key(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    """Compare two memo keys without ever comparing tensors by value (identity only, so no host sync)."""
    if a[0] is not b[0] or a[1] is not b[1] or len(a[3]) != len(b[3]):
        return False
    for ka, kb in zip(a[3], b[3], strict=True):
        if ka[0] is not kb[0] or ka[1:] != kb[1:]:
            return False
    attrs_a, attrs_b = a[2], b[2]
    if len(attrs_a) != len(attrs_b):
        return False
    for (na, va), (nb, vb) in zip(attrs_a, attrs_b, strict=True):
        if na != nb or not _same_value(va, vb):
            return False
    return True


def _same_value(a: Any, b: Any) -> bool:
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, (bool, int, float, str, type(None))) and isinstance(b, (bool, int, float, str, type(None))):
        return type(a) is type(b) and a == b
    return a is b  # anything else (a patched forward, an object): the same object


_ROPE = _RopeCache()
