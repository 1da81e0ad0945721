"""What the bundled models' training scripts share: the common options, the learning-rate schedule, the rectified
flow training loop (AdamW, grad-norm clip, EMA of the weights) and the metadata written next to the weights.

A script supplies the model and two hooks: ``batch(gen) -> (x0, cond)`` draws one batch of clean tokens and its
condition (with condition dropout applied), and ``predict(model, x_t, t, cond)`` is the model's velocity.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

REPO = Path(__file__).resolve().parent.parent

Batch = Callable[[torch.Generator], tuple[torch.Tensor, Any]]
"""``batch(gen) -> (x0, cond)``: one training batch drawn with ``gen``."""
Predict = Callable[[Any, torch.Tensor, torch.Tensor, Any], torch.Tensor]
"""``predict(model, x_t, t, cond) -> velocity``."""


def common_parser(
    doc: str | None, *, files: str, grid: str, steps: int, dropout: str, dropout_help: str
) -> argparse.ArgumentParser:
    """The options both training scripts take; the script adds its evaluation options after them."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0] if doc else None)
    p.add_argument("--out", type=Path, required=True, help=f"folder for {files}")
    p.add_argument("--grid", type=Path, default=REPO / "docs" / "img" / grid, help="sample grid PNG to write")
    p.add_argument("--no-grid", action="store_true", help="do not write the sample grid")
    p.add_argument("--steps", type=int, default=steps, help="optimizer steps")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    p.add_argument("--warmup", type=int, default=100, help="linear warm-up steps")
    p.add_argument("--min-lr-ratio", type=float, default=0.05, help="final learning rate / peak (cosine decay)")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--ema-decay", type=float, default=0.995)
    p.add_argument(dropout, type=float, default=0.1, help=dropout_help)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (the shipped weights used 1)")
    p.add_argument("--log-every", type=int, default=100)
    return p


def lr_at(step: int, args: argparse.Namespace) -> float:
    """Linear warm-up to ``args.lr``, then cosine decay to ``args.min_lr_ratio`` of it."""
    if step < args.warmup:
        return float(args.lr * (step + 1) / args.warmup)
    progress = (step - args.warmup) / max(1, args.steps - args.warmup)
    cosine = 0.5 * (1 + math.cos(math.pi * progress))
    return float(args.lr * (args.min_lr_ratio + (1 - args.min_lr_ratio) * cosine))


def train_flow(
    args: argparse.Namespace,
    build: Callable[[], nn.Module],
    batch: Batch,
    predict: Predict,
    info: str = "",
) -> tuple[Any, dict[str, Any]]:
    """Train ``build()`` with rectified flow (``x_t = (1 - t) x0 + t noise``, target ``noise - x0``, t logit-normal)
    and return its EMA copy (eval mode) and ``{seconds, cpu_seconds, final_loss, parameter_count}``."""
    torch.manual_seed(args.seed)
    model = build()
    ema = type(model)(model.config)  # type: ignore[call-arg]
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"parameters: {n_params:,}; {info}threads: {torch.get_num_threads()}", flush=True)

    decay_params = [p for n, p in model.named_parameters() if p.ndim >= 2 and "conditioner" not in n]
    other_params = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "conditioner" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay_params, "weight_decay": args.weight_decay}, {"params": other_params, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.99),
    )
    gen = torch.Generator().manual_seed(args.seed)
    losses: list[float] = []
    start, cpu_start = time.perf_counter(), time.process_time()
    for step in range(args.steps):
        x0, cond = batch(gen)
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.sigmoid(torch.randn(len(x0), generator=gen))  # logit-normal(0, 1), as SD3
        tt = t[:, None, None]
        xt = (1 - tt) * x0 + tt * noise

        for group in opt.param_groups:
            group["lr"] = lr_at(step, args)
        loss = torch.nn.functional.mse_loss(predict(model, xt, t, cond), noise - x0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        decay = min(args.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - decay)
        losses.append(loss.item())
        if (step + 1) % args.log_every == 0 or step == 0:
            recent = losses[-args.log_every :]
            elapsed = time.perf_counter() - start
            eta = elapsed / (step + 1) * (args.steps - step - 1)
            print(
                f"step {step + 1:5d}/{args.steps}  loss {sum(recent) / len(recent):.4f}  lr {lr_at(step, args):.2e}  "
                f"{elapsed:6.0f}s elapsed, ~{eta:4.0f}s left",
                flush=True,
            )
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    tail = losses[-200:]
    ema.eval()
    return ema, {
        "seconds": round(seconds, 1),
        "cpu_seconds": round(cpu_seconds, 1),
        "final_loss": round(sum(tail) / len(tail), 5),
        "parameter_count": n_params,
    }


def save_weights(model: nn.Module, out: Path, weights_file: str, model_name: str) -> Path:
    """Write the float32 state dict of ``model`` to ``out / weights_file`` (safetensors); return the path."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    weights = out / weights_file
    state = {k: v.detach().contiguous().float() for k, v in model.state_dict().items()}
    save_file(state, str(weights), metadata={"format": "pt", "model": model_name})
    return weights


def metadata(
    args: argparse.Namespace,
    command: str,
    *,
    name: str,
    weights: Path,
    model: Any,
    stats: dict[str, Any],
    transformer_class: str,
    data: str,
    dropout: dict[str, float],
    timing: dict[str, Any],
    quality: dict[str, Any],
) -> dict[str, Any]:
    """The JSON metadata written next to the weights (``dropout``: the condition-dropout setting; ``timing``:
    training-time figures after ``seconds``)."""
    import diffusers

    from ditcache.bundled._weights import file_sha256

    return {
        "name": name,
        "format_version": 1,
        "weights_file": weights.name,
        "weights_sha256": file_sha256(weights),
        "weights_dtype": "float32",
        "parameter_count": stats["parameter_count"],
        "model": model.config.to_dict(),
        "transformer_class": transformer_class,
        "data": data,
        "seed": args.seed,
        "training": {
            "objective": "rectified flow: x_t = (1 - t) x0 + t noise, target noise - x0, MSE; t ~ logit-normal(0, 1)",
            "steps": args.steps,
            "batch_size": args.batch_size,
            "optimizer": "AdamW(betas=(0.9, 0.99)), grad-norm clip 1.0",
            "lr": args.lr,
            "warmup_steps": args.warmup,
            "lr_schedule": f"linear warm-up, cosine decay to {args.min_lr_ratio} x peak",
            "weight_decay": args.weight_decay,
            "ema_decay": args.ema_decay,
            **dropout,
            "threads": args.threads,
            "seconds": stats["seconds"],
            **timing,
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "python": platform.python_version(),
            "command": command,
        },
        "final_loss": stats["final_loss"],
        "final_loss_note": "mean training loss of the last 200 steps (raw weights, not EMA)",
        "quality": quality,
    }


def write_metadata(meta: dict[str, Any], path: Path, weights: Path) -> None:
    """Write ``meta`` as indented JSON to ``path`` and say so."""
    path.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {weights} ({weights.stat().st_size / 1e6:.2f} MB) and {path}", flush=True)
