"""Run cache configurations on the bundled digits model and measure them the same way: the evaluation layer shared
by ``ditcache demo`` and ``ditcache bench``.

Every configuration (a :class:`Method`) is installed on its own fresh copy of the bundled model
(:func:`ditcache.bundled.load_digits_dit`) and sampled with the same labels, seed, step count and guidance
(:class:`EvalSettings`). For each one :func:`evaluate` measures:

* **work**: the transformer blocks whose body actually ran, per call, counted with forward pre-hooks on a
  submodule only the block's own forward calls (a norm or MLP projection), and the attention computations,
  counted on each attention's query projection (so a hook that replaces a block or an attention without running
  it is not counted). From these follow the per-step
  decisions of each CFG branch (:class:`BranchDecisions`): a step is *computed* when every block ran, *skipped*
  when none did, *partial* otherwise (DBCache's cached steps run only the first ``Fn`` blocks);
* **time**: the wall-clock (or CPU) time of a whole sampling run, the fastest of ``repeats`` runs; the runs of all
  configurations are interleaved in a shuffled order, so a slow phase of a shared machine does not land on one
  configuration only. The uncached model and a copy *without blocks* are timed the same way: the second gives the
  fixed cost of a run (embeddings, output head, sampler), from which :attr:`RunResult.ideal_speedup` follows;
* **quality** against the uncached samples: PSNR over the data range of the images (they are in [0, 1], so
  ``PSNR = 10 log10(1 / MSE)``) and the largest absolute pixel error.

Results are attrs classes with ``as_dict()`` for JSON.
"""

from __future__ import annotations

import copy
import gc
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import nn

from ditcache.bundled import DigitsDiT, load_digits_dit, sample
from ditcache.core.validators import check_keys
from ditcache.profiles import Profile

__all__ = [
    "PROFILE_MODEL",
    "TIMERS",
    "BeforeRun",
    "BlockCounter",
    "BranchDecisions",
    "EvalSettings",
    "Evaluation",
    "InstallFn",
    "Method",
    "RunResult",
    "calibrate_magcache",
    "config_params",
    "evaluate",
    "evaluation_units",
    "max_abs_error",
    "ours",
    "psnr",
]

TIMERS = ("wall", "cpu")
"""How runs are timed: ``"wall"`` (``time.perf_counter``) or ``"cpu"`` (``time.process_time``: the CPU time of
this process, all threads; steadier than wall time on a busy machine, meaningful on the CPU only)."""


# ---------------------------------------------------------------------------------------------- settings
def _labels(value: Any) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or isinstance(value, Mapping):
        raise TypeError(f"EvalSettings.labels: expected a sequence of class labels 0-9, got {value!r}")
    try:
        out = tuple(value)
    except TypeError:
        raise TypeError(f"EvalSettings.labels: expected a sequence of class labels 0-9, got {value!r}") from None
    return out  # type: ignore[return-value]


def _check_labels(inst: Any, attribute: attrs.Attribute[Any], value: tuple[Any, ...]) -> None:
    if not value:
        raise ValueError("EvalSettings.labels: expected at least one label")
    bad = [v for v in value if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 9]
    if bad:
        raise ValueError(f"EvalSettings.labels: allowed values are the digits 0..9, got {bad[:3]}")


def _int_at_least(low: int) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    def check(inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"EvalSettings.{attribute.name}: expected an int >= {low}, got {value!r}")

    return check


def _check_guidance(inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"EvalSettings.guidance_scale: expected None (no guidance) or a number > 0, got {value!r}")
    if value == 1.0:
        raise ValueError("EvalSettings.guidance_scale: 1.0 is the same as no guidance; pass None instead")


def _check_shift(inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"EvalSettings.shift: expected a finite number > 0, got {value!r}")


