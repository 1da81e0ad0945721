"""Step computation masks (SCM): which denoising steps must be computed and which may be cached.

A mask has one entry per step of a generation: ``1`` means the step is always computed, ``0`` means it may be
served from the cache. What happens on a ``0`` step is the *policy*:

* ``"dynamic"``: the step is only *eligible*; the cache's own test (DBCache: the residual difference against the
  threshold, plus its caps) still decides;
* ``"static"``: the step is cached whenever something is cached to reuse, without any test.

Masks are given either explicitly (a sequence of 0/1, or compute/cache *bins*: run lengths that alternate
``compute_bins[0]`` computed steps, ``cache_bins[0]`` cached steps, ``compute_bins[1]`` computed steps, ...) or by a
preset name, ``"slow"``, ``"medium"``, ``"fast"`` or ``"ultra"``, resolved for the generation's step count.

The presets and the way they are fitted to a step count are those of cache-dit 1.5.3 (``cache_dit.steps_mask``,
``caching/cache_interface.py``), reimplemented here so that the same preset gives the same mask for every step
count (the test suite checks the equality against the installed cache-dit):

* the presets are defined for 28 steps; the compute/cache bin tables below are cache-dit's;
* more than 28 steps: the bins are grown in rounds. Each round adds, bin by bin and alternating compute/cache,
  ``max(int(bin_28 * (steps / 28 * 0.5)), 1)`` steps until the total is reached, then one more step to the last
  compute bin; the result is trimmed to the exact count;
* 16 to 27 steps: the 28-step bins are trimmed from the tail (last cache bin, then last compute bin, alternately).
  This is a plain truncation, so e.g. the 20-step "fast" mask computes steps 0-5, 7 and 19 only: the masks do not
  scale the 28-step pattern down;
* 10 to 15 steps, 9 steps and 8 steps: separate tables (the 9-step one was tuned for Z-Image-Turbo), trimmed the
  same way;
* fewer than 8 steps: only 4 and 6 steps have a (single, shared) preset;
* the last step of a preset mask is always ``1``. Masks built from explicit bins are returned as they are.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Final

__all__ = [
    "SCM_POLICIES",
    "SCM_PRESETS",
    "leading_compute_steps",
    "mask_from_bins",
    "preset_available",
    "preset_mask",
    "resolve_mask",
    "validate_mask",
]

SCM_PRESETS: Final[tuple[str, ...]] = ("slow", "medium", "fast", "ultra")
"""Names of the preset masks, from the most computed steps to the fewest."""

SCM_POLICIES: Final[tuple[str, ...]] = ("dynamic", "static")
"""What a ``0`` step means: eligible for the cache's own test (dynamic) or always cached (static)."""

_Bins = tuple[tuple[int, ...], tuple[int, ...]]

# (compute bins, cache bins) per preset. Source: cache-dit 1.5.3, cache_dit/caching/cache_interface.py, steps_mask.
_TABLE_28: Final[dict[str, _Bins]] = {
    "slow": ((8, 3, 3, 2, 1, 1), (1, 2, 2, 2, 3)),  # 18 computed, 10 cached
    "medium": ((6, 2, 2, 2, 2, 1), (1, 3, 3, 3, 3)),  # 15 computed, 13 cached
    "fast": ((6, 1, 1, 1, 1, 1), (1, 3, 4, 5, 4)),  # 11 computed, 17 cached
    "ultra": ((4, 1, 1, 1, 1), (2, 5, 6, 7)),  # 8 computed, 20 cached
}
_TABLE_15: Final[dict[str, _Bins]] = {  # used for 10-15 steps
    "slow": ((4, 2, 2, 2, 1), (1, 1, 1, 1)),
    "medium": ((4, 2, 1, 1, 1), (1, 1, 2, 2)),
    "fast": ((3, 1, 1, 1, 1), (1, 2, 2, 3)),
    "ultra": ((2, 1, 1, 1, 1), (1, 2, 3, 3)),
}
_TABLE_9: Final[dict[str, _Bins]] = {
    "slow": ((5, 2, 1), (1,)),
    "medium": ((5, 1, 1), (1, 1)),
    "fast": ((4, 1, 1), (1, 2)),
    "ultra": ((3, 1, 1), (2, 2)),
}
_TABLE_8: Final[dict[str, _Bins]] = {
    "slow": ((5, 1, 1), (1,)),
    "medium": ((4, 1, 1), (1, 1)),
    "fast": ((3, 1, 1), (1, 2)),
    "ultra": ((2, 1, 1), (2, 2)),
}
_SHORT: Final[dict[int, _Bins]] = {4: ((2, 1), (1,)), 6: ((3, 1), (2,))}  # every preset alike


def _check_bins(name: str, bins: Sequence[int]) -> list[int]:
    if isinstance(bins, (str, bytes)) or not isinstance(bins, Sequence):
        raise TypeError(f"{name}: expected a sequence of ints >= 0, got {bins!r}")
    out = []
    for b in bins:
        if isinstance(b, bool) or not isinstance(b, int) or b < 0:
            raise ValueError(f"{name}: expected a sequence of ints >= 0, got {list(bins)!r}")
        out.append(b)
    return out


def _check_steps(total_steps: object, name: str = "total_steps") -> int:
    if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
        raise ValueError(f"{name}: expected an int >= 1, got {total_steps!r}")
    return total_steps


