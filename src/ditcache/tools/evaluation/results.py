"""The measurements of an evaluation: one :class:`RunResult` per configuration, gathered in an :class:`Evaluation`."""

from __future__ import annotations

import math
from typing import Any

import attrs
import torch

from ditcache.tools.evaluation.counting import BranchDecisions
from ditcache.tools.evaluation.settings import EvalSettings, Method

__all__ = ["Evaluation", "RunResult", "max_abs_error"]


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


@attrs.frozen
class RunResult:
    """The measurements of one configuration."""

    method: Method
    """What was run."""
    seconds: float
    """Fastest timed run (seconds; ``inf`` when it failed)."""
    all_seconds: tuple[float, ...]
    """Every timed run, in the order they ran."""
    baseline_seconds: float
    """Fastest uncached run of the same evaluation."""
    fixed_seconds: float
    """Fastest run of the model without blocks: what no block-skipping cache can remove."""
    decisions: tuple[BranchDecisions, ...]
    """Per CFG branch, what ran at every step."""
    psnr: float
    """PSNR (dB) of the samples against the uncached ones over the model's data range; ``inf`` when identical."""
    max_abs_error: float
    """Largest absolute pixel difference against the uncached samples."""
    reproducible: bool
    """Whether every timed run gave exactly the samples of the first run (a cache that leaks state between runs
    does not)."""
    images: torch.Tensor | None = attrs.field(default=None, eq=False, repr=False)
    """The samples ``(B, *image_shape)`` of the first run (``(B, 16, 16)`` grey digits, ``(B, 3, 16, 16)`` RGB
    patches)."""
    error: str | None = None
    """Why the configuration could not be run (then the measurements are empty)."""

    @property
    def name(self) -> str:
        """The configuration's name."""
        return self.method.name

    @property
    def ok(self) -> bool:
        """Whether it ran."""
        return self.error is None

    @property
    def speedup(self) -> float:
        """Uncached time over this configuration's time (fastest runs of each)."""
        return self.baseline_seconds / self.seconds if self.seconds > 0 and self.ok else 0.0

    @property
    def blocks_executed(self) -> int:
        """Block bodies run over the whole generation, every branch."""
        return sum(sum(d.blocks) for d in self.decisions)

    @property
    def blocks_total(self) -> int:
        """Block bodies an uncached generation runs."""
        return sum(d.num_blocks * len(d.blocks) for d in self.decisions)

    @property
    def attention_executed(self) -> int:
        """Attention computations over the whole generation, every branch."""
        return sum(sum(d.attention) for d in self.decisions)

    @property
    def computed_fraction(self) -> float:
        """Executed over total blocks."""
        total = self.blocks_total
        return self.blocks_executed / total if total else 1.0

    @property
    def steps_total(self) -> int:
        """Transformer calls of the generation (steps times branches)."""
        return sum(len(d.blocks) for d in self.decisions)

    @property
    def computed_steps(self) -> int:
        """Calls on which every block ran."""
        return sum(len(d.computed_steps) for d in self.decisions)

    @property
    def partial_steps(self) -> int:
        """Calls on which some blocks ran."""
        return sum(len(d.partial_steps) for d in self.decisions)

    @property
    def skipped_steps(self) -> int:
        """Calls on which no block ran."""
        return sum(len(d.skipped_steps) for d in self.decisions)

    @property
    def ideal_speedup(self) -> float:
        """The speed-up of a cache with no overhead that ran :attr:`computed_fraction` of the blocks:
        ``T0 / (F + (T0 - F) * fraction)`` with ``T0`` the uncached time and ``F`` the fixed cost (the run without
        blocks). Blocks are weighted equally."""
        if not self.ok:
            return 0.0
        base, fixed = self.baseline_seconds, min(self.fixed_seconds, self.baseline_seconds)
        denom = fixed + (base - fixed) * self.computed_fraction
        return base / denom if denom > 0 else math.inf

    @property
    def efficiency(self) -> float:
        """Measured over ideal speed-up (1.0: the cache costs nothing beyond the blocks it runs)."""
        ideal = self.ideal_speedup
        return self.speedup / ideal if ideal > 0 and math.isfinite(ideal) else 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready values (non-finite numbers become null: a PSNR of null means identical samples)."""
        return {
            "name": self.method.name,
            "origin": self.method.origin,
            "family": self.method.family,
            "params": self.method.params,
            "error": self.error,
            "seconds": _finite_or_none(self.seconds),
            "all_seconds": [_finite_or_none(s) for s in self.all_seconds],
            "baseline_seconds": self.baseline_seconds,
            "fixed_seconds": self.fixed_seconds,
            "speedup": self.speedup,
            "ideal_speedup": _finite_or_none(self.ideal_speedup),
            "efficiency": self.efficiency,
            "psnr_db": _finite_or_none(self.psnr),
            "max_abs_error": _finite_or_none(self.max_abs_error),
            "reproducible": self.reproducible,
            "steps_total": self.steps_total,
            "computed_steps": self.computed_steps,
            "partial_steps": self.partial_steps,
            "skipped_steps": self.skipped_steps,
            "blocks_executed": self.blocks_executed,
            "blocks_total": self.blocks_total,
            "attention_executed": self.attention_executed,
            "computed_fraction": self.computed_fraction,
            "decisions": [d.as_dict() for d in self.decisions],
        }


@attrs.frozen
class Evaluation:
    """The results of one :func:`evaluate` call."""

    settings: EvalSettings
    baseline: RunResult
    """The uncached run (speed-up 1, PSNR inf)."""
    results: tuple[RunResult, ...]
    """One per method, in the order given."""
    fixed_seconds: float
    """Fastest run of the model without blocks."""
    torch_threads: int
    """``torch.get_num_threads()`` during the evaluation."""

    def get(self, name: str) -> RunResult:
        """The result of the method named ``name``."""
        for r in self.results:
            if r.name == name:
                return r
        raise KeyError(f"name: no result named {name!r}; known: {[r.name for r in self.results]}")

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready values."""
        return {
            "settings": self.settings.as_dict(),
            "torch_threads": self.torch_threads,
            "baseline_seconds": self.baseline.seconds,
            "fixed_seconds": self.fixed_seconds,
            "baseline": self.baseline.as_dict(),
            "results": [r.as_dict() for r in self.results],
        }


def max_abs_error(images: torch.Tensor, reference: torch.Tensor) -> float:
    """Largest absolute difference between ``images`` and ``reference``."""
    if images.shape != reference.shape:
        raise ValueError(f"images: shape {tuple(images.shape)} differs from the reference's {tuple(reference.shape)}")
    return float((images.double() - reference.double()).abs().max())
