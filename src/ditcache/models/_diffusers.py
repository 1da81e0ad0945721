"""Declaration helpers shared by the extractors of diffusers transformers.

A model that follows a known convention is a short file::

    @diffusers_extractor(
        "FluxTransformer2DModel",
        blocks=("transformer_blocks", "single_transformer_blocks"),
        attention_kwargs="joint_attention_kwargs",
        teacache=fixed("flux.1-dev", num_layers=19, num_single_layers=38),
        magcache=fixed("flux.1-dev", num_layers=19, num_single_layers=38),
    )
    def extract(self, hidden_states, ...):  # the model's preprocessing, then a CacheContext
        ...

The pieces:

* :func:`diffusers_extractor` registers the decorated function as the extractor of the named class and declares
  its preset-key rules (:mod:`ditcache.presets.rules`); ``refuse`` names configurations that cannot be cached.
* :func:`call_block` is the gradient-checkpointing call every diffusers block loop repeats.
* :class:`BlockList` + :func:`block_stack` build the :class:`~ditcache.core.context.BlockStack` from one or more
  block lists, each with its stream convention (:data:`Returns`) and an optional per-index add-on
  (:func:`controlnet_residuals`, :func:`controlnet_after_first`, :func:`add_at`, :func:`chain`).
* :func:`adaln_input` and :func:`scale_shift_input` are the two usual modulated inputs (TeaCache's indicator).
* :func:`additive_mask` is diffusers' keep-mask to additive-bias conversion.
* Family helpers: :func:`wan_preprocess`, :func:`wan_grid`, :func:`wan_output`, :func:`wan_unpatchify` (Wan),
  :func:`hunyuan_grid`, :func:`hunyuan_output` (HunyuanVideo), :func:`sana_conditions` (SANA).
* :func:`lora_scope` (what ``apply_lora_scale`` does around a forward) and :func:`model_output` (``return_dict``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

import attrs
import torch
from torch import nn

from ditcache.core.context import BlockOutput, BlockStack, CacheContext
from ditcache.core.extractor import Extractor, register_extractor
from ditcache.presets.rules import PresetRule, declare_presets

__all__ = [
    "AddOn",
    "BlockList",
    "DiffusersExtractor",
    "Returns",
    "add_at",
    "adaln_input",
    "additive_mask",
    "block_stack",
    "call_block",
    "checkpointing",
    "chain",
    "controlnet_after_first",
    "controlnet_index",
    "controlnet_residuals",
    "diffusers_extractor",
    "hunyuan_grid",
    "hunyuan_output",
    "lora_scope",
    "model_output",
    "sana_conditions",
    "scale_shift_input",
    "wan_grid",
    "wan_output",
    "wan_preprocess",
    "wan_unpatchify",
]

ExtractFn = Callable[..., CacheContext]
"""``extract(model, *args, **kwargs) -> CacheContext``: the model's forward signature, returning a context."""

AddOn = Callable[[int, torch.Tensor], torch.Tensor]
"""A per-block-index add-on: ``add(index_in_its_list, hidden_states) -> hidden_states`` after the block ran."""

Returns = Literal["h", "he", "eh", "joint"]
"""What a list's blocks return, adapted to the stack's ``(h, e) -> (h, e)`` convention:

* ``"h"``: the image stream only; the text stream is K/V and is handed back as the *same* object (no residual);
* ``"he"`` / ``"eh"``: both streams, in that order;
* ``"joint"``: the blocks run on ``cat([e, h], dim=1)`` (single-stream on the concatenated sequence) and return it;
  the stack splits it back into ``(h, e)`` after every block, so every block of the model keeps one convention.
"""


# ------------------------------------------------------------------------------------------------ block calls
def checkpointing(model: nn.Module) -> bool:
    """Whether the model's block loop goes through its gradient-checkpointing function now."""
    return torch.is_grad_enabled() and bool(getattr(model, "gradient_checkpointing", False))


def call_block(model: nn.Module, block: nn.Module, *args: Any) -> Any:
    """``block(*args)``, through the model's gradient-checkpointing function when it is on and grad is enabled.

    The arguments are positional in the block's signature order, as diffusers' checkpointing branch passes them.
    """
    if checkpointing(model):
        return model._gradient_checkpointing_func(block, *args)  # type: ignore[operator]
    return block(*args)


