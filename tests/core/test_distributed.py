"""The distributed seam (ditcache.core.distributed): every rank decides from the full-sequence value.

Proves: the local reducer is the identity and its ``rel_l1`` is ``core.metrics.rel_l1`` bit for bit; the runtime
puts the module's reducer on every context; and, in two real gloo processes on loopback, a
``ProcessGroupReducer`` gives both ranks the sum of opposite local values and the same full-sequence ``rel_l1``
although their local slices disagree.
"""

from __future__ import annotations

import json
import math
import socket
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import ditcache
from _support.flux import denoise, make_flux, make_inputs
from _support.ranks import rank_main
from ditcache.core import metrics
from ditcache.core.branch import is_auto_branch
from ditcache.core.cache import CacheMiddleware
from ditcache.core.distributed import LOCAL, LocalReducer, ProcessGroupReducer, Reducer
from ditcache.core.metrics import rel_l1, residual_metrics
from ditcache.core.parallel import AgreedBranches, ContextParallel


def test_local_reducer_is_the_identity_and_rel_l1_matches_metrics() -> None:
    x = torch.randn(3, 7)
    assert LOCAL.sum(x) is x and LOCAL.is_local and isinstance(LOCAL, Reducer)
    prev, cur = torch.randn(2, 16, 8), torch.randn(2, 16, 8)
    published = (cur - prev).abs().mean().item() / prev.abs().mean().item()  # the means, divided in float64
    assert rel_l1(cur, prev) == published
    assert rel_l1(cur, prev, LocalReducer()) == published


class Spy(CacheMiddleware[None]):
    name = "spy"

    def __init__(self) -> None:
        super().__init__(None)
        self.reducers: list[Any] = []

    def new_state(self) -> None:
        return None

    def process(self, ctx: Any, call_next: Any) -> Any:
        self.reducers.append(ctx.reducer)
        return call_next(ctx)


class Doubling:
    """A fake two-rank group where the other rank holds the same values."""

    is_local = False

    def sum(self, partial: torch.Tensor) -> torch.Tensor:
        return partial * 2


def test_the_runtime_stamps_the_modules_reducer_on_every_context() -> None:
    model = make_flux()
    spy = ditcache.apply_cache(model, Spy())
    denoise(model, 2, inputs=make_inputs(model))
    assert spy.reducers == [LOCAL, LOCAL]
    reducer = Doubling()
    ditcache.core.set_reducer(model, reducer)
    denoise(model, 2, inputs=make_inputs(model))
    assert spy.reducers[2:] == [reducer, reducer]
    with pytest.raises(TypeError, match="reducer: expected a Reducer"):
        ditcache.core.set_reducer(model, object())  # type: ignore[arg-type]
    ditcache.remove_cache(model)
    with pytest.raises(ValueError, match="no cache is applied"):
        ditcache.core.set_reducer(model, LOCAL)
    # The same sums on both "ranks": the ratio of the doubled sums is the ratio of the sums.
    prev, cur = torch.randn(4, 5), torch.randn(4, 5)
    assert math.isclose(rel_l1(cur, prev, reducer), metrics.rel_l1(cur, prev), rel_tol=1e-6)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="torch built without gloo")
