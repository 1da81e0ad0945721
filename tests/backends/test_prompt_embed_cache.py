"""PromptEmbedCache: LRU and counters, key building, bypasses, install/uninstall and the environment overrides.

The wrapped object is a small pipeline-like class whose ``encode_prompt`` has a diffusers-style signature and
counts its calls: the real pipelines' text encoders need downloaded tokenizers.
"""

from __future__ import annotations

import threading
from collections import namedtuple
from typing import Any

import pytest
import torch

from ditcache.backends.prompt_embed_cache import (
    _CACHE_MISS,
    PromptEmbedCache,
    _detach_output,
    _hashable,
    install_prompt_embed_cache,
    resolve_prompt_embed_cache_config,
    uninstall_prompt_embed_cache,
)

Encoded = namedtuple("Encoded", ["embeds", "mask"])


class Pipe:
    """A pipeline-like object with a diffusers-style ``encode_prompt``."""

    def __init__(self) -> None:
        self.calls = 0

    def encode_prompt(
        self,
        prompt: str | list[str],
        device: torch.device | None = None,
        num_images_per_prompt: int = 1,
        prompt_embeds: torch.Tensor | None = None,
        max_sequence_length: int = 64,
    ) -> Encoded:
        self.calls += 1
        prompts = [prompt] if isinstance(prompt, str) else prompt
        seed = sum(map(ord, "".join(prompts))) + max_sequence_length
        gen = torch.Generator().manual_seed(seed)
        embeds = torch.randn(len(prompts) * num_images_per_prompt, 3, 4, generator=gen, requires_grad=True)
        return Encoded(embeds * 1.0, torch.ones(embeds.shape[:2]))


def test_lru_counters_and_stats() -> None:
    cache = PromptEmbedCache(max_size=2)
    assert cache.get("a") is _CACHE_MISS
    cache.put("a", None)  # None is a legitimate value
    cache.put("b", 2)
    assert cache.get("a") is None  # hit; "a" is now the most recent
    cache.put("c", 3)  # evicts "b", the least recently used
    assert cache.get("b") is _CACHE_MISS
    assert cache.stats() == {"size": 2, "max_size": 2, "hits": 1, "misses": 2, "bypassed": 0}
    cache.clear()
    assert cache.stats()["size"] == 0 and cache.hits == 1
    for bad in (0, -1, True, 2.5):
        with pytest.raises(ValueError, match="max_size"):
            PromptEmbedCache(max_size=bad)  # type: ignore[arg-type]


def test_hashable_and_detach() -> None:
    assert _hashable(("a", [1, 2.0], {"k": None})) == _hashable(("a", [1, 2.0], {"k": None}))
    assert _hashable(torch.device("cpu")) == ("__torch_device__", "cpu")
    assert _hashable(torch.ones(1)) is _hashable(object())  # both unhashable: the sentinel
    out = _detach_output(Encoded(torch.ones(2, requires_grad=True) * 2, [torch.ones(1, requires_grad=True)]))
    assert isinstance(out, Encoded) and not out.embeds.requires_grad and not out.mask[0].requires_grad


def test_install_hits_for_equivalent_calls_and_uninstalls_exactly() -> None:
    pipe = Pipe()
    cache = install_prompt_embed_cache(pipe, max_size=4)
    assert cache is not None and install_prompt_embed_cache(pipe) is cache  # idempotent
    first = pipe.encode_prompt("a cat")
    # positional, keyword and explicit-default spellings of the same call all hit
    for again in (
        pipe.encode_prompt("a cat"),
        pipe.encode_prompt(prompt="a cat"),
        pipe.encode_prompt("a cat", None, 1),
        pipe.encode_prompt("a cat", max_sequence_length=64),
    ):
        assert torch.equal(again.embeds, first.embeds) and not again.embeds.requires_grad
    assert pipe.calls == 1 and cache.hits == 4 and cache.misses == 1
    other = pipe.encode_prompt("a dog", num_images_per_prompt=2)
    assert pipe.calls == 2 and other.embeds.shape[0] == 2
    # precomputed embeddings and tensor arguments bypass the cache
    pipe.encode_prompt("a cat", prompt_embeds=torch.ones(1, 3, 4))
    pipe.encode_prompt("a cat", device=torch.device("cpu"), max_sequence_length=64)  # hashable device: a new key
    assert cache.bypassed == 1 and pipe.calls == 4
    cache.enabled = False
    pipe.encode_prompt("a cat")
    assert pipe.calls == 5 and cache.stats()["hits"] == 4
    uninstall_prompt_embed_cache(pipe)
    assert "encode_prompt" not in pipe.__dict__ and not hasattr(pipe, "_prompt_embed_cache")
    assert pipe.encode_prompt.__func__ is Pipe.encode_prompt  # type: ignore[attr-defined]
    uninstall_prompt_embed_cache(pipe)  # no-op
    assert install_prompt_embed_cache(object()) is None


def test_threads_share_one_cache() -> None:
    pipe = Pipe()
    cache = install_prompt_embed_cache(pipe, max_size=8)
    assert cache is not None
    expected = {p: Pipe().encode_prompt(p).embeds for p in ("a", "b", "c")}
    errors: list[str] = []

    def worker(i: int) -> None:
        for j in range(30):
            p = "abc"[(i + j) % 3]
            if not torch.equal(pipe.encode_prompt(p).embeds, expected[p]):
                errors.append(p)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert cache.hits + cache.misses == 120 and cache.misses >= 3 and len(cache) == 3


@pytest.mark.parametrize(
    ("env", "args", "expected"),
    [
        ({}, (None, None), (False, 32)),
        ({}, (True, 8), (True, 8)),
        ({"OMNI_DIFFUSION_PROMPT_EMBED_CACHE": " YES "}, (False, None), (True, 32)),
        ({"OMNI_DIFFUSION_PROMPT_EMBED_CACHE": "off"}, (True, 4), (False, 4)),
        ({"OMNI_DIFFUSION_PROMPT_EMBED_CACHE": "maybe"}, (True, 4), (True, 4)),
        ({"OMNI_DIFFUSION_PROMPT_EMBED_CACHE_SIZE": "16"}, (True, 4), (True, 16)),
        ({"OMNI_DIFFUSION_PROMPT_EMBED_CACHE_SIZE": "0"}, (True, 4), (True, 4)),
        ({"OMNI_DIFFUSION_PROMPT_EMBED_CACHE_SIZE": "many"}, (True, None), (True, 32)),
    ],
)
def test_environment_overrides(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], args: tuple[Any, Any], expected: tuple[bool, int]
) -> None:
    monkeypatch.delenv("OMNI_DIFFUSION_PROMPT_EMBED_CACHE", raising=False)
    monkeypatch.delenv("OMNI_DIFFUSION_PROMPT_EMBED_CACHE_SIZE", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert resolve_prompt_embed_cache_config(*args) == expected
