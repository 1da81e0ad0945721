"""Data and quality figures of the bundled photo-patches model: 16x16 colour patches of scikit-learn's two photos.

The data set is the two photos that ship inside scikit-learn (``sklearn.datasets.load_sample_images()``:
``china.jpg`` and ``flower.jpg``, 427x640 RGB each), downscaled 2x by area averaging to 213x320 so that a 16x16
patch holds some structure. A vertical band of :data:`HOLDOUT_COLUMNS` columns in the middle of each downscaled photo
(columns :data:`HOLDOUT_LEFT` to ``HOLDOUT_LEFT + HOLDOUT_COLUMNS``: the temple and the flower) is held out:
training crops come from either side of it, and the :func:`reference_patches` (a fixed grid of patches,
alternating between the two photos) come from the band only.

The condition of a patch is its :data:`THUMB_SIZE` x :data:`THUMB_SIZE` thumbnail (the mean colour of each
8x8 quarter, :func:`thumbnails`): the model generates the detail of a patch whose coarse colours are given. The quality
figures compare generated patches with their condition and with real patches:

* :func:`thumbnail_psnr`: PSNR of the generated patches' thumbnails against the conditioning thumbnails (does the
  sample respect its condition?);
* :func:`reference_psnr`: PSNR against the real held-out patches the thumbnails came from;
* :func:`detail_ratio`: RMS of the detail a thumbnail does not hold (patch minus its thumbnail, upsampled) over
  that of real patches: about 1 for realistic texture, below 1 for blurry output, far above 1 for noise;
* :func:`nearest_patch_rmse`: RMS distance of each patch to its nearest neighbour in a bank of training patches.

Needs scikit-learn (and Pillow, which scikit-learn uses to read the photos).
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

__all__ = [
    "DOWNSCALE",
    "HOLDOUT_COLUMNS",
    "HOLDOUT_LEFT",
    "NUM_REFERENCE_PATCHES",
    "PATCH_SIZE",
    "PHOTOS",
    "THUMB_SIZE",
    "detail_ratio",
    "nearest_patch_rmse",
    "photos",
    "random_patches",
    "reference_patches",
    "reference_positions",
    "thumbnail_psnr",
    "reference_psnr",
    "thumbnails",
]

PHOTOS = ("china.jpg", "flower.jpg")
"""The photos of ``sklearn.datasets.load_sample_images()``, in the order :func:`photos` returns them."""
PATCH_SIZE = 16
"""Side of a patch, in pixels of the downscaled photos."""
THUMB_SIZE = 2
"""Side of a patch's thumbnail (the condition): each thumbnail pixel averages 8x8 patch pixels."""
DOWNSCALE = 2
"""The photos are downscaled by this factor (area averaging) before patches are cut."""
HOLDOUT_LEFT = 128
"""First held-out column of each downscaled photo (320 wide)."""
HOLDOUT_COLUMNS = 64
"""Width of the held-out band: no training crop overlaps it; the reference patches come from it."""
_REF_ROWS = tuple(range(0, 213 - PATCH_SIZE + 1, PATCH_SIZE))  # 13 rows: 0, 16, ..., 192
_REF_COLS = tuple(range(HOLDOUT_LEFT, HOLDOUT_LEFT + HOLDOUT_COLUMNS - PATCH_SIZE + 1, PATCH_SIZE))  # 128, ..., 176
NUM_REFERENCE_PATCHES = len(PHOTOS) * len(_REF_ROWS) * len(_REF_COLS)
"""Number of held-out reference patches (104)."""


@functools.lru_cache(maxsize=1)
def _photos() -> torch.Tensor:
    try:
        from sklearn.datasets import load_sample_images
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("photos: the patches data set needs scikit-learn (pip install scikit-learn)") from exc
    data = load_sample_images()
    names = [str(f).replace("\\", "/").rsplit("/", 1)[-1] for f in data.filenames]
    order = [names.index(n) for n in PHOTOS]
    images = torch.stack([torch.from_numpy(data.images[i].copy()).float() for i in order]) / 255.0
    images = images.permute(0, 3, 1, 2)  # (2, 3, 427, 640)
    h, w = images.shape[-2] // DOWNSCALE * DOWNSCALE, images.shape[-1] // DOWNSCALE * DOWNSCALE
    small = F.avg_pool2d(images[..., :h, :w], DOWNSCALE)
    return small.clamp(0, 1).contiguous()


def photos() -> torch.Tensor:
    """The two photos, downscaled: ``(2, 3, 213, 320)`` float32 in [0, 1] (china, flower). Needs scikit-learn."""
    return _photos().clone()