def _check_timer(inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value not in TIMERS:
        raise ValueError(f"EvalSettings.timer: expected one of {list(TIMERS)}, got {value!r}")


@attrs.frozen(kw_only=True)
class EvalSettings:
    """What every configuration of one evaluation is run with."""

    labels: tuple[int, ...] = attrs.field(default=tuple(range(10)), converter=_labels, validator=_check_labels)
    """One image per label (digits 0-9), generated as one batch."""
    seed: int = attrs.field(default=0, validator=_int_at_least(0))
    """Seed of the initial noise."""
    num_steps: int = attrs.field(default=50, validator=_int_at_least(2))
    """Euler steps per generation."""
    guidance_scale: float | None = attrs.field(default=3.0, validator=_check_guidance)
    """Classifier-free guidance scale (a separate ``"uncond"`` call per step), or None for no guidance."""
    shift: float = attrs.field(default=1.0, validator=_check_shift)
    """Static sigma-schedule shift of the sampler (1.0: uniform steps)."""
    repeats: int = attrs.field(default=3, validator=_int_at_least(1))
    """Timed runs of every configuration; the fastest counts."""
    timer: str = attrs.field(default="wall", validator=_check_timer)
    """``"wall"`` or ``"cpu"`` (see :data:`TIMERS`)."""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvalSettings:
        """Build from a mapping; an unknown key is an error naming the allowed ones."""
        check_keys(cls, data)
        return cls(**data)

    @property
    def guided(self) -> bool:
        """Whether every step makes a second, ``"uncond"`` transformer call."""
        return self.guidance_scale is not None

    @property
    def branches(self) -> tuple[str, ...]:
        """The CFG branches, in the order the sampler calls them within a step."""
        return ("cond", "uncond") if self.guided else ("cond",)

    def as_dict(self) -> dict[str, Any]:
        """The settings as JSON-ready values."""
        out = attrs.asdict(self)
        out["labels"] = list(self.labels)
        return out


# ---------------------------------------------------------------------------------------------- methods
BeforeRun = Callable[[], None]
"""Called before every sampling run of a configuration (e.g. a peer's explicit cache reset)."""

InstallFn = Callable[[DigitsDiT, EvalSettings], "BeforeRun | None"]
"""Installs a configuration on a fresh model copy; returns what to call before each run, or None."""


def _no_install(model: DigitsDiT, settings: EvalSettings) -> None:
    return None


def _check_origin(inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value not in ("ours", "peer", "baseline"):
        raise ValueError(f"Method.origin: expected 'ours', 'peer' or 'baseline', got {value!r}")


def _check_name(inst: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"Method.{attribute.name}: expected a non-empty string, got {value!r}")


@attrs.frozen
class Method:
    """One configuration to evaluate: a name, where it comes from, its settings and how to install it."""

    name: str = attrs.field(validator=_check_name)
    """Unique label (table rows, JSON keys, plot labels)."""
    origin: str = attrs.field(validator=_check_origin)
    """``"ours"`` (a ditcache cache), ``"peer"`` (diffusers, cache-dit) or ``"baseline"`` (uncached)."""
    family: str = attrs.field(validator=_check_name)
    """Group for plots and tables, e.g. ``"magcache"``, ``"diffusers-fbc"``."""
    params: dict[str, Any] = attrs.field(factory=dict)
    """JSON-ready settings (what the results report)."""
    install: InstallFn = attrs.field(default=_no_install, eq=False, repr=False)
    """Applies the configuration to ``model.transformer`` of a fresh copy."""


def config_params(config: Any) -> dict[str, Any]:
    """The fields of an attrs config that differ from their defaults, as JSON-ready values."""
    out: dict[str, Any] = {}
    for field in attrs.fields(type(config)):
        if field.name.startswith("_"):  # a private field mirrors public ones (the nested forecast: taylorseer_*)
            continue
        value = getattr(config, field.name)
        default = field.default
        if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
            default = default.factory()  # type: ignore[attr-defined]
        if value == default:
            continue
        if isinstance(value, tuple):
            value = list(value)
        out[field.name] = value
    return out


def ours(name: str, *configs: Any, family: str | None = None) -> Method:
    """A ditcache configuration: the caches of ``configs`` applied in order to ``model.transformer``.

    Each config is a :class:`~ditcache.TeaCacheConfig`, :class:`~ditcache.MagCacheConfig` or
    :class:`~ditcache.DBCacheConfig`; two of them stack (a step-level cache over DBCache). ``family`` defaults to
    the cache names joined by ``+`` (outermost first).
    """
    from ditcache.caches.dbcache import DBCacheConfig, apply_dbcache_hook
    from ditcache.caches.magcache import MagCacheConfig, apply_magcache_hook
    from ditcache.caches.teacache import TeaCacheConfig, apply_teacache_hook

    appliers: list[tuple[str, Callable[[nn.Module, Any], Any]]] = []
    for cfg in configs:
        if isinstance(cfg, TeaCacheConfig):
            appliers.append(("teacache", apply_teacache_hook))
        elif isinstance(cfg, MagCacheConfig):
            appliers.append(("magcache", apply_magcache_hook))
        elif isinstance(cfg, DBCacheConfig):
            appliers.append(("dbcache", apply_dbcache_hook))
        else:
            raise TypeError(
                f"configs: expected TeaCacheConfig, MagCacheConfig or DBCacheConfig instances, got {type(cfg).__name__}"
            )
    if not configs:
        raise ValueError("configs: give at least one cache config")
    names = [n for n, _ in appliers]
    params = {n: config_params(cfg) for n, cfg in zip(names, configs)}

    def install(model: DigitsDiT, settings: EvalSettings) -> None:
        for (_, apply), cfg in zip(appliers, configs):
            apply(model.transformer, cfg)
        return None  # the sampler refreshes the caches with the step count before every run

    return Method(name, "ours", family or "+".join(names), params, install)


# ---------------------------------------------------------------------------------------------- counting
def _block_list(transformer: nn.Module) -> list[nn.Module]:
    blocks: list[nn.Module] = []
    for attr in ("transformer_blocks", "single_transformer_blocks"):
        blocks.extend(getattr(transformer, attr, ()))
    return blocks


_BODY_PROBES = ("norm1_context", "proj_mlp", "ff", "norm2", "norm1", "norm")
"""Submodules that only a block's own forward calls, in order of preference. The first norm of the first block is
not first choice: TeaCache's indicator (the modulated input) calls it on every step, skipped or not."""


def _probe_modules(block: nn.Module) -> tuple[nn.Module, nn.Module | None]:
    probe = next((m for m in (getattr(block, n, None) for n in _BODY_PROBES) if isinstance(m, nn.Module)), None)
    if probe is None:
        raise TypeError(f"block {type(block).__name__}: none of {list(_BODY_PROBES)} to count its executions")
    attn = getattr(block, "attn", None)
    query = getattr(attn, "to_q", None) if attn is not None else None
    return probe, query if isinstance(query, nn.Module) else None


class BlockCounter:
    """Counts, per transformer call, the blocks whose body ran and the attentions computed.

    A forward pre-hook on the transformer opens a new call; pre-hooks on a submodule that only each block's own
    forward calls (``norm1_context`` of Flux's double-stream blocks, ``proj_mlp`` of its single-stream ones) and
    on each attention's ``to_q`` count what really ran. Use as a context manager; :attr:`calls` holds
    ``[blocks, attentions]`` per call.
    """

    def __init__(self, transformer: nn.Module) -> None:
        self.transformer = transformer
        self.blocks = _block_list(transformer)
        if not self.blocks:
            raise ValueError(f"transformer: {type(transformer).__name__} has no transformer blocks to count")
        self.num_attention = 0
        self.calls: list[list[int]] = []
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    @property
    def num_blocks(self) -> int:
        """Blocks of the model."""
        return len(self.blocks)

    def _open_call(self, module: nn.Module, args: Any) -> None:
        self.calls.append([0, 0])

    def _count(self, slot: int) -> Callable[[nn.Module, Any], None]:
        def hook(module: nn.Module, args: Any) -> None:
            if not self.calls:
                raise RuntimeError("BlockCounter: a block ran outside a transformer call")
            self.calls[-1][slot] += 1

        return hook

    def __enter__(self) -> BlockCounter:
        self.calls = []
        self._handles.append(self.transformer.register_forward_pre_hook(self._open_call))
        count_block, count_attn = self._count(0), self._count(1)
        self.num_attention = 0
        for block in self.blocks:
            norm, query = _probe_modules(block)
            self._handles.append(norm.register_forward_pre_hook(count_block))
            if query is not None:
                self.num_attention += 1
                self._handles.append(query.register_forward_pre_hook(count_attn))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


# ---------------------------------------------------------------------------------------------- results
@attrs.frozen
class BranchDecisions:
    """What ran in one CFG branch, step by step."""

    branch: str
    """``"cond"`` or ``"uncond"``."""
    blocks: tuple[int, ...]
    """Blocks whose body ran, per step."""
    attention: tuple[int, ...]
    """Attentions computed, per step."""
    num_blocks: int
    """Blocks of the model (a computed step runs all of them)."""

    @property
    def computed_steps(self) -> list[int]:
        """Steps on which every block ran."""
        return [i for i, b in enumerate(self.blocks) if b >= self.num_blocks]

    @property
    def skipped_steps(self) -> list[int]:
        """Steps on which no block ran."""
        return [i for i, b in enumerate(self.blocks) if b == 0]

    @property
    def partial_steps(self) -> list[int]:
        """Steps on which some blocks, not all, ran."""
        return [i for i, b in enumerate(self.blocks) if 0 < b < self.num_blocks]

    @property
    def pattern(self) -> str:
        """One character per step: ``C`` computed, ``-`` skipped, the number of blocks run otherwise."""
        return "".join(
            "C" if b >= self.num_blocks else "-" if b == 0 else str(b) if b < 10 else "+" for b in self.blocks
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready values."""
        return {
            "branch": self.branch,
            "pattern": self.pattern,
            "blocks": list(self.blocks),
            "attention": list(self.attention),
            "computed_steps": len(self.computed_steps),
            "partial_steps": len(self.partial_steps),
            "skipped_steps": len(self.skipped_steps),
        }


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
    """PSNR (dB) of the samples against the uncached ones over the data range [0, 1]; ``inf`` when identical."""
    max_abs_error: float
    """Largest absolute pixel difference against the uncached samples."""
    reproducible: bool
    """Whether every timed run gave exactly the samples of the first run (a cache that leaks state between runs
    does not)."""
    images: torch.Tensor | None = attrs.field(default=None, eq=False, repr=False)
    """The samples ``(B, 16, 16)`` of the first run."""
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


# ---------------------------------------------------------------------------------------------- metrics
def psnr(images: torch.Tensor, reference: torch.Tensor, data_range: float = 1.0) -> float:
    """PSNR in dB of ``images`` against ``reference`` over ``data_range`` (``inf`` when they are identical)."""
    if images.shape != reference.shape:
        raise ValueError(f"images: shape {tuple(images.shape)} differs from the reference's {tuple(reference.shape)}")
    if not data_range > 0:
        raise ValueError(f"data_range: expected a number > 0, got {data_range!r}")
    mse = float(((images.double() - reference.double()) ** 2).mean())
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(data_range**2 / mse)


def max_abs_error(images: torch.Tensor, reference: torch.Tensor) -> float:
    """Largest absolute difference between ``images`` and ``reference``."""
    if images.shape != reference.shape:
        raise ValueError(f"images: shape {tuple(images.shape)} differs from the reference's {tuple(reference.shape)}")
    return float((images.double() - reference.double()).abs().max())


# ---------------------------------------------------------------------------------------------- calibration
PROFILE_MODEL = "ditcache-digits-dit"
"""The model name calibrated profiles of the bundled model carry."""


def calibrate_magcache(
    model: DigitsDiT, settings: EvalSettings, *, seed: int | None = None, path: str | Path | None = None
) -> Profile:
    """Calibrate MagCache's magnitude-ratio curves (one per CFG branch) on a copy of ``model``.

    One uncached generation with ``settings``' labels, steps and guidance, from ``seed`` (default: a seed other
    than the evaluation's, so the curve is not fitted to the very samples it is judged on). Returns the profile;
    with ``path`` it is also written there (load it with ``MagCacheConfig(profile=path)``).
    """
    from ditcache.caches.magcache import MagCache, MagCacheConfig, apply_magcache_hook

    calibration_seed = settings.seed + 1000 if seed is None else seed
    work = copy.deepcopy(model)
    cache = apply_magcache_hook(work.transformer, MagCacheConfig(calibrate=True))
    assert isinstance(cache, MagCache)
    sample(
        work,
        list(settings.labels),
        settings.num_steps,
        settings.guidance_scale,
        calibration_seed,
        shift=settings.shift,
    )
    meta = {
        "calibration_seed": calibration_seed,
        "labels": list(settings.labels),
        "guidance_scale": settings.guidance_scale,
        "shift": settings.shift,
        "sampler": "ditcache.bundled.sample (Euler flow matching)",
    }
    profile = cache.calibration_profile(model=PROFILE_MODEL, metadata=meta)
    if path is not None:
        cache.save_profile(path, model=PROFILE_MODEL, metadata=meta)
    return profile


# ---------------------------------------------------------------------------------------------- evaluation
def evaluation_units(num_methods: int, settings: EvalSettings) -> int:
    """Progress units :func:`evaluate` reports: one per sampling run (first run and timed runs of every method,
    the baseline and the block-less copy)."""
    return (num_methods + 1) * (1 + settings.repeats) + settings.repeats


@attrs.define
class _Entry:
    method: Method
    model: DigitsDiT | None
    before: BeforeRun | None
    error: str | None = None
    images: torch.Tensor | None = None
    calls: list[list[int]] = attrs.field(factory=list)
    seconds: list[float] = attrs.field(factory=list)
    reproducible: bool = True


def _clock(timer: str) -> Callable[[], float]:
    return time.perf_counter if timer == "wall" else time.process_time


def _run(entry_model: DigitsDiT, before: BeforeRun | None, settings: EvalSettings) -> torch.Tensor:
    if before is not None:
        before()
    return sample(
        entry_model,
        list(settings.labels),
        settings.num_steps,
        settings.guidance_scale,
        settings.seed,
        shift=settings.shift,
    )


def _without_blocks(model: DigitsDiT) -> DigitsDiT:
    bare = copy.deepcopy(model)
    tf = bare.transformer
    for attr in ("transformer_blocks", "single_transformer_blocks"):
        if hasattr(tf, attr):
            setattr(tf, attr, nn.ModuleList())
    return bare


def _decisions(calls: list[list[int]], settings: EvalSettings, num_blocks: int) -> tuple[BranchDecisions, ...]:
    branches = settings.branches
    expected = settings.num_steps * len(branches)
    if len(calls) != expected:
        raise RuntimeError(
            f"expected {expected} transformer calls ({settings.num_steps} steps x {len(branches)} branches), "
            f"counted {len(calls)}"
        )
    out = []
    for k, name in enumerate(branches):
        mine = calls[k :: len(branches)]
        out.append(BranchDecisions(name, tuple(c[0] for c in mine), tuple(c[1] for c in mine), num_blocks))
    return tuple(out)


def evaluate(
    methods: Sequence[Method],
    settings: EvalSettings | None = None,
    *,
    model: DigitsDiT | None = None,
    progress: Callable[[str], None] | None = None,
    shuffle_seed: int = 0,
) -> Evaluation:
    """Run every method and the uncached model with ``settings``; see the module docstring for what is measured.

    ``model`` is the model to copy (default: a fresh :func:`~ditcache.bundled.load_digits_dit`); it is never
    modified. ``progress`` is called with a short description after every sampling run
    (:func:`evaluation_units` of them). A method whose installation or first run raises is reported with its
    :attr:`RunResult.error` instead of stopping the evaluation.
    """
    settings = settings if settings is not None else EvalSettings()
    names = [m.name for m in methods]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"methods: names must be unique, repeated: {dupes}")
    base = model if model is not None else load_digits_dit()
    from ditcache.core.runtime import get_cache_runtime

    runtime = get_cache_runtime(base.transformer)
    if runtime is not None and runtime.middlewares:
        raise ValueError(
            f"model: caches {[m.name for m in runtime.middlewares]} are applied to model.transformer; pass an "
            "uncached model (ditcache.remove_cache(model.transformer)): it is the uncached reference"
        )
    base = copy.deepcopy(base).eval()  # never touch the caller's model (caches install hooks on copies)
    tick = progress if progress is not None else (lambda _: None)

    baseline_method = Method("uncached", "baseline", "uncached")
    entries = [_Entry(baseline_method, copy.deepcopy(base), None)]
    for method in methods:
        work = copy.deepcopy(base)
        try:
            before = method.install(work, settings)
            entries.append(_Entry(method, work, before))
        except Exception as exc:  # a peer that cannot run here is reported, not fatal
            entries.append(_Entry(method, None, None, error=f"install: {type(exc).__name__}: {exc}"))
    bare = _without_blocks(base)

    num_blocks = len(_block_list(base.transformer))
    with torch.inference_mode():
        # First run of every configuration: decisions, samples, and the warm-up of its code paths.
        for entry in entries:
            if entry.model is not None:
                try:
                    with BlockCounter(entry.model.transformer) as counter:
                        entry.images = _run(entry.model, entry.before, settings)
                    entry.calls = counter.calls
                    _decisions(entry.calls, settings, num_blocks)
                except Exception as exc:
                    entry.error = f"run: {type(exc).__name__}: {exc}"
                    entry.model = None
            tick(f"first run: {entry.method.name}")
        _run(bare, None, settings)  # warm-up of the block-less copy
        # Timed runs, interleaved in a shuffled order per round.
        clock = _clock(settings.timer)
        rng = random.Random(shuffle_seed)
        timed: list[_Entry | None] = [e for e in entries if e.model is not None]
        timed.append(None)  # the block-less copy
        bare_seconds: list[float] = []
        gc_was_enabled = gc.isenabled()
        gc.collect()
        try:
            for r in range(settings.repeats):
                order = list(timed)
                rng.shuffle(order)
                for item in order:
                    gc.collect(1)  # the young generations only: a full collection takes ~0.3 s with diffusers loaded
                    gc.disable()
                    target = bare if item is None else item.model
                    assert target is not None
                    before = None if item is None else item.before
                    start = clock()
                    images = _run(target, before, settings)
                    elapsed = clock() - start
                    if gc_was_enabled:
                        gc.enable()
                    if item is None:
                        bare_seconds.append(elapsed)
                        tick(f"timed run {r + 1}/{settings.repeats}: without blocks")
                        continue
                    item.seconds.append(elapsed)
                    if item.images is not None and not torch.equal(images, item.images):
                        item.reproducible = False
                    tick(f"timed run {r + 1}/{settings.repeats}: {item.method.name}")
        finally:
            if gc_was_enabled:
                gc.enable()

    fixed = min(bare_seconds)
    reference = entries[0].images
    assert reference is not None
    base_seconds = min(entries[0].seconds)

    def result(entry: _Entry) -> RunResult:
        if entry.error is not None or entry.images is None:
            return RunResult(
                method=entry.method,
                seconds=math.inf,
                all_seconds=(),
                baseline_seconds=base_seconds,
                fixed_seconds=fixed,
                decisions=(),
                psnr=math.nan,
                max_abs_error=math.nan,
                reproducible=False,
                error=entry.error or "no samples",
            )
        return RunResult(
            method=entry.method,
            seconds=min(entry.seconds),
            all_seconds=tuple(entry.seconds),
            baseline_seconds=base_seconds,
            fixed_seconds=fixed,
            decisions=_decisions(entry.calls, settings, num_blocks),
            psnr=psnr(entry.images, reference),
            max_abs_error=max_abs_error(entry.images, reference),
            reproducible=entry.reproducible,
            images=entry.images,
        )

    return Evaluation(
        settings=settings,
        baseline=result(entries[0]),
        results=tuple(result(e) for e in entries[1:]),
        fixed_seconds=fixed,
        torch_threads=torch.get_num_threads(),
    )