@attrs.frozen
class BlockList:
    """One ``nn.ModuleList`` of a model with the way its blocks are called.

    ``call(block, h, e)`` runs one block (usually through :func:`call_block`) and returns what the block returns;
    ``returns`` says what that is; ``add`` is applied to the image stream after each block (ControlNet residuals,
    VACE hints, ...), with the block's index in *this* list.
    """

    modules: Sequence[nn.Module]
    call: Callable[[nn.Module, torch.Tensor, torch.Tensor | None], Any]
    returns: Returns = "h"
    add: AddOn | None = None


def _adapt(spec: BlockList, block: nn.Module, h: torch.Tensor, e: torch.Tensor | None) -> BlockOutput:
    returns = spec.returns
    if returns == "h":
        return spec.call(block, h, e), e
    if returns == "he":
        h, e = spec.call(block, h, e)
        return h, e
    if returns == "eh":
        e, h = spec.call(block, h, e)
        return h, e
    if e is None:
        raise ValueError("BlockList(returns='joint'): the text stream is None")
    joint = spec.call(block, torch.cat([e, h], dim=1), None)
    n_text = e.shape[1]
    return joint[:, n_text:], joint[:, :n_text]


def block_stack(*lists: BlockList) -> BlockStack:
    """One block stack over ``lists`` in execution order (global indices run across the lists)."""
    owners: list[tuple[BlockList, int]] = []
    for spec in lists:
        owners.extend((spec, i) for i in range(len(spec.modules)))

    def run_block(index: int, h: torch.Tensor, e: torch.Tensor | None) -> BlockOutput:
        spec, local = owners[index]
        h, e = _adapt(spec, spec.modules[local], h, e)
        if spec.add is not None:
            h = spec.add(local, h)
        return h, e

    return BlockStack(run_block, tuple(block for spec in lists for block in spec.modules))


# ------------------------------------------------------------------------------------------ per-index add-ons
def controlnet_index(index_block: int, num_blocks: int, num_samples: int) -> int:
    """diffusers' ControlNet residual index: ``index_block // ceil(num_blocks / num_samples)``."""
    return index_block // -(-num_blocks // num_samples)


def controlnet_residuals(
    samples: Sequence[torch.Tensor] | None, num_blocks: int, *, repeat: bool = False
) -> AddOn | None:
    """Add ``samples[interval index]`` after every block (``repeat``: ``samples[i % n]``, XLabs); None if no samples."""
    if samples is None:
        return None
    n = len(samples)

    def add(index: int, h: torch.Tensor) -> torch.Tensor:
        return h + samples[index % n if repeat else controlnet_index(index, num_blocks, n)]

    return add


def add_at(residuals: dict[int, torch.Tensor] | None, scale: float | torch.Tensor | None = None) -> AddOn | None:
    """Add ``residuals[i]`` (times ``scale`` when given) after block ``i`` where present (ControlNet maps, VACE
    hints); None if there are none."""
    if not residuals:
        return None

    def add(index: int, h: torch.Tensor) -> torch.Tensor:
        r = residuals.get(index)
        if r is None:
            return h
        return h + r if scale is None else h + r * scale

    return add


def controlnet_after_first(samples: Sequence[torch.Tensor] | None) -> AddOn | None:
    """SANA's ControlNet add-on: ``samples[i - 1]`` after block ``i`` for ``0 < i <= len(samples)`` (nothing after
    block 0 nor past the samples); None if no samples."""
    if samples is None:
        return None

    def add(index: int, h: torch.Tensor) -> torch.Tensor:
        return h + samples[index - 1] if 0 < index <= len(samples) else h

    return add


def chain(*adds: AddOn | None) -> AddOn | None:
    """Apply several add-ons in order (None entries are dropped)."""
    live = [a for a in adds if a is not None]
    if not live:
        return None
    if len(live) == 1:
        return live[0]

    def add(index: int, h: torch.Tensor) -> torch.Tensor:
        for a in live:
            h = a(index, h)
        return h

    return add


# ------------------------------------------------------------------------------------------- modulated inputs
def adaln_input(norm: nn.Module, h: torch.Tensor, temb: torch.Tensor) -> Callable[[], torch.Tensor]:
    """The AdaLN-Zero modulated input ``norm(h, emb=temb)[0]`` (TeaCache4FLUX / HunyuanVideo / ...), computed lazily."""

    def modulated() -> torch.Tensor:
        return norm(h, emb=temb)[0]  # type: ignore[no-any-return]

    return modulated


