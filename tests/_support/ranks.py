"""The body of one rank of the two-process gloo test (tests/core/test_distributed.py).

Kept apart from the test module so a spawned process imports only torch and ditcache, not diffusers.
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

import torch
import torch.distributed as dist

from ditcache.core import metrics
from ditcache.core.distributed import ProcessGroupReducer
from ditcache.core.metrics import rel_l1

__all__ = ["rank_main"]


def rank_main(rank: int, port: int, out_dir: str) -> None:
    """Join a 2-rank gloo group on loopback, reduce opposite local values and a split sequence's rel_l1, and
    write what this rank saw to ``<out_dir>/rank<rank>.json``."""
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2, timeout=datetime.timedelta(seconds=30))
    try:
        reducer = ProcessGroupReducer()
        sign = 1.0 if rank == 0 else -1.0
        local = torch.tensor([sign * 3.0, sign * 0.5 + 2.0, float(rank)])  # opposite local values
        total = reducer.sum(local)
        # One sequence of 8 tokens split in two halves; the halves change by very different amounts.
        torch.manual_seed(0)
        prev_full = torch.randn(1, 8, 4)
        cur_full = prev_full.clone()
        cur_full[:, :4] += 1.0  # only rank 0's half moves
        half = slice(0, 4) if rank == 0 else slice(4, 8)
        result = {
            "world_size": reducer.world_size,
            "local": local.tolist(),
            "total": total.tolist(),
            "local_rel_l1": metrics.rel_l1(cur_full[:, half], prev_full[:, half]),
            "reduced_rel_l1": rel_l1(cur_full[:, half], prev_full[:, half], reducer),
            "full_rel_l1": metrics.rel_l1(cur_full, prev_full),
        }
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()