def thumbnails(images: torch.Tensor) -> torch.Tensor:
    """Patches ``(B, 3, 16, 16)`` -> their thumbnails ``(B, 3, 2, 2)`` (8x8 area averages)."""
    if images.ndim != 4 or images.shape[1:] != (3, PATCH_SIZE, PATCH_SIZE):
        raise ValueError(f"images: expected shape (B, 3, {PATCH_SIZE}, {PATCH_SIZE}), got {tuple(images.shape)}")
    return F.avg_pool2d(images.float(), PATCH_SIZE // THUMB_SIZE)


def random_patches(count: int, generator: torch.Generator, source: torch.Tensor | None = None) -> torch.Tensor:
    """``count`` random 16x16 training crops ``(count, 3, 16, 16)`` in [0, 1], each from a photo picked uniformly,
    at a position picked uniformly among those that do not overlap the held-out band, mirrored left-right with
    probability 1/2. ``source``: the photos (default :func:`photos`). Deterministic for a given ``generator``
    state."""
    src = _photos() if source is None else source
    n_photos, _, height, width = src.shape
    n_left = HOLDOUT_LEFT - PATCH_SIZE + 1  # left crops start at 0 .. HOLDOUT_LEFT - 16
    right = HOLDOUT_LEFT + HOLDOUT_COLUMNS
    n_right = width - right - PATCH_SIZE + 1  # right crops start at right .. width - 16
    which = torch.randint(n_photos, (count,), generator=generator)
    ys = torch.randint(height - PATCH_SIZE + 1, (count,), generator=generator)
    xs = torch.randint(n_left + n_right, (count,), generator=generator)
    xs = torch.where(xs < n_left, xs, xs - n_left + right)
    flip = torch.rand(count, generator=generator) < 0.5
    offs = torch.arange(PATCH_SIZE)
    rows = (ys[:, None] + offs)[:, None, :, None]  # (count, 1, 16, 1)
    cols = (xs[:, None] + offs)[:, None, None, :]  # (count, 1, 1, 16)
    chans = torch.arange(3)[None, :, None, None]
    out = src[which[:, None, None, None], chans, rows, cols]
    return torch.where(flip[:, None, None, None], out.flip(-1), out).contiguous()


def reference_positions() -> list[tuple[str, int, int]]:
    """``(photo, top, left)`` of each reference patch, in label order (alternating photos)."""
    grid = [(r, c) for r in _REF_ROWS for c in _REF_COLS]
    return [(PHOTOS[k % 2], *grid[k // 2]) for k in range(NUM_REFERENCE_PATCHES)]


@functools.lru_cache(maxsize=1)
def _references() -> torch.Tensor:
    src = _photos()
    crops = [
        src[PHOTOS.index(name), :, top : top + PATCH_SIZE, left : left + PATCH_SIZE]
        for name, top, left in reference_positions()
    ]
    return torch.stack(crops).contiguous()


def reference_patches() -> torch.Tensor:
    """The held-out reference patches ``(104, 3, 16, 16)`` in [0, 1]; label ``i`` of the patches model is patch
    ``i``'s thumbnail. Needs scikit-learn."""
    return _references().clone()


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.float() - b.float()) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def thumbnail_psnr(images: torch.Tensor, thumbs: torch.Tensor) -> float:
    """PSNR (dB, data range 1) of the thumbnails of ``images`` (B, 3, 16, 16) against ``thumbs`` (B, 3, 2, 2)."""
    own = thumbnails(images)
    if thumbs.shape != own.shape:
        raise ValueError(f"thumbs: expected shape {tuple(own.shape)}, got {tuple(thumbs.shape)}")
    return _psnr(own, thumbs)


def reference_psnr(images: torch.Tensor, references: torch.Tensor) -> float:
    """PSNR (dB, data range 1) of ``images`` against the real patches ``references`` (same shape)."""
    if images.shape != references.shape:
        raise ValueError(f"references: expected shape {tuple(images.shape)}, got {tuple(references.shape)}")
    return _psnr(images, references)


def _detail_rms(images: torch.Tensor) -> float:
    coarse = F.interpolate(thumbnails(images), scale_factor=PATCH_SIZE // THUMB_SIZE, mode="nearest")
    return float(((images.float() - coarse) ** 2).mean().sqrt())


def detail_ratio(images: torch.Tensor, references: torch.Tensor) -> float:
    """RMS of the sub-thumbnail detail of ``images`` over that of ``references`` (both ``(B, 3, 16, 16)``)."""
    ref = _detail_rms(references)
    if ref == 0:
        raise ValueError("references: the reference patches hold no detail (all flat)")
    return _detail_rms(images) / ref


def nearest_patch_rmse(images: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """Per image ``(B,)``: RMS pixel distance to the nearest patch of ``bank`` ``(N, 3, 16, 16)``."""
    a = images.float().reshape(len(images), -1)
    b = bank.float().reshape(len(bank), -1)
    d2 = (a.pow(2).sum(1, keepdim=True) - 2 * a @ b.T + b.pow(2).sum(1)[None]).clamp_min(0)
    return (d2.min(dim=1).values / a.shape[1]).sqrt()
