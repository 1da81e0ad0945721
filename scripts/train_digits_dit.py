"""Train the bundled digits diffusion transformer (ditcache.bundled) on the CPU and write its files.

Usage (from the repository root; about 10 minutes on one CPU core)::

    python scripts/train_digits_dit.py --out src/ditcache/bundled/

Writes ``digits_dit.safetensors`` (EMA weights, float32) and ``digits_dit.json`` (config, training settings,
seed, final loss, quality figures, SHA-256 of the weights) into ``--out``, and a sample grid PNG to ``--grid``.

Training: rectified flow on scikit-learn's digits upsampled to 16x16 and packed into 64 tokens of 4 channels;
``x_t = (1 - t) x0 + t * noise``, target ``noise - x0``, ``t`` drawn logit-normally (SD3); the label is dropped to
the "no class" label with probability ``--label-dropout`` so classifier-free guidance works; AdamW with linear
warm-up and cosine decay; an exponential moving average of the weights is what is saved. Re-running with the same
arguments and thread count reproduces the weights up to floating-point differences between machines.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parent.parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--out", type=Path, required=True, help="folder for digits_dit.safetensors and digits_dit.json")
    p.add_argument(
        "--grid", type=Path, default=REPO / "docs" / "img" / "digits_samples.png", help="sample grid PNG to write"
    )
    p.add_argument("--no-grid", action="store_true", help="do not write the sample grid")
    p.add_argument("--steps", type=int, default=1200, help="optimizer steps")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    p.add_argument("--warmup", type=int, default=100, help="linear warm-up steps")
    p.add_argument("--min-lr-ratio", type=float, default=0.05, help="final learning rate / peak (cosine decay)")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--ema-decay", type=float, default=0.995)
    p.add_argument("--label-dropout", type=float, default=0.1, help="probability of training with the NULL label")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (the shipped weights used 1)")
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--eval-samples", type=int, default=20, help="samples per class for the quality figure")
    p.add_argument("--eval-steps", type=int, default=30, help="sampler steps for the quality figure")
    p.add_argument(
        "--eval-cfg", type=float, nargs="+", default=[2.0, 3.0, 4.0], help="guidance scales to score besides none"
    )
    return p.parse_args(argv)


def lr_at(step: int, args: argparse.Namespace) -> float:
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = (step - args.warmup) / max(1, args.steps - args.warmup)
    cosine = 0.5 * (1 + math.cos(math.pi * progress))
    return args.lr * (args.min_lr_ratio + (1 - args.min_lr_ratio) * cosine)


def train(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    from ditcache.bundled.model import NULL_CLASS, DigitsDiT, DigitsDiTConfig, digits_dataset

    torch.manual_seed(args.seed)
    images, labels = digits_dataset()
    data = DigitsDiT.encode(images)  # (N, 64, 4) in [-1, 1]
    model = DigitsDiT(DigitsDiTConfig())
    ema = DigitsDiT(model.config)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"parameters: {n_params:,}; data: {tuple(data.shape)}; threads: {torch.get_num_threads()}", flush=True)

    decay_params = [p for n, p in model.named_parameters() if p.ndim >= 2 and "conditioner" not in n]
    other_params = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "conditioner" not in n)]
    opt = torch.optim.AdamW(
        [
            {"params": decay_params, "weight_decay": args.weight_decay},
            {"params": other_params, "weight_decay": 0.0},
        ],
        lr=args.lr,
        betas=(0.9, 0.99),
    )
    gen = torch.Generator().manual_seed(args.seed)
    losses: list[float] = []
    start = time.perf_counter()
    n = len(data)
    perm = torch.randperm(n, generator=gen)
    cursor = 0
    for step in range(args.steps):
        if cursor + args.batch_size > n:
            perm = torch.randperm(n, generator=gen)
            cursor = 0
        idx = perm[cursor : cursor + args.batch_size]
        cursor += args.batch_size
        x0, y = data[idx], labels[idx].clone()
        drop = torch.rand(len(y), generator=gen) < args.label_dropout
        y[drop] = NULL_CLASS
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.sigmoid(torch.randn(len(y), generator=gen))  # logit-normal(0, 1), as SD3
        tt = t[:, None, None]
        xt = (1 - tt) * x0 + tt * noise
        target = noise - x0

        for group in opt.param_groups:
            group["lr"] = lr_at(step, args)
        loss = torch.nn.functional.mse_loss(model(xt, t, y), target)
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
            recent = sum(losses[-args.log_every :]) / len(losses[-args.log_every :])
            elapsed = time.perf_counter() - start
            eta = elapsed / (step + 1) * (args.steps - step - 1)
            print(
                f"step {step + 1:5d}/{args.steps}  loss {recent:.4f}  lr {lr_at(step, args):.2e}  "
                f"{elapsed:6.0f}s elapsed, ~{eta:4.0f}s left",
                flush=True,
            )
    seconds = time.perf_counter() - start
    tail = losses[-200:]
    stats = {
        "seconds": round(seconds, 1),
        "final_loss": round(sum(tail) / len(tail), 5),
        "parameter_count": n_params,
    }
    ema.eval()
    return ema, stats


def evaluate(model: Any, args: argparse.Namespace) -> dict[str, Any]:
    from ditcache.bundled.model import DigitClassifier
    from ditcache.bundled.sampler import sample

    classifier = DigitClassifier()
    labels = torch.arange(10).repeat_interleave(args.eval_samples)
    scores: dict[str, float] = {}
    per_class: dict[str, list[float]] = {}
    for scale in [None, *args.eval_cfg]:
        imgs = sample(model, labels, num_steps=args.eval_steps, guidance_scale=scale, seed=args.seed + 1)
        pred = classifier.predict(imgs)
        key = "none" if scale is None else f"{scale:g}"
        scores[key] = round(float((pred == labels).float().mean()), 4)
        per_class[key] = [round(float((pred[labels == c] == c).float().mean()), 3) for c in range(10)]
        print(f"classifier accuracy, guidance {key}: {scores[key]:.3f}  per class {per_class[key]}", flush=True)
    return {
        "classifier": "sklearn SVC(C=10, gamma='scale') fitted on the 16x16 real digits "
        "(ditcache.bundled.DigitClassifier)",
        "sampler": "ditcache.bundled.sample, Euler, uniform sigmas (shift 1.0)",
        "num_steps": args.eval_steps,
        "samples_per_class": args.eval_samples,
        "seed": args.seed + 1,
        "accuracy_by_guidance": scores,
        "per_class_accuracy_by_guidance": per_class,
    }


def save_grid(model: Any, path: Path, seed: int) -> None:
    from PIL import Image

    from ditcache.bundled.sampler import sample

    cols, scale, gap = 10, 3, 2
    labels = torch.arange(10).repeat_interleave(cols)
    imgs = sample(model, labels, num_steps=30, guidance_scale=3.0, seed=seed)
    side = 16 * scale
    canvas = torch.full((10 * (side + gap) + gap, cols * (side + gap) + gap), 0.7)  # grey grid lines
    for k, img in enumerate(imgs):
        r, c = divmod(k, cols)
        big = img.repeat_interleave(scale, 0).repeat_interleave(scale, 1)
        y0, x0 = gap + r * (side + gap), gap + c * (side + gap)
        canvas[y0 : y0 + side, x0 : x0 + side] = 1 - big  # dark ink on white
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((canvas * 255).round().to(torch.uint8).numpy(), mode="L").save(path, optimize=True)
    print(f"wrote {path}", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    import diffusers
    from safetensors.torch import save_file

    from ditcache.bundled.model import METADATA_FILE, WEIGHTS_FILE, file_sha256

    model, stats = train(args)
    quality = evaluate(model, args)
    args.out.mkdir(parents=True, exist_ok=True)
    weights = args.out / WEIGHTS_FILE
    state = {k: v.detach().contiguous().float() for k, v in model.state_dict().items()}
    save_file(state, str(weights), metadata={"format": "pt", "model": "ditcache.bundled.DigitsDiT"})
    cfg_scores = {k: v for k, v in quality["accuracy_by_guidance"].items() if k != "none"}
    meta = {
        "name": "ditcache digits DiT",
        "format_version": 1,
        "weights_file": WEIGHTS_FILE,
        "weights_sha256": file_sha256(weights),
        "weights_dtype": "float32",
        "parameter_count": stats["parameter_count"],
        "model": model.config.to_dict(),
        "transformer_class": "diffusers.FluxTransformer2DModel",
        "data": "sklearn.datasets.load_digits (1797 8x8 images), /16, bilinear to 16x16, scaled to [-1, 1], "
        "packed as 2x2 patches into 64 tokens of 4 channels",
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
            "label_dropout": args.label_dropout,
            "threads": args.threads,
            "seconds": stats["seconds"],
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "python": platform.python_version(),
            "command": "python scripts/train_digits_dit.py " + " ".join(sys.argv[1:] if argv is None else argv),
        },
        "final_loss": stats["final_loss"],
        "final_loss_note": "mean training loss of the last 200 steps (raw weights, not EMA)",
        "quality": {**quality, "best_guidance": max(cfg_scores, key=lambda k: cfg_scores[k])},
    }
    meta_path = args.out / METADATA_FILE
    meta_path.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {weights} ({weights.stat().st_size / 1e6:.2f} MB) and {meta_path}", flush=True)
    if not args.no_grid:
        save_grid(model, args.grid, seed=args.seed + 2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
