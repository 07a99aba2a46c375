"""The settings of one dehazing call, as one typed, validated object.

Layer: options, above ``diffusion`` (it knows the sampler names) and below everything that reads
user settings: the weights registry (an entry's defaults), the pipeline (its call's keywords) and
the command line (its flags) all build a :class:`SamplingOptions`, so each value is checked here
and nowhere else, with one message.

A field left at None means "not chosen": :meth:`SamplingOptions.with_defaults` fills it from the
weights' defaults, :meth:`SamplingOptions.resolved` from the rules of the sampler.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from .diffusion.samplers import ETA_SAMPLERS, SAMPLERS

__all__ = ["DEFAULT_STEPS", "FUSIONS", "MAX_SEED", "PRECISIONS", "SAMPLER_FIELDS", "SamplingOptions", "check_seed"]

# Respaced steps for every sampler but the ancestral one: the usual quality plateau for SR3-type
# conditional models, 100x fewer UNet evaluations than the 2000-step reference path.
DEFAULT_STEPS = 20
FUSIONS = ("transmission",)
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# Fields whose meaning depends on the sampler: weights' defaults for them apply to that sampler only.
SAMPLER_FIELDS = ("steps", "eta", "start_strength", "zero_mean_noise")
# torch.Generator.manual_seed takes 64-bit values; seeds stay in the signed range every RNG accepts.
MAX_SEED = 2 ** 63 - 1
# Integer fields: their least value and what a special value means.
_INT_RULES = {"steps": (0, " (0: stage 1 only)"), "stage1_size": (0, " (0: full resolution)"),
              "tile_size": (1, ""), "tile_overlap": (0, ""), "attention_window": (0, " (0: the whole map)")}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@dataclass(frozen=True)
class SamplingOptions:
    """What one call of the pipeline runs. None: not chosen here (see the module docstring).

    sampler: a name of :data:`~dehazeddpm.diffusion.samplers.SAMPLERS` (None: the weights', else ``"ddim"``).
    steps: respaced sampling steps, >= 0; 0 returns stage 1's J; None: :data:`DEFAULT_STEPS`, or the
        whole schedule for ``"ddpm"`` (the reference path).
    eta: DDIM's noise scale in [0, 1] (0 deterministic, 1 the ancestral variance).
    start_strength: in (0, 1]; < 1 starts from J noised to that fraction of the chain.
    zero_mean_noise: draw the noise without its channel mean (None: on for every sampler but ddpm).
    stage1_size: shorter side stage 1 runs at, >= 0; 0 is full resolution (the reference).
    tile_size, tile_overlap: denoiser tiles in pixels (None: chosen per image and device).
    attention_window: attend within overlapping windows of this many feature positions per side,
        >= 0 (0: the whole map, the reference); for weights whose attention saw only small maps.
    fusion: None, or ``"transmission"`` (blend J back in where the haze is thin).
    precision: ``"auto"``, ``"fp32"``, ``"bf16"`` or ``"fp16"``: the denoiser's arithmetic
        (stage 1 follows it into fp16 only; see ``inference.device``).
    """

    sampler: Optional[str] = None
    steps: Optional[int] = None
    eta: Optional[float] = None
    start_strength: Optional[float] = None
    zero_mean_noise: Optional[bool] = None
    stage1_size: Optional[int] = None
    tile_size: Optional[int] = None
    tile_overlap: Optional[int] = None
    attention_window: Optional[int] = None
    fusion: Optional[str] = None
    precision: Optional[str] = None

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None:
                self.check(f.name, value)
        if self.sampler == "ddpm" and self.zero_mean_noise:
            raise ValueError("zero_mean_noise is a DDIM option; the ancestral sampler stays the reference")
        if self.tile_size is not None and self.tile_overlap is not None and self.tile_overlap >= self.tile_size:
            raise ValueError(f"tile_overlap must be smaller than tile_size, got {self.tile_overlap} "
                             f"for tile_size {self.tile_size}")

    # -- validation: the one place ------------------------------------------------------------
    @staticmethod
    def check(name: str, value: Any) -> None:
        """Raise ValueError with a one-line message unless ``value`` is valid for field ``name``."""
        if name in _INT_RULES:
            low, note = _INT_RULES[name]
            if not _is_int(value):
                raise ValueError(f"{name} must be an integer, got {value!r}")
            if value < low:
                raise ValueError(f"{name} must be >= {low}{note}, got {value!r}")
            return
        if name in ("eta", "start_strength"):
            if not _is_number(value):
                raise ValueError(f"{name} must be a number, got {value!r}")
            ok = 0 <= value <= 1 if name == "eta" else 0 < value <= 1
            if not ok:
                raise ValueError(f"{name} must be in {'[0, 1]' if name == 'eta' else '(0, 1]'}, got {value!r}")
            return
        choices = {"sampler": tuple(SAMPLERS), "fusion": FUSIONS, "precision": PRECISIONS,
                   "zero_mean_noise": (True, False)}.get(name)
        if choices is None:
            raise ValueError(f"unknown sampling option {name!r}; known: "
                             f"{', '.join(f.name for f in dataclasses.fields(SamplingOptions))}")
        if isinstance(value, bool) != (name == "zero_mean_noise") or value not in choices:
            raise ValueError(f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str = "sampling options") -> "SamplingOptions":
        """From a dict (a registry entry's ``defaults``); unknown keys are an error naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{where}: unknown keys {unknown}; known: {sorted(known)}")
        return cls(**dict(data))

    def to_dict(self) -> dict:
        """The chosen fields only (None left out)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    # -- combining ---------------------------------------------------------------------------------
    def with_defaults(self, defaults: "SamplingOptions") -> "SamplingOptions":
        """Fields left at None taken from ``defaults`` (a weights entry's). The sampler-specific
        fields (:data:`SAMPLER_FIELDS`) come along only when both run the same sampler, so a
        DDIM default never leaks into an ancestral run."""
        sampler = self.sampler if self.sampler is not None else defaults.sampler
        same = (defaults.sampler or "ddim") == (sampler or "ddim")
        filled = {}
        for f in dataclasses.fields(self):
            mine = getattr(self, f.name)
            if mine is None and (same or f.name not in SAMPLER_FIELDS):
                filled[f.name] = getattr(defaults, f.name)
            else:
                filled[f.name] = mine
        filled["sampler"] = sampler
        return SamplingOptions(**filled)

    def resolved(self, schedule_length: int) -> "SamplingOptions":
        """Every sampling field concrete for a training schedule of ``schedule_length`` steps:
        the defaults of the module docstring applied, steps capped at the schedule's length.
        ``tile_size`` stays None (chosen per image) and ``precision`` "auto" (chosen per device)."""
        sampler = self.sampler or "ddim"
        steps = self.steps if self.steps is not None else (schedule_length if sampler == "ddpm" else DEFAULT_STEPS)
        return dataclasses.replace(
            self, sampler=sampler, steps=min(steps, schedule_length),
            eta=(self.eta if self.eta is not None else 0.0) if sampler in ETA_SAMPLERS else 0.0,
            start_strength=self.start_strength if self.start_strength is not None else 1.0,
            zero_mean_noise=self.zero_mean_noise if self.zero_mean_noise is not None else sampler != "ddpm",
            stage1_size=self.stage1_size or 0, attention_window=self.attention_window or 0,
            precision=self.precision or "auto")

    def describe(self, evaluations: Optional[int] = None) -> str:
        """One line for people: what ran (use on resolved options). ``evaluations``: the denoiser
        calls that ran, when a start below 1 ran only part of the ``steps``-step chain."""
        if evaluations is not None and evaluations != self.steps:
            noun = "evaluation" if evaluations == 1 else "evaluations"
            parts = [f"{self.sampler}, {evaluations} {noun} of a {self.steps}-step chain"]
        else:
            parts = [f"{self.sampler} {self.steps} steps"]
        if self.sampler in ETA_SAMPLERS:
            parts.append(f"eta {self.eta:g}")
        if self.start_strength is not None and self.start_strength < 1:
            parts.append(f"from J at {self.start_strength:g}")
        if self.stage1_size:
            parts.append(f"stage 1 at {self.stage1_size} px")
        if self.tile_size:
            parts.append(f"tiles {self.tile_size} px")
        if self.attention_window:
            parts.append(f"attention in {self.attention_window}-position windows")
        if self.precision:
            parts.append(self.precision)
        return ", ".join(parts)


def check_seed(seed: Any) -> Optional[int]:
    """A call's seed as an int in [0, MAX_SEED] (None: the global RNG); anything else is a ValueError."""
    if seed is None:
        return None
    if not _is_int(seed) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be an integer in [0, 2**63 - 1], got {seed!r}")
    return seed
