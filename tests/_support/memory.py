"""How many tensor bytes an object graph keeps alive (``from _support.memory import held_tensor_bytes``).

Walks everything reachable from the given roots with ``gc.get_referents``, not entering ``nn.Module`` instances
(the model's own weights are not cache state), classes, Python modules or a function's globals (only its closure and
defaults), and sums the bytes of the distinct tensor storages it meets.
"""

from __future__ import annotations

import gc
import types
from typing import Any

import torch
from torch import nn

__all__ = ["held_tensor_bytes"]


def held_tensor_bytes(*roots: Any) -> int:
    """Bytes of the distinct tensor storages reachable from ``roots`` (modules, classes and modules excluded)."""
    seen: set[int] = set()
    storages: dict[tuple[str, int], int] = {}
    stack = list(roots)
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, nn.Module | type | types.ModuleType):
            continue
        seen.add(id(obj))
        if isinstance(obj, torch.Tensor):
            storage = obj.untyped_storage()
            storages[(str(obj.device), storage.data_ptr())] = storage.nbytes()
            continue
        if isinstance(obj, types.FunctionType):
            stack.extend(c.cell_contents for c in obj.__closure__ or () if c.cell_contents is not None)
            stack.extend([obj.__defaults__, obj.__kwdefaults__])
            continue
        stack.extend(gc.get_referents(obj))
    return sum(storages.values())
