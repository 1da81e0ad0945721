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
import sys
from pathlib import Path
from typing import Any

import torch
from _flow_train import common_parser, metadata, save_weights, train_flow, write_metadata


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = common_parser(
        __doc__,
        files="digits_dit.safetensors and digits_dit.json",
        grid="digits_samples.png",
        steps=1200,
        dropout="--label-dropout",
        dropout_help="probability of training with the NULL label",
    )
    p.add_argument("--eval-samples", type=int, default=20, help="samples per class for the quality figure")
    p.add_argument("--eval-steps", type=int, default=30, help="sampler steps for the quality figure")
    p.add_argument(
        "--eval-cfg", type=float, nargs="+", default=[2.0, 3.0, 4.0], help="guidance scales to score besides none"
    )
    return p.parse_args(argv)


def train(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    from ditcache.bundled.model import NULL_CLASS, DigitsDiT, DigitsDiTConfig, digits_dataset

    images, labels = digits_dataset()
    data = DigitsDiT.encode(images)  # (N, 64, 4) in [-1, 1]
    n = len(data)
    order: dict[str, Any] = {"perm": None, "cursor": 0}

    def batch(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        # epochs of a random permutation; a batch that would run past its end starts a new one
        if order["perm"] is None or order["cursor"] + args.batch_size > n:
            order["perm"], order["cursor"] = torch.randperm(n, generator=gen), 0
        idx = order["perm"][order["cursor"] : order["cursor"] + args.batch_size]
        order["cursor"] += args.batch_size
        y = labels[idx].clone()
        y[torch.rand(len(y), generator=gen) < args.label_dropout] = NULL_CLASS
        return data[idx], y

    return train_flow(
        args,
        lambda: DigitsDiT(DigitsDiTConfig()),
        batch,
        lambda model, xt, t, y: model(xt, t, y),
        info=f"data: {tuple(data.shape)}; ",
    )


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
    from ditcache.bundled.model import METADATA_FILE, WEIGHTS_FILE

    model, stats = train(args)
    quality = evaluate(model, args)
    weights = save_weights(model, args.out, WEIGHTS_FILE, "ditcache.bundled.DigitsDiT")
    cfg_scores = {k: v for k, v in quality["accuracy_by_guidance"].items() if k != "none"}
    meta = metadata(
        args,
        "python scripts/train_digits_dit.py " + " ".join(sys.argv[1:] if argv is None else argv),
        name="ditcache digits DiT",
        weights=weights,
        model=model,
        stats=stats,
        transformer_class="diffusers.FluxTransformer2DModel",
        data="sklearn.datasets.load_digits (1797 8x8 images), /16, bilinear to 16x16, scaled to [-1, 1], "
        "packed as 2x2 patches into 64 tokens of 4 channels",
        dropout={"label_dropout": args.label_dropout},
        timing={},
        quality={**quality, "best_guidance": max(cfg_scores, key=lambda k: cfg_scores[k])},
    )
    write_metadata(meta, args.out / METADATA_FILE, weights)
    if not args.no_grid:
        save_grid(model, args.grid, seed=args.seed + 2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
