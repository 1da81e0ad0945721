"""Caching a DiT that is not from diffusers: write an extractor, register it, apply TeaCache.

``TinyDiT`` below stands for any DiT you have: a token embedding, a conditioning vector from the timestep
and a class label, a stack of adaLN-modulated blocks, and a modulated output head. ditcache needs one thing
to cache it: an *extractor* that runs the model's preprocessing and describes the rest of its forward (the
blocks and the head) as a ``ditcache.CacheContext``. The docs page "Writing a model extractor" walks through
this file.

Run: ``python examples/custom_dit_extractor.py``
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

import ditcache
from ditcache.core.context import BlockOutput  # (hidden_states, encoder_hidden_states)

# --8<-- [start:model]
NUM_CLASSES = 10  # class labels 0-9; label 10 is "no class", the unconditional branch of CFG


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of timesteps ``t`` (shape ``(batch,)``) into ``dim`` features."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN modulation: ``x * (1 + scale) + shift`` with per-sample shift and scale."""
    return x * (1 + scale[:, None]) + shift[:, None]


class DiTBlock(nn.Module):
    """A DiT block: self-attention and MLP, each with adaLN-Zero modulation from the conditioning vector."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = 4 * dim
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        self.adaln = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaln(c).chunk(6, dim=-1)
        h = modulate(self.norm1(x), shift1, scale1)
        x = x + gate1[:, None] * self.attn(h, h, h, need_weights=False)[0]
        h = modulate(self.norm2(x), shift2, scale2)
        return x + gate2[:, None] * self.mlp(h)


class TinyDiT(nn.Module):
    """A class-conditional DiT on token sequences: ``model(x, t, y)`` predicts a velocity like ``x``."""

    def __init__(self, channels: int = 8, dim: int = 32, depth: int = 4, heads: int = 4) -> None:
        super().__init__()
        self.dim = dim
        self.x_embed = nn.Linear(channels, dim)
        self.t_embed = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.y_embed = nn.Embedding(NUM_CLASSES + 1, dim)  # + the "no class" label
        self.blocks = nn.ModuleList(DiTBlock(dim, heads) for _ in range(depth))
        self.norm_out = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.adaln_out = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.proj_out = nn.Linear(dim, channels)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.x_embed(x)
        c = self.t_embed(timestep_embedding(t * 1000, self.dim)) + self.y_embed(y)
        for block in self.blocks:
            h = block(h, c)
        shift, scale = self.adaln_out(c).chunk(2, dim=-1)
        return self.proj_out(modulate(self.norm_out(h), shift, scale))


# --8<-- [end:model]


# --8<-- [start:extractor]
class TinyDiTExtractor(ditcache.Extractor):
    """Splits ``TinyDiT.forward`` into preprocessing, a block stack and a postprocess."""

    name = "tiny-dit"

    def block_modules(self, module: nn.Module) -> Sequence[nn.Module]:
        return list(module.blocks)

    def extract(
        self,
        module: nn.Module,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> ditcache.CacheContext:
        assert isinstance(module, TinyDiT)
        return extract_tiny_dit(module, *args, **kwargs)


def extract_tiny_dit(
    model: TinyDiT,
    x: torch.Tensor,
    t: torch.Tensor,
    y: torch.Tensor,
) -> ditcache.CacheContext:
    """The same computations as ``TinyDiT.forward``, in the same order, cut at the blocks."""
    # 1. Preprocessing, exactly as the model's forward does it.
    h = model.x_embed(x)
    c = model.t_embed(timestep_embedding(t * 1000, model.dim)) + model.y_embed(y)

    # 2. The blocks, behind the uniform calling convention run_block(index, h, e) -> (h, e).
    #    This model has a single token stream, so `e` (the second stream) is None and passed through.
    blocks = model.blocks

    def run_block(index: int, h: torch.Tensor, e: torch.Tensor | None) -> BlockOutput:
        return blocks[index](h, c), e

    # 3. The postprocess: what the forward does after the last block.
    def postprocess(h: torch.Tensor, e: torch.Tensor | None) -> torch.Tensor:
        shift, scale = model.adaln_out(c).chunk(2, dim=-1)
        return model.proj_out(modulate(model.norm_out(h), shift, scale))

    # TeaCache's indicator: the timestep-modulated input of the first block (its norm1 output, modulated).
    first = blocks[0]
    shift1, scale1 = first.adaln(c).chunk(6, dim=-1)[:2]
    modulated_input = modulate(first.norm1(h), shift1, scale1)

    return ditcache.CacheContext(
        modulated_input=modulated_input,
        hidden_states=h,
        encoder_hidden_states=None,
        temb=c,
        blocks=ditcache.BlockStack(run_block, list(blocks)),
        postprocess=postprocess,
        timestep=t,  # lets the runtime notice a new generation (the timestep jumps back up)
        condition=y,  # the default CFG-branch identity: cond and uncond calls pass different label tensors
    )


# --8<-- [end:extractor]


def denoise(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> torch.Tensor:
    """Flow-matching Euler loop on a linear sigma schedule 1 -> 0."""
    sigmas = torch.linspace(1.0, 0.0, steps + 1)
    with torch.no_grad():
        for i in range(steps):
            x = x + (sigmas[i + 1] - sigmas[i]) * model(x, sigmas[i].expand(x.shape[0]), y)
    return x


def main() -> None:
    torch.manual_seed(0)
    model = TinyDiT().eval()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 16, 8, generator=gen)  # 2 samples of 16 tokens with 8 channels
    y = torch.tensor([3, 7])
    steps = 20

    # --8<-- [start:exactness]
    # The exactness requirement: with nothing skipped, the extractor's pieces reproduce forward() bit for bit.
    t = torch.full((2,), 0.5)
    with torch.no_grad():
        ctx = extract_tiny_dit(model, x, t, y)
        ctx.validate()  # types, batch sizes and devices of the fields
        assert torch.equal(ctx.postprocess(*ctx.run_blocks()), model(x, t, y))
    # --8<-- [end:exactness]

    # --8<-- [start:apply]
    ditcache.register_extractor(TinyDiT, TinyDiTExtractor())

    # No published coefficients exist for this model: pass your own. (0, 0, 0, 1, 0) is the polynomial
    # p(x) = x, i.e. TeaCache on the raw relative-L1 distance of the modulated input; fit a better one with
    # numpy.polyfit on (input distance, output distance) pairs of uncached runs.
    coefficients = (0.0, 0.0, 0.0, 1.0, 0.0)
    reference = denoise(model, x, y, steps)

    # A threshold no step can stay under: every step computes, and the result is exactly the uncached one.
    never = ditcache.apply_teacache_hook(model, {"rel_l1_thresh": 1e-9, "coefficients": coefficients})
    exact = denoise(model, x, y, steps)
    assert never.stats()[-1].skipped_steps == [], "nothing may be skipped at rel_l1_thresh=1e-9"
    assert torch.equal(exact, reference), "a never-skipping cache must reproduce the uncached output exactly"
    ditcache.remove_cache(model)

    # A useful threshold skips steps, at a small error.
    cache = ditcache.apply_teacache_hook(model, {"rel_l1_thresh": 0.3, "coefficients": coefficients})
    ditcache.refresh(model, steps)
    cached = denoise(model, x, y, steps)
    # --8<-- [end:apply]
    stats = cache.stats()[-1]
    rel = ((cached - reference).abs().mean() / reference.abs().mean()).item()
    print(f"registered extractors include TinyDiT: {'TinyDiT' in ditcache.core.registered_extractors()}")
    skipped = stats.skipped_steps
    print(f"skipped steps at rel_l1_thresh=0.3: {skipped} ({len(skipped)} of {steps})")
    print(f"relative L1 error of the final sample: {rel:.3e}")
    assert stats.skipped_steps, "expected TeaCache to skip some steps at rel_l1_thresh=0.3"
    assert rel < 0.1, f"relative L1 error {rel:.3e} is unexpectedly large"

    ditcache.remove_cache(model)
    ditcache.core.unregister_extractor(TinyDiT)
    print("OK: the extractor is exact and TeaCache skips steps on a custom DiT")


if __name__ == "__main__":
    main()