def test_process_group_reducer_gives_every_rank_the_sum(tmp_path: Path) -> None:
    mp.spawn(rank_main, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world_size"] == r1["world_size"] == 2
    assert r0["local"] != r1["local"]
    expected = [a + b for a, b in zip(r0["local"], r1["local"], strict=True)]
    assert r0["total"] == r1["total"] == pytest.approx(expected) == [0.0, 4.0, 1.0]
    assert r0["local_rel_l1"] > 0 and r1["local_rel_l1"] == 0.0  # the ranks would decide differently alone
    assert r0["reduced_rel_l1"] == r1["reduced_rel_l1"]  # together they decide alike ...
    assert r0["reduced_rel_l1"] == pytest.approx(r0["full_rel_l1"], rel=1e-6)  # ... from the full sequence
    with pytest.raises(RuntimeError, match=r"torch\.distributed is not initialised"):
        ProcessGroupReducer().sum(torch.ones(2))


class OtherRank:
    """A fake two-rank group: the other rank sends ``other`` (the same shape as the local partial sums)."""

    is_local = False

    def __init__(self, other: list[float]) -> None:
        self.other = other

    def sum(self, partial: torch.Tensor) -> torch.Tensor:
        return partial + torch.tensor(self.other, dtype=partial.dtype)


def test_reduced_residual_metrics_match_the_full_sequence() -> None:
    torch.manual_seed(0)
    prev, cur = torch.randn(2, 16, 8), torch.randn(2, 16, 8)
    full = residual_metrics(cur, prev)
    half = residual_metrics(cur[:, :8], prev[:, :8])
    assert half != pytest.approx(full)  # one shard alone gives other numbers
    # the other rank's four sums (ratio, ratio^2, cosine distance, count) over the other half of the tokens
    c, p = cur[:, 8:].float(), prev[:, 8:].float()
    r = (torch.linalg.vector_norm(c, dim=-1) / torch.linalg.vector_norm(p, dim=-1)).double()
    cos = (1.0 - torch.nn.functional.cosine_similarity(c, p, dim=-1, eps=1e-8)).double()
    other = [float(r.sum()), float((r * r).sum()), float(cos.sum()), float(r.numel())]
    assert residual_metrics(cur[:, :8], prev[:, :8], OtherRank(other)) == pytest.approx(full, rel=1e-5)


def test_agreed_branches_name_opposite_local_identities_alike() -> None:
    device = torch.device("cpu")
    assert AgreedBranches().agree("auto:x", LOCAL, device) == "auto:x"
    assert AgreedBranches().agree("default", OtherRank([0.0, 0.0]), device) == "default"
    # rank A sees its identity for the first time (number 0); rank B saw another one before (number 1)
    a = AgreedBranches().agree("auto:cpu:aa:1x6", OtherRank([1.0, 1.0]), device)
    b_branches = AgreedBranches()
    b_branches.agree("auto:cpu:bb:1x6", OtherRank([0.0, 0.0]), device)
    b = b_branches.agree("auto:cpu:cc:1x6", OtherRank([0.0, 0.0]), device)
    assert a == b == "auto:agreed:1:1"
    assert is_auto_branch(a)  # an automatic branch: its role still comes from its order in the run


def test_set_reducer_none_restores_detection() -> None:
    model = make_flux()
    spy = ditcache.apply_cache(model, Spy())
    ditcache.core.set_reducer(model, Doubling())
    ditcache.core.set_reducer(model, None)
    denoise(model, 1, inputs=make_inputs(model))
    assert spy.reducers == [LOCAL]  # no context parallelism on this model: the local reducer
    ditcache.remove_cache(model)


class _FakeSplitHook:
    """Stands for diffusers' ContextParallelSplitHook: ditcache reads only its ``metadata``."""

    def __init__(self, metadata: dict[str, Any]) -> None:
        self.metadata = metadata


class _FakeRegistry:
    def __init__(self, **hooks: Any) -> None:
        self.hooks = hooks


def test_a_stream_split_after_the_first_block_is_rejected() -> None:
    blocks = [torch.nn.Linear(2, 2) for _ in range(3)]
    top = torch.nn.Module()
    blocks[1]._diffusers_hook = _FakeRegistry(**{"cp_input---blocks.1": _FakeSplitHook({"hidden_states": 1})})
    with pytest.raises(ValueError, match=r"splits \['hidden_states'\] at block 1; .* first block only"):
        ContextParallel(top, blocks)
    blocks[1]._diffusers_hook = _FakeRegistry(**{"cp_input---blocks.*": _FakeSplitHook({"modulate_index": 1})})
    blocks[0]._diffusers_hook = _FakeRegistry(
        **{"cp_input---blocks.0": _FakeSplitHook({"hidden_states": 1, "encoder_hidden_states": 1, "mask": 2})}
    )
    cp = ContextParallel(top, blocks)
    assert sorted(cp.stream_plan) == ["encoder_hidden_states", "hidden_states"]
    hook = cp.stream_hook
    with cp.bypass():  # while the stack runs, the first block's hook splits only the other inputs
        assert hook.metadata == {"mask": 2}
    assert hook.metadata == {"hidden_states": 1, "encoder_hidden_states": 1, "mask": 2}


def test_unnamed_cfg_branches_keep_their_generations_under_a_group_reducer() -> None:
    """Agreed branch names (``auto:agreed:...``) are not dead branches: with a group reducer, unnamed cond and
    uncond calls step through one generation each, with their own roles (each call used to restart both)."""
    seen: list[tuple[int, str, int]] = []

    class Stamps(Spy):
        def process(self, ctx: Any, call_next: Any) -> Any:
            seen.append((ctx.step, ctx.role, ctx.generation))
            return call_next(ctx)

    model = make_flux()
    ditcache.apply_cache(model, Stamps())
    ditcache.core.set_reducer(model, Doubling())
    denoise(model, 4, cfg=3.0, inputs=make_inputs(model), branch_mode="auto")
    assert [s for s, _, _ in seen] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert [r for _, r, _ in seen] == ["cond", "uncond"] * 4
    assert len({g for _, _, g in seen}) == 2  # one generation per branch, not one per call