def mask_from_bins(
    compute_bins: Sequence[int], cache_bins: Sequence[int], total_steps: int | None = None
) -> tuple[int, ...]:
    """The mask ``1 * compute_bins[0], 0 * cache_bins[0], 1 * compute_bins[1], ...`` cut to ``total_steps``.

    Without ``total_steps`` the mask covers every bin. The bins must cover at least ``total_steps`` steps. The last
    step is not forced to ``1`` (that is done for presets only).
    """
    compute = _check_bins("compute_bins", compute_bins)
    cache = _check_bins("cache_bins", cache_bins)
    covered = sum(compute) + sum(cache)
    if total_steps is None:
        total_steps = covered
    else:
        _check_steps(total_steps)
        if covered < total_steps:
            raise ValueError(
                f"compute_bins/cache_bins: cover {covered} steps, fewer than total_steps={total_steps}; "
                "add bins or lengthen them"
            )
    mask: list[int] = []
    for i in range(max(len(compute), len(cache))):
        if i < len(compute):
            mask.extend([1] * compute[i])
        if i < len(cache):
            mask.extend([0] * cache[i])
    return tuple(mask[:total_steps])


def _trim(compute: list[int], cache: list[int], target: int) -> None:
    """Shorten the bins from the tail until they cover ``target`` steps: last cache bin, then last compute bin."""
    while sum(compute) + sum(cache) > target:
        for bins in (cache, compute):
            if bins:
                bins[-1] -= 1
                if bins[-1] == 0:
                    bins.pop()
            if sum(compute) + sum(cache) <= target:
                return


def _grow(compute: list[int], cache: list[int], target: int) -> None:
    """Lengthen 28-step bins in rounds, proportionally to their 28-step sizes, until they cover ``target``."""
    base_compute, base_cache = list(compute), list(cache)
    scale = (target / 28) * 0.5
    paired = min(len(compute), len(cache))

    def done() -> bool:
        return sum(compute) + sum(cache) >= target

    while not done():
        for i in range(paired):
            compute[i] += max(int(base_compute[i] * scale), 1)
            if done():
                return
            cache[i] += max(int(base_cache[i] * scale), 1)
            if done():
                return
        compute[-1] += 1


def preset_available(num_steps: int) -> bool:
    """Whether the preset masks (:data:`SCM_PRESETS`) exist for ``num_steps`` steps: 4, 6 or at least 8, as in
    cache-dit's ``steps_mask``. The one statement of this rule; serving backends use it to run a request of
    another step count without a mask."""
    return num_steps >= 8 or num_steps in _SHORT


def _preset_bins(name: str, total_steps: int) -> tuple[list[int], list[int]]:
    if total_steps < 8:
        if not preset_available(total_steps):
            raise ValueError(
                f"total_steps: the preset masks exist for 4, 6 and >= 8 steps, got {total_steps}; "
                "give an explicit mask or compute/cache bins instead"
            )
        compute, cache = (list(b) for b in _SHORT[total_steps])
        return compute, cache
    if total_steps == 8:
        table = _TABLE_8
    elif total_steps == 9:
        table = _TABLE_9
    elif total_steps < 16:
        table = _TABLE_15
    else:
        table = _TABLE_28
    compute, cache = (list(b) for b in table[name])
    if total_steps > 28:
        _grow(compute, cache, total_steps)
    _trim(compute, cache, total_steps)
    return compute, cache


def preset_mask(name: str, total_steps: int) -> tuple[int, ...]:
    """The preset mask ``name`` (one of :data:`SCM_PRESETS`) fitted to ``total_steps`` steps; last step is 1."""
    if name not in SCM_PRESETS:
        raise ValueError(f"steps_computation_mask: unknown preset {name!r}; allowed values: {list(SCM_PRESETS)}")
    _check_steps(total_steps)
    compute, cache = _preset_bins(name, total_steps)
    mask = list(mask_from_bins(compute, cache, total_steps))
    mask[-1] = 1
    return tuple(mask)


def validate_mask(mask: object, name: str = "steps_computation_mask") -> tuple[int, ...]:
    """Check and normalise an explicit mask: a non-empty sequence of 0/1 (ints or bools, or a '0'/'1' string)."""
    if isinstance(mask, str):
        if not mask or set(mask) - {"0", "1"}:
            raise ValueError(
                f"{name}: a string mask must consist of '0' and '1' only (or be a preset name: "
                f"{list(SCM_PRESETS)}), got {mask!r}"
            )
        return tuple(int(c) for c in mask)
    if not isinstance(mask, Sequence) or isinstance(mask, bytes):
        raise TypeError(
            f"{name}: expected a preset name {list(SCM_PRESETS)} or a sequence of 0/1, got {type(mask).__name__}"
        )
    out = []
    for v in mask:
        if not isinstance(v, numbers.Integral) or v not in (0, 1):  # True/False count as 1/0
            raise ValueError(f"{name}: every entry must be 0 (may cache) or 1 (compute), got {list(mask)!r}")
        out.append(int(v))
    if not out:
        raise ValueError(f"{name}: the mask is empty; give one entry per step")
    return tuple(out)


def resolve_mask(spec: str | Sequence[int] | None, num_steps: int | None) -> tuple[int, ...] | None:
    """The mask a generation of ``num_steps`` steps uses: a preset name is fitted to the step count, an explicit
    mask is returned as is; None gives None. A preset needs the step count (ValueError without it)."""
    if spec is None:
        return None
    if isinstance(spec, str) and spec in SCM_PRESETS:
        if num_steps is None:
            raise ValueError(
                f"steps_computation_mask: the preset {spec!r} needs the generation's step count; call "
                "ditcache.refresh(module, num_inference_steps=N) before the generation, or set "
                "num_inference_steps in the config, or give an explicit mask"
            )
        return preset_mask(spec, _check_steps(num_steps, "num_inference_steps"))
    return validate_mask(spec)


def leading_compute_steps(mask: Sequence[int]) -> int:
    """How many steps at the start of ``mask`` are ``1`` (cache-dit caps the warm-up at this many)."""
    n = 0
    for v in mask:
        if v != 1:
            break
        n += 1
    return n
