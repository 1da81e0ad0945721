"""Train the bundled photo-patches diffusion transformer (ditcache.bundled.patches) on the CPU and write its files.

Usage (from the repository root; about 10 minutes on one CPU core)::

    python scripts/train_patches_dit.py --out src/ditcache/bundled/

Writes ``patches_dit.safetensors`` (EMA weights, float32) and ``patches_dit.json`` (config, training settings,
seed, final loss, quality figures, SHA-256 of the weights) into ``--out``, and a sample grid PNG to ``--grid``.

Training: rectified flow on random 16x16 crops (mirrored at random) of scikit-learn's two sample photos,
downscaled 2x, outside a held-out band (``ditcache.bundled.patch_data``); ``x_t = (1 - t) x0 + t * noise``, target
``noise - x0``, ``t`` drawn logit-normally (SD3); the condition is the crop's 2x2 thumbnail, replaced by the null
tokens with probability ``--cond-dropout`` so classifier-free guidance works; AdamW with linear warm-up and cosine
decay; an exponential moving average of the weights is what is saved. Re-running with the same arguments and
thread count reproduces the weights up to floating-point differences between machines.

Quality (on the 104 held-out reference patches, whose thumbnails are the conditions): PSNR of the samples'
thumbnails against the conditions, PSNR against the real patches, the detail ratio (sub-thumbnail detail of the
samples over that of the real patches) and the nearest-training-patch distance, without and with guidance, for
unconditional samples, and for the untrained (freshly initialised) model as a floor.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
from _flow_train import common_parser, metadata, save_weights, train_flow, write_metadata


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = common_parser(
        __doc__,
        files="patches_dit.safetensors and patches_dit.json",
        grid="patches_samples.png",
        steps=1000,
        dropout="--cond-dropout",
        dropout_help="probability of training with the null tokens",
    )
    p.add_argument("--eval-steps", type=int, default=30, help="sampler steps for the quality figures")
    p.add_argument("--eval-cfg", type=float, nargs="+", default=[1.5, 2.0, 3.0], help="guidance scales besides none")
    p.add_argument("--bank-size", type=int, default=20000, help="training patches for the nearest-patch distance")
    p.add_argument(
        "--evaluate-only",
        action="store_true",
        help="do not train: re-score the weights in --out (their SHA-256 must match the JSON) and rewrite the "
        "JSON's quality figures",
    )
    return p.parse_args(argv)


def train(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    from ditcache.bundled.patch_data import random_patches, thumbnails
    from ditcache.bundled.patches import PatchConditioning, PatchesDiT, PatchesDiTConfig

    img_shapes = [[(1, 8, 8)]] * args.batch_size

    def batch(gen: torch.Generator) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        patches = random_patches(args.batch_size, gen)
        drop = torch.rand(args.batch_size, generator=gen) < args.cond_dropout
        return PatchesDiT.encode(patches), (thumbnails(patches), drop)

    def predict(model: Any, xt: torch.Tensor, t: torch.Tensor, cond: tuple[torch.Tensor, torch.Tensor]) -> Any:
        thumbs, drop = cond
        return model.velocity(xt, t, PatchConditioning(model.conditioner(thumbs, drop), None, img_shapes))

    return train_flow(args, lambda: PatchesDiT(PatchesDiTConfig()), batch, predict)


def _scores(images: torch.Tensor, thumbs: torch.Tensor, refs: torch.Tensor, bank: torch.Tensor) -> dict[str, float]:
    from ditcache.bundled import patch_data as pd

    return {
        "thumbnail_psnr_db": round(pd.thumbnail_psnr(images, thumbs), 2),
        "reference_psnr_db": round(pd.reference_psnr(images, refs), 2),
        "detail_ratio": round(pd.detail_ratio(images, refs), 3),
        "nearest_train_patch_rmse": round(float(pd.nearest_patch_rmse(images, bank).mean()), 4),
    }


def evaluate(model: Any, args: argparse.Namespace) -> dict[str, Any]:
    from ditcache.bundled import patch_data as pd
    from ditcache.bundled.patches import NULL_PATCH, PatchesDiT, sample_patches

    refs = pd.reference_patches()
    thumbs = pd.thumbnails(refs)
    labels = list(range(len(refs)))
    bank = pd.random_patches(args.bank_size, torch.Generator().manual_seed(args.seed + 100))
    seed = args.seed + 1
    by_guidance: dict[str, dict[str, float]] = {}
    for scale in [None, *args.eval_cfg]:
        imgs = sample_patches(model, labels, num_steps=args.eval_steps, guidance_scale=scale, seed=seed)
        key = "none" if scale is None else f"{scale:g}"
        by_guidance[key] = _scores(imgs, thumbs, refs, bank)
        print(f"guidance {key}: {by_guidance[key]}", flush=True)
    uncond = sample_patches(model, [NULL_PATCH] * len(refs), num_steps=args.eval_steps, seed=seed)
    unconditional = {
        "thumbnail_psnr_db": round(pd.thumbnail_psnr(uncond, thumbs), 2),
        "detail_ratio": round(pd.detail_ratio(uncond, refs), 3),
        "nearest_train_patch_rmse": round(float(pd.nearest_patch_rmse(uncond, bank).mean()), 4),
        "mean_rgb": [round(float(v), 3) for v in uncond.mean(dim=(0, 2, 3))],
        "std": round(float(uncond.std()), 3),
    }
    real = {
        "nearest_train_patch_rmse": round(float(pd.nearest_patch_rmse(refs, bank).mean()), 4),
        "mean_rgb": [round(float(v), 3) for v in refs.mean(dim=(0, 2, 3))],
        "std": round(float(refs.std()), 3),
        "upsampled_thumbnail_psnr_db": round(pd.reference_psnr(_upsample(thumbs, "bilinear"), refs), 2),
    }
    print(f"unconditional: {unconditional}\nreal held-out patches: {real}", flush=True)
    with torch.random.fork_rng():
        torch.manual_seed(args.seed)
        fresh = PatchesDiT(model.config).eval()
    untrained = _scores(sample_patches(fresh, labels, num_steps=args.eval_steps, seed=seed), thumbs, refs, bank)
    print(f"untrained: {untrained}", flush=True)
    return {
        "conditions": "the 2x2 thumbnails of the 104 held-out reference patches (labels 0-103)",
        "sampler": "ditcache.bundled.patches.sample_patches, Euler, uniform sigmas (shift 1.0)",
        "num_steps": args.eval_steps,
        "seed": seed,
        "nearest_patch_bank": f"{args.bank_size} random training crops, seed {args.seed + 100}",
        "by_guidance": by_guidance,
        "unconditional": unconditional,
        "real_reference_patches": real,
        "untrained_model": untrained,
    }


def _upsample(thumbs: torch.Tensor, mode: str) -> torch.Tensor:
    from ditcache.bundled import patch_data as pd

    return torch.nn.functional.interpolate(thumbs, scale_factor=pd.PATCH_SIZE // pd.THUMB_SIZE, mode=mode)


def save_grid(model: Any, path: Path, seed: int) -> None:
    from PIL import Image

    from ditcache.bundled import patch_data as pd
    from ditcache.bundled.patches import NULL_PATCH, sample_patches

    every = pd.reference_patches()
    detail = (every - _upsample(pd.thumbnails(every), "nearest")).pow(2).mean(dim=(1, 2, 3))
    labels = sorted(detail.argsort(descending=True)[:10].tolist())  # the ten most detailed references
    refs = every[labels]
    thumbs = _upsample(pd.thumbnails(refs), "nearest")
    plain = [sample_patches(model, labels, num_steps=30, seed=seed + k) for k in range(3)]
    guided = [sample_patches(model, labels, num_steps=30, guidance_scale=3.0, seed=seed + k) for k in range(3)]
    uncond = sample_patches(model, [NULL_PATCH] * 8, num_steps=30, seed=seed)
    rows = [[refs[i], thumbs[i], *(p[i] for p in plain), *(g[i] for g in guided)] for i in range(len(labels))]
    rows.append(list(uncond))
    scale, gap, side = 4, 3, 16 * 4
    cols = max(len(r) for r in rows)
    canvas = torch.ones(3, len(rows) * (side + gap) + gap, cols * (side + gap) + gap)
    for r, row in enumerate(rows):
        for c, img in enumerate(row):
            big = img.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
            y0, x0 = gap + r * (side + gap), gap + c * (side + gap)
            canvas[:, y0 : y0 + side, x0 : x0 + side] = big
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = (canvas.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    Image.fromarray(pixels, mode="RGB").save(path, optimize=True)
    print(f"wrote {path}", flush=True)


def evaluate_only(args: argparse.Namespace) -> int:
    """Re-score the weights in ``--out`` and rewrite the quality figures of their JSON (training facts kept)."""
    from ditcache.bundled._weights import file_sha256
    from ditcache.bundled.patches import METADATA_FILE, WEIGHTS_FILE, load_patches_dit

    weights, meta_path = args.out / WEIGHTS_FILE, args.out / METADATA_FILE
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta["weights_sha256"] != file_sha256(weights):
        raise SystemExit(f"{weights}: SHA-256 differs from {meta_path.name}; re-train instead")
    model = load_patches_dit(weights=weights)
    quality = evaluate(model, args)
    cfg = {k: v["thumbnail_psnr_db"] for k, v in quality["by_guidance"].items() if k != "none"}
    meta["quality"] = {**quality, "best_guidance": max(cfg, key=lambda k: cfg[k])}
    meta_path.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    print(f"rewrote the quality figures of {meta_path}", flush=True)
    if not args.no_grid:
        save_grid(model, args.grid, seed=args.seed + 2)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from ditcache.bundled.patches import METADATA_FILE, WEIGHTS_FILE

    if args.evaluate_only:
        return evaluate_only(args)
    model, stats = train(args)
    quality = evaluate(model, args)
    weights = save_weights(model, args.out, WEIGHTS_FILE, "ditcache.bundled.patches.PatchesDiT")
    cfg = {k: v["thumbnail_psnr_db"] for k, v in quality["by_guidance"].items() if k != "none"}
    meta = metadata(
        args,
        "python scripts/train_patches_dit.py " + " ".join(sys.argv[1:] if argv is None else argv),
        name="ditcache photo-patches DiT",
        weights=weights,
        model=model,
        stats=stats,
        transformer_class="diffusers.QwenImageTransformer2DModel",
        data="sklearn.datasets.load_sample_images (china.jpg, flower.jpg, 427x640 RGB), 2x area-downscaled to "
        "213x320; random 16x16 crops (mirrored at random) outside the held-out columns 128-191, scaled to "
        "[-1, 1], packed as 2x2 blocks into 64 tokens of 12 channels; condition: the crop's 2x2 thumbnail",
        dropout={"cond_dropout": args.cond_dropout},
        timing={
            "cpu_seconds": stats["cpu_seconds"],
            "seconds_note": "wall time and CPU time of the training loop (the wall time grows on a shared machine)",
        },
        quality={**quality, "best_guidance": max(cfg, key=lambda k: cfg[k])},
    )
    write_metadata(meta, args.out / METADATA_FILE, weights)
    if not args.no_grid:
        save_grid(model, args.grid, seed=args.seed + 2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
