"""What reducing a decision over the sequence-parallel group costs per step, as a ratio to the step time.

Two gloo processes on loopback run a small Flux transformer under diffusers' Ulysses context parallelism
(``enable_parallelism``). Each round times, in wall-clock time (a collective waits for the other rank, so CPU
time would hide it), interleaved:

* ``all_reduce``: one ``ProcessGroupReducer.sum`` of the two partial sums a decision needs (the bare collective);
* ``reduced_rel_l1``: TeaCache's distance on the rank's shard of the indicator, reduced (local sums, the
  collective, the host sync): what a cache adds to a step;
* ``step``: one uncached forward of the sharded model (its attention's all-to-alls included).

Run::

    OMP_NUM_THREADS=1 python benchmarks/reduction_cost.py --out results/

It writes ``reduction_cost.json`` (rank 0's medians and mins, and ``ratio`` = reduced_rel_l1 / step, by median)
and prints them. On a GPU with NCCL the collective is a few microseconds against a step of tens of milliseconds
or more, so the ratio is far smaller than on this CPU setup.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

__all__ = ["main", "measure"]


def _rank(rank: int, port: int, out: str, rounds: int, tokens: int) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    torch.accelerator.device_count = lambda: 1  # type: ignore[assignment]  # diffusers' CP asks; CPU has none
    dist.init_process_group("gloo", rank=rank, world_size=2, timeout=datetime.timedelta(seconds=60))
    try:
        result = measure(rounds, tokens)
        if rank == 0:
            Path(out).write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def measure(rounds: int, tokens: int) -> dict[str, Any]:
    """The timings on this rank (inside an initialised 2-rank group)."""
    from diffusers import ContextParallelConfig, FluxTransformer2DModel

    from ditcache.core.distributed import ProcessGroupReducer, rel_l1

    torch.manual_seed(0)
    model = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=2,
        num_single_layers=4,
        attention_head_dim=32,
        num_attention_heads=4,
        joint_attention_dim=64,
        pooled_projection_dim=32,
        axes_dims_rope=(8, 12, 12),
    ).eval()
    model.enable_parallelism(config=ContextParallelConfig(ulysses_degree=2))
    side = int(tokens**0.5)
    ids = torch.stack(
        torch.meshgrid(torch.zeros(1), torch.arange(float(side)), torch.arange(float(side)), indexing="ij"), -1
    )
    call = {
        "hidden_states": torch.randn(1, side * side, 16),
        "encoder_hidden_states": torch.randn(1, 16, 64),
        "pooled_projections": torch.randn(1, 32),
        "timestep": torch.full((1,), 0.5),
        "img_ids": ids.reshape(-1, 3),
        "txt_ids": torch.zeros(16, 3),
        "return_dict": False,
    }
    reducer = ProcessGroupReducer()
    shard = (1, side * side // 2, 128)  # the rank's shard of the modulated input
    prev, cur = torch.randn(shard), torch.randn(shard)
    partial = torch.tensor([1.0, 2.0])

    def timed(fn: Any) -> float:
        dist.barrier()
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    times: dict[str, list[float]] = {"all_reduce": [], "reduced_rel_l1": [], "step": []}
    with torch.no_grad():
        model(**call)  # warm-up
        for _ in range(rounds):
            times["all_reduce"].append(timed(lambda: reducer.sum(partial)))
            times["reduced_rel_l1"].append(timed(lambda: rel_l1(cur, prev, reducer)))
            times["step"].append(timed(lambda: model(**call)))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "setup": f"Flux (2 double + 4 single blocks, 128 dims), {side * side} image tokens, Ulysses 2, gloo, CPU",
        "rounds": rounds,
        "median_s": med,
        "min_s": {k: min(v) for k, v in times.items()},
        "ratio": med["reduced_rel_l1"] / med["step"],
        "ratio_all_reduce": med["all_reduce"] / med["step"],
        "torch": torch.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="directory for reduction_cost.json")
    parser.add_argument("--rounds", type=int, default=30, help="interleaved rounds (default 30)")
    parser.add_argument("--tokens", type=int, default=256, help="image tokens, a square (default 256)")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.tokens < 4:
        parser.error("--rounds must be >= 1 and --tokens >= 4")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp, "rank0.json")
        mp.spawn(_rank, args=(port, str(raw), args.rounds, args.tokens), nprocs=2, join=True)
        result = json.loads(raw.read_text())
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "reduction_cost.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    for key in ("all_reduce", "reduced_rel_l1", "step"):
        print(f"{key:16s} median {result['median_s'][key] * 1e3:9.3f} ms   min {result['min_s'][key] * 1e3:9.3f} ms")
    print(f"ratio (reduced rel_l1 / step): {result['ratio']:.4f}\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
