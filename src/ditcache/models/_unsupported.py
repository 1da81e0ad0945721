"""Known diffusers transformer classes that ditcache does not cache, each refused with the reason.

Importing this module registers, for every class name in :data:`ditcache.models.UNSUPPORTED`, an extractor whose
:meth:`~UnsupportedModel.check` (run when a cache is applied) raises a ValueError naming the class and saying why,
instead of the generic "no extractor" error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from ditcache.core.context import CacheContext
from ditcache.core.extractor import Extractor, register_extractor
from ditcache.models import UNSUPPORTED

__all__ = ["UnsupportedModel"]


class UnsupportedModel(Extractor):
    """The record of a known class that cannot be cached: every use raises with the reason."""

    supported = False

    def __init__(self, class_name: str, reason: str) -> None:
        self.class_name = class_name
        self.reason = reason
        self.name = f"unsupported:{class_name}"

    def _error(self) -> ValueError:
        return ValueError(f"model: {self.class_name} is not supported by ditcache: {self.reason}")

    def check(self, module: nn.Module) -> None:
        raise self._error()

    def extract(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> CacheContext:
        raise self._error()

    def block_modules(self, module: nn.Module) -> Sequence[nn.Module]:
        raise self._error()


for _name, _reason in UNSUPPORTED.items():
    register_extractor(_name, UnsupportedModel(_name, _reason), replace=True)
