"""Helpers shared by the extractors of diffusers models."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

from torch import nn

from ditcache.core.extractor import Extractor, register_extractor


@contextlib.contextmanager
def lora_scope(module: nn.Module, kwargs: dict[str, Any], kwargs_name: str) -> Iterator[dict[str, Any]]:
    """What diffusers' ``apply_lora_scale`` decorator does around a forward, for the whole cached forward.

    Copies the attention-kwargs dict, pops its ``scale`` and scales the PEFT LoRA layers for the duration (always
    unscaled on exit, also after an exception). Yields the kwargs to use.
    """
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


def model_output(output: Any, return_dict: bool) -> Any:
    """Wrap a sample the way diffusers transformers do."""
    if not return_dict:
        return (output,)
    from diffusers.models.modeling_outputs import Transformer2DModelOutput

    return Transformer2DModelOutput(sample=output)


def controlnet_index(index_block: int, num_blocks: int, num_samples: int) -> int:
    """diffusers' ControlNet residual index: ``index_block // ceil(num_blocks / num_samples)``."""
    return index_block // -(-num_blocks // num_samples)


class DiffusersExtractor(Extractor):
    """Common ground of the extractors of diffusers transformer classes.

    A subclass names the model class (:attr:`model_class`, an attribute of the ``diffusers`` package), the
    ``nn.ModuleList`` attributes holding its blocks in execution order (:attr:`block_lists`) and the keyword argument
    that carries attention kwargs and the LoRA scale (:attr:`attention_kwargs`), and implements :meth:`extract`.
    """

    model_class: ClassVar[str]
    block_lists: ClassVar[tuple[str, ...]]
    attention_kwargs: ClassVar[str] = "attention_kwargs"

    def block_modules(self, module: nn.Module) -> Sequence[nn.Module]:
        return tuple(block for attr in self.block_lists for block in getattr(module, attr))

    def scope(self, module: nn.Module, kwargs: dict[str, Any]) -> Any:
        return lora_scope(module, kwargs, self.attention_kwargs)

    def check(self, module: nn.Module) -> None:
        if len(self.block_modules(module)) == 0:
            raise ValueError(f"model: this {type(module).__name__} has no transformer blocks ({self.block_lists})")

    @classmethod
    def register(cls) -> None:
        """Register an instance for the diffusers class :attr:`model_class`."""
        import diffusers

        register_extractor(getattr(diffusers, cls.model_class), cls(), replace=True)
