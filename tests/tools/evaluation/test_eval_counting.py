"""``ditcache.tools.evaluation.counting``: block bodies are counted (not the TeaCache indicator), decisions are
classified per step."""

from __future__ import annotations

import copy

import torch

import ditcache
from ditcache import TeaCacheConfig
from ditcache.bundled import DigitsDiT, sample
from ditcache.tools.evaluation import (
    BlockCounter,
    BranchDecisions,
)

NUM_BLOCKS = 6  # the bundled model: 2 double-stream + 4 single-stream blocks


def test_block_counter_counts_block_bodies_not_the_teacache_indicator(model: DigitsDiT) -> None:
    labels = [0]
    with BlockCounter(model.transformer) as plain:
        sample(model, labels, 3, None, 0)
    assert plain.calls == [[NUM_BLOCKS, NUM_BLOCKS]] * 3

    # TeaCache computes its indicator with block 0's norm1 on every step, skipped or not: not a block execution.
    work = copy.deepcopy(model)
    ditcache.apply_teacache_hook(work.transformer, TeaCacheConfig(rel_l1_thresh=1e9, model="flux.1-dev"))
    with BlockCounter(work.transformer) as cached:
        sample(work, labels, 4, None, 0)
    assert [c[0] for c in cached.calls] == [NUM_BLOCKS, 0, 0, NUM_BLOCKS]  # first and (forced) last step computed
    assert cached.calls[1][1] == 0
    # the hooks are gone afterwards
    with torch.inference_mode():
        sample(work, labels, 2, None, 0)
    assert len(cached.calls) == 4


def test_branch_decisions_classify_steps() -> None:
    d = BranchDecisions("cond", (6, 0, 1, 6, 0), (6, 0, 0, 6, 0), 6)
    assert d.computed_steps == [0, 3]
    assert d.skipped_steps == [1, 4]
    assert d.partial_steps == [2]
    assert d.pattern == "C-1C-"
    assert d.as_dict()["computed_steps"] == 2


def test_block_counter_counts_qwen_image_blocks() -> None:
    # the blocks come from the model's extractor, so a Qwen-Image transformer (4 dual-stream blocks) is counted too
    from ditcache.bundled.patches import load_patches_dit, sample_patches

    patches = load_patches_dit()
    with BlockCounter(patches.transformer) as plain:
        sample_patches(patches, [0, 1], 3, 2.0, 0)
    assert plain.num_blocks == 4
    assert plain.calls == [[4, 4]] * 6  # cond + uncond per step

    ditcache.apply_teacache_hook(patches.transformer, TeaCacheConfig(rel_l1_thresh=1e9))
    with BlockCounter(patches.transformer) as cached:
        sample_patches(patches, [0], 4, None, 0)
    assert [c[0] for c in cached.calls] == [4, 0, 0, 4]  # first and (forced) last step computed