def scale_shift_input(
    norm: nn.Module, table: torch.Tensor, h: torch.Tensor, temb: torch.Tensor
) -> Callable[[], torch.Tensor]:
    """``norm(h) * (1 + scale_msa) + shift_msa`` with ``shift, scale`` the first two rows of ``table + temb``.

    The PixArt-style modulation (``scale_shift_table`` plus a 6-way timestep embedding of shape ``(B, 6 * D)``
    or ``(B, T, 6 * D)``), TeaCache4LTX's indicator; computed lazily.
    """

    def modulated() -> torch.Tensor:
        b = temb.shape[0]
        if temb.ndim == 3:  # per-token embedding (B, T, 6D)
            ada = table[None, None] + temb.reshape(b, temb.shape[1], table.shape[0], -1)
            shift, scale = ada[:, :, 0], ada[:, :, 1]
        else:
            ada = table[None] + temb.reshape(b, table.shape[0], -1)
            shift, scale = ada[:, 0:1], ada[:, 1:2]
        return norm(h) * (1 + scale) + shift  # type: ignore[no-any-return]

    return modulated


# ---------------------------------------------------------------------------------------------------- masks
def additive_mask(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """A 2-D ``(batch, seq)`` keep-mask (1 keep, 0 drop) as the additive bias ``(1 - mask) * -10000.0`` of shape
    ``(batch, 1, seq)`` in ``dtype``, as diffusers converts it; None or a mask of another rank is returned as is."""
    if mask is None or mask.ndim != 2:
        return mask
    return ((1 - mask.to(dtype)) * -10000.0).unsqueeze(1)


# ------------------------------------------------------------------------------------------------ family bases
def sana_conditions(
    model: Any,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    timestep: torch.Tensor,
    guidance: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The SANA family's conditioning: ``(temb, embedded_timestep, encoder_hidden_states)``.

    The timestep embedding (with ``guidance`` when given, else by batch size) in the dtype of the patched
    ``hidden_states`` ``(batch, tokens, dim)``, then the caption projection and its norm.
    """
    batch_size, dtype = hidden_states.shape[0], hidden_states.dtype
    if guidance is not None:
        temb, embedded_timestep = model.time_embed(timestep, guidance=guidance, hidden_dtype=dtype)
    else:
        temb, embedded_timestep = model.time_embed(timestep, batch_size=batch_size, hidden_dtype=dtype)
    encoder_hidden_states = model.caption_projection(encoder_hidden_states)
    encoder_hidden_states = model.caption_norm(encoder_hidden_states.view(batch_size, -1, hidden_states.shape[-1]))
    return temb, embedded_timestep, encoder_hidden_states


def wan_output(model: Any, temb: torch.Tensor, h: torch.Tensor, grid: tuple[int, ...], return_dict: bool) -> Any:
    """The Wan family's output: ``norm_out`` modulated by ``scale_shift_table + temb`` (per token when ``temb`` is
    3-D), ``proj_out``, unpatchify. ``grid`` is ``(batch, frames, height, width, p_t, p_h, p_w)`` after patching."""
    if temb.ndim == 3:  # (batch, seq_len, inner_dim): Wan 2.2 TI2V per-token timesteps
        shift, scale = (model.scale_shift_table.unsqueeze(0).to(temb.device) + temb.unsqueeze(2)).chunk(2, dim=2)
        shift, scale = shift.squeeze(2), scale.squeeze(2)
    else:
        shift, scale = (model.scale_shift_table.to(temb.device) + temb.unsqueeze(1)).chunk(2, dim=1)
    # diffusers moves them to the hidden states' device (multi-GPU placement with accelerate)
    shift, scale = shift.to(h.device), scale.to(h.device)
    h = (model.norm_out(h.float()) * (1 + scale) + shift).type_as(h)
    return model_output(wan_unpatchify(model.proj_out(h), grid), return_dict)


def wan_unpatchify(h: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
    """The Wan family's unpatchify: ``(batch, tokens, p_t * p_h * p_w * channels)`` back to the latent
    ``(batch, channels, frames * p_t, height * p_h, width * p_w)``; ``grid`` as :func:`wan_grid` gives it."""
    batch, frames, height, width, p_t, p_h, p_w = grid
    h = h.reshape(batch, frames, height, width, p_t, p_h, p_w, -1)
    h = h.permute(0, 7, 1, 4, 2, 5, 3, 6)
    return h.flatten(6, 7).flatten(4, 5).flatten(2, 3)


def wan_preprocess(
    model: Any,
    hidden_states: torch.Tensor,
    timestep: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    encoder_hidden_states_image: torch.Tensor | None,
    *,
    contiguous: bool,
) -> tuple[Any, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The Wan family's preprocessing: ``(rotary_emb, hidden_states, temb, timestep_proj, encoder_hidden_states)``.

    RoPE, patch embedding (made contiguous when the model does so), the condition embedder (a 2-D ``(batch, seq)``
    timestep is Wan 2.2 TI2V's per-token timestep) and the I2V image tokens prepended to the text tokens.
    """
    rotary_emb = model.rope(hidden_states)
    hidden_states = model.patch_embedding(hidden_states).flatten(2).transpose(1, 2)
    if contiguous:
        hidden_states = hidden_states.contiguous()
    ts_seq_len: int | None = None
    if timestep.ndim == 2:
        ts_seq_len = timestep.shape[1]
        timestep = timestep.flatten()
    temb, timestep_proj, encoder_hidden_states, encoder_hidden_states_image = model.condition_embedder(
        timestep, encoder_hidden_states, encoder_hidden_states_image, timestep_seq_len=ts_seq_len
    )
    # (batch, seq_len, 6, inner_dim) for per-token timesteps, else (batch, 6, inner_dim)
    timestep_proj = timestep_proj.unflatten(2 if ts_seq_len is not None else 1, (6, -1))
    if encoder_hidden_states_image is not None:
        encoder_hidden_states = torch.concat([encoder_hidden_states_image, encoder_hidden_states], dim=1)
    return rotary_emb, hidden_states, temb, timestep_proj, encoder_hidden_states


def wan_grid(model: Any, hidden_states: torch.Tensor) -> tuple[int, ...]:
    """``(batch, frames, height, width, p_t, p_h, p_w)`` of a Wan-family latent after patching."""
    batch, _, frames, height, width = hidden_states.shape
    p_t, p_h, p_w = model.config.patch_size
    return batch, frames // p_t, height // p_h, width // p_w, p_t, p_h, p_w


def hunyuan_grid(model: Any, hidden_states: torch.Tensor) -> tuple[int, ...]:
    """``(batch, frames, height, width, p_t, p, p)`` of a HunyuanVideo-family latent after patching
    (``patch_size_t`` over time, ``patch_size`` over height and width)."""
    batch, _, frames, height, width = hidden_states.shape
    p, p_t = model.config.patch_size, model.config.patch_size_t
    return batch, frames // p_t, height // p, width // p, p_t, p, p


def hunyuan_output(model: Any, temb: torch.Tensor, h: torch.Tensor, grid: tuple[int, ...], return_dict: bool) -> Any:
    """The HunyuanVideo family's output: ``norm_out(h, temb)``, ``proj_out``, unpatchify (channels before the patch
    dims, unlike Wan). ``grid`` is ``(batch, frames, height, width, p_t, p_h, p_w)`` (:func:`hunyuan_grid`)."""
    h = model.proj_out(model.norm_out(h, temb))
    batch, frames, height, width, p_t, p_h, p_w = grid
    h = h.reshape(batch, frames, height, width, -1, p_t, p_h, p_w)
    h = h.permute(0, 4, 1, 5, 2, 6, 3, 7)
    return model_output(h.flatten(6, 7).flatten(4, 5).flatten(2, 3), return_dict)


# --------------------------------------------------------------------------------------------------- scope/out
@contextlib.contextmanager
def lora_scope(module: nn.Module, kwargs: dict[str, Any], kwargs_name: str | None) -> Iterator[dict[str, Any]]:
    """What diffusers' ``apply_lora_scale`` decorator does around a forward, for the whole cached forward.

    Copies the attention-kwargs dict, pops its ``scale`` and scales the PEFT LoRA layers for the duration (always
    unscaled on exit, also after an exception). Yields the kwargs to use. ``kwargs_name=None``: the model has no
    LoRA scale (nothing is done).
    """
    if kwargs_name is None:
        yield kwargs
        return
    from diffusers.utils import USE_PEFT_BACKEND, scale_lora_layers, unscale_lora_layers

    lora_scale = 1.0
    attention_kwargs = kwargs.get(kwargs_name)
    if attention_kwargs is not None:
        attention_kwargs = dict(attention_kwargs)
        kwargs = {**kwargs, kwargs_name: attention_kwargs}
        lora_scale = attention_kwargs.pop("scale", 1.0)
    if USE_PEFT_BACKEND:
        scale_lora_layers(module, lora_scale)
    try:
        yield kwargs
    finally:
        if USE_PEFT_BACKEND:
            unscale_lora_layers(module, lora_scale)


def model_output(output: Any, return_dict: bool, output_class: type | str = "Transformer2DModelOutput") -> Any:
    """Wrap a sample the way diffusers transformers do: ``(output,)`` or ``output_class(sample=output)`` (a class,
    or the name of one in ``diffusers.models.modeling_outputs``)."""
    if not return_dict:
        return (output,)
    if isinstance(output_class, str):
        from diffusers.models import modeling_outputs

        output_class = getattr(modeling_outputs, output_class)
    return output_class(sample=output)  # type: ignore[operator]


# -------------------------------------------------------------------------------------------------- extractor
class DiffusersExtractor(Extractor):
    """The extractor of one diffusers transformer class, built by :func:`diffusers_extractor`.

    ``block_lists`` are the ``nn.ModuleList`` attributes holding the cached blocks in execution order (lists that
    run before them, such as text refiners, are preprocessing and not named); ``attention_kwargs`` the keyword
    carrying attention kwargs and the LoRA scale (None: no LoRA scale); ``refuse(module)`` returns why a
    configuration cannot be cached, or None.
    """

    def __init__(
        self,
        model_class: str,
        extract_fn: ExtractFn,
        *,
        block_lists: tuple[str, ...],
        attention_kwargs: str | None = "attention_kwargs",
        refuse: Callable[[nn.Module], str | None] | None = None,
        name: str | None = None,
    ) -> None:
        self.model_class = model_class
        self.extract_fn = extract_fn
        self.block_lists = block_lists
        self.attention_kwargs = attention_kwargs
        self.refuse = refuse
        self.name = name or model_class

    def extract(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> CacheContext:
        return self.extract_fn(module, *args, **kwargs)

    def block_modules(self, module: nn.Module) -> Sequence[nn.Module]:
        return tuple(block for attr in self.block_lists for block in getattr(module, attr))

    def scope(self, module: nn.Module, kwargs: dict[str, Any]) -> Any:
        return lora_scope(module, kwargs, self.attention_kwargs)

    def check(self, module: nn.Module) -> None:
        if len(self.block_modules(module)) == 0:
            raise ValueError(f"model: this {type(module).__name__} has no transformer blocks ({self.block_lists})")
        if self.refuse is not None:
            reason = self.refuse(module)
            if reason is not None:
                raise ValueError(f"model: {type(module).__name__}: {reason}")


def diffusers_extractor(
    model_class: str,
    *,
    blocks: tuple[str, ...],
    attention_kwargs: str | None = "attention_kwargs",
    teacache: PresetRule | None,
    magcache: PresetRule | None,
    refuse: Callable[[nn.Module], str | None] | None = None,
    name: str | None = None,
) -> Callable[[ExtractFn], ExtractFn]:
    """Register the decorated ``extract(model, *args, **kwargs) -> CacheContext`` for ``diffusers.<model_class>``.

    Also declares the class's TeaCache and MagCache preset-key rules (``none_published(...)`` when none exists).
    Returns the function unchanged, so a family file can reuse it for a clone class.
    """

    def register(fn: ExtractFn) -> ExtractFn:
        import diffusers

        extractor = DiffusersExtractor(
            model_class, fn, block_lists=blocks, attention_kwargs=attention_kwargs, refuse=refuse, name=name
        )
        register_extractor(getattr(diffusers, model_class), extractor, replace=True)
        declare_presets(model_class, teacache=teacache, magcache=magcache)
        return fn

    return register
