"""The settings of one dehazing call, as one typed, validated object.

Layer: options, above ``diffusion`` (it knows the samplers) and below everything that reads user
settings: the weights registry (an entry's defaults), the pipeline (its call's keywords) and the
command line (its flags) all build a :class:`SamplingOptions`, so each value is checked here and
nowhere else, with one message.

Each field is declared once, with :func:`option`: its rule, its help text, its command-line flag
(and old spellings), and how :meth:`SamplingOptions.describe` words it. The CLI's sampling flags,
the pipeline's keywords, validation and the description all follow from that declaration.
A field whose name is a parameter of a sampler function (``eta``) reaches the samplers that take
it and is refused, with one line, for those that do not.

A field left at None means "not chosen": :meth:`SamplingOptions.with_defaults` fills it from the
weights' defaults, :meth:`SamplingOptions.resolved` from the rules of the sampler.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any, Dict, Iterator, Mapping, Optional, Tuple, Union

from .diffusion.samplers import SAMPLERS, sampler_parameters
from .utils import from_dict

__all__ = ["DEFAULT_STEPS", "FUSIONS", "MAX_SEED", "OptionSpec", "PRECISIONS", "SAMPLER_FIELDS", "SamplingOptions",
           "check_seed", "option", "option_specs"]

# Respaced steps for every sampler but the ancestral one: the usual quality plateau for SR3-type
# conditional models, 100x fewer UNet evaluations than the 2000-step reference path.
DEFAULT_STEPS = 20
FUSIONS = ("transmission",)
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# torch.Generator.manual_seed takes 64-bit values; seeds stay in the signed range every RNG accepts.
MAX_SEED = 2 ** 63 - 1


@dataclass(frozen=True)
class OptionSpec:
    """How one field of :class:`SamplingOptions` is checked, offered on the command line and worded.

    kind: ``"int"``, ``"number"``, ``"choice"`` or ``"bool"``.
    low, high: the inclusive range of a number (``low_open``: ``low`` itself excluded).
    choices: the values of a ``"choice"``.
    note: what a special value means, appended to the range in messages.
    flag, aliases: the CLI flag (default ``--field-name``) and old spellings that still work.
    describe: how :meth:`SamplingOptions.describe` words a value (``str.format`` with ``v``), or
        None when the description leaves it out; ``quiet``: values it does not word (the default).
    sampler_specific: the weights' default for it applies only to the sampler it was set for.
    follows: another field; when a call chooses that one, the weights' default for this one is not
        taken (it was set for the weights' own value of the other).
    refused_by: samplers that refuse the option (not expressible by their signature).
    """

    help: str
    kind: str
    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False
    choices: Tuple[Any, ...] = ()
    note: str = ""
    flag: Optional[str] = None
    aliases: Tuple[str, ...] = ()
    metavar: Optional[str] = None
    describe: Optional[str] = None
    quiet: Tuple[Any, ...] = ()
    sampler_specific: bool = False
    follows: Optional[str] = None
    refused_by: Tuple[str, ...] = ()


def option(help: str, kind: str, **spec: Any) -> Any:
    """A :class:`SamplingOptions` field (default None: not chosen) declared with its :class:`OptionSpec`."""
    return dataclasses.field(default=None, metadata={"option": OptionSpec(help, kind, **spec)})


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def _range_text(spec: OptionSpec) -> str:
    if spec.high is None:
        return f">= {spec.low:g}"
    return f"in {'(' if spec.low_open else '['}{spec.low:g}, {spec.high:g}]"


@dataclass(frozen=True)
class SamplingOptions:
    """What one call of the pipeline runs; each field's help says what it means. None: not chosen
    here (see the module docstring)."""

    sampler: Optional[str] = option(
        "sampler (default: the weights', else ddim)", "choice", choices=tuple(SAMPLERS))
    steps: Optional[int] = option(
        "respaced denoising steps (default: 20, the whole schedule for ddpm; 0 = stage 1 only)", "int", low=0,
        note=" (0: stage 1 only)", sampler_specific=True)
    eta: Optional[float] = option(
        "DDIM's noise scale, 0 (deterministic) to 1 (the ancestral variance)", "number", low=0, high=1,
        describe="eta {v:g}", sampler_specific=True)
    start_strength: Optional[float] = option(
        "in (0, 1]: start from J noised to this fraction of the chain, at its respaced step at or below "
        "it (1 = pure noise)", "number", low=0, high=1,
        low_open=True, metavar="S", describe="from J at {v:g}", quiet=(1,), sampler_specific=True)
    zero_mean_noise: Optional[bool] = option(
        "draw the noise without its channel mean (default: on for every sampler but ddpm)", "bool",
        sampler_specific=True, refused_by=("ddpm",))
    stage1_size: Optional[int] = option(
        "shorter side stage 1 runs at, J and T brought back to the image's size (0 = full resolution)", "int",
        low=0, note=" (0: full resolution)", metavar="N", describe="stage 1 at {v} px", quiet=(0,))
    stage1_detail: Optional[int] = option(
        "J keeps stage 1's structure coarser than N pixels (at the image's size or the size stage 1 ran at, "
        "whichever is smaller) and takes the finer detail from the hazy input divided by T (0 = stage 1's "
        "own J)", "int",
        low=0, note=" (0: stage 1's own J)", metavar="N", describe="input detail below {v} px", quiet=(0, 1))
    stage1_flip: Optional[bool] = option(
        "also run stage 1 on the left-right mirrored image and average the two answers (J, T, A); one more "
        "stage-1 pass", "bool", describe="stage 1 averaged with its mirror", quiet=(False,))
    denoise_size: Optional[int] = option(
        "shorter side the denoiser runs at; the image gets its J plus the denoiser's change, resampled "
        "to its size (0 = full resolution)", "int",
        low=0, note=" (0: full resolution)", metavar="N", describe="denoised at {v} px", quiet=(0,))
    tile_size: Optional[int] = option(
        "denoiser tile size in pixels (default: automatic)", "int", low=1, metavar="N", aliases=("--tile",),
        describe="tiles {v} px")
    tile_overlap: Optional[int] = option(
        "pixels neighbouring tiles share (default: a quarter of the tile)", "int", low=0, metavar="N",
        follows="tile_size")
    attention_window: Optional[int] = option(
        "attend within overlapping windows of N feature positions per side (0 = the whole map, the "
        "reference)", "int", low=0, note=" (0: the whole map)", metavar="N",
        describe="attention in {v}-position windows", quiet=(0,))
    samples: Optional[int] = option(
        "draw K samples in one batch; the image is their mean (the posterior mean's estimate) and "
        "res.spread their per-pixel standard deviation (default: the weights' K, set with their steps, "
        "so a call that chooses its steps gets 1; else 1)", "int", low=1, metavar="K",
        describe="mean of {v} samples", quiet=(1,), sampler_specific=True, follows="steps")
    fusion: Optional[str] = option(
        "blend J back in where the haze is thin", "choice", choices=FUSIONS)
    precision: Optional[str] = option(
        "the denoiser's arithmetic (default: auto, fp16 on CUDA, bf16 on CPUs with native bf16)", "choice",
        choices=PRECISIONS, describe="{v}")

    def __post_init__(self) -> None:
        for name, value in self.items():
            if value is not None:
                self.check(name, value)
                kind = _SPECS[name].kind
                if kind in ("int", "number"):  # numpy scalars become plain Python numbers
                    object.__setattr__(self, name, int(value) if kind == "int" else float(value))
        if self.sampler is not None:
            self._check_applies(self.sampler)
        if self.tile_size is not None and self.tile_overlap is not None and self.tile_overlap >= self.tile_size:
            raise ValueError(f"tile_overlap must be smaller than tile_size, got {self.tile_overlap} "
                             f"for tile_size {self.tile_size}")

    def items(self) -> Iterator[Tuple[str, Any]]:
        """(field name, value) of every field, None included."""
        return ((f.name, getattr(self, f.name)) for f in dataclasses.fields(self))

    # -- validation: the one place ------------------------------------------------------------
    @staticmethod
    def check(name: str, value: Any) -> None:
        """Raise ValueError with a one-line message unless ``value`` is valid for field ``name``."""
        if name not in _SPECS:
            raise ValueError(f"unknown sampling option {name!r}; known: {', '.join(_SPECS)}")
        spec = _SPECS[name]
        if spec.kind == "int" and not _is_int(value):
            raise ValueError(f"{name} must be an integer, got {value!r}")
        if spec.kind == "number" and not _is_number(value):
            raise ValueError(f"{name} must be a number, got {value!r}")
        if spec.kind in ("int", "number"):
            too_low = value <= spec.low if spec.low_open else value < spec.low
            if too_low or (spec.high is not None and value > spec.high):
                raise ValueError(f"{name} must be {_range_text(spec)}{spec.note}, got {value!r}")
            return
        choices = (True, False) if spec.kind == "bool" else spec.choices
        if isinstance(value, bool) != (spec.kind == "bool") or value not in choices:
            raise ValueError(f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}")

    def _check_applies(self, sampler: str) -> None:
        """Every chosen option must act on ``sampler``: refuse the rest with one line."""
        takes = sampler_parameters(sampler)
        for name, spec in _SPECS.items():
            value = getattr(self, name)
            if value is None:
                continue
            # a refusing sampler runs without the option anyway, so it refuses only turning it on
            if (sampler in spec.refused_by and value) or (name in _SAMPLER_PARAMETERS and name not in takes):
                users = [s for s in SAMPLERS if s not in spec.refused_by
                         and (name not in _SAMPLER_PARAMETERS or name in sampler_parameters(s))]
                raise ValueError(f"{name} does not apply to the {sampler} sampler (it acts on "
                                 f"{', '.join(users)}); leave it out or choose one of those samplers")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str = "sampling options") -> "SamplingOptions":
        """From a dict (a registry entry's ``defaults``, a call's ``options={...}``); unknown keys
        are an error naming them."""
        return from_dict(cls, data, where)

    @classmethod
    def coerce(cls, options: "Union[SamplingOptions, Mapping[str, Any], None]") -> "SamplingOptions":
        """``options`` as a SamplingOptions: itself, one built from a mapping, or an empty one."""
        if options is None:
            return cls()
        if isinstance(options, SamplingOptions):
            return options
        if isinstance(options, Mapping):
            return cls.from_mapping(options)
        raise ValueError(f"options must be a SamplingOptions or a dict of its fields, got {type(options).__name__}")

    def to_dict(self) -> dict:
        """The chosen fields only (None left out)."""
        return {k: v for k, v in self.items() if v is not None}

    # -- combining ---------------------------------------------------------------------------------
    def with_defaults(self, defaults: "SamplingOptions") -> "SamplingOptions":
        """Fields left at None taken from ``defaults`` (a weights entry's). The sampler-specific
        fields come along only when both run the same sampler, so a DDIM default never leaks into
        an ancestral run."""
        sampler = self.sampler if self.sampler is not None else defaults.sampler
        same = (defaults.sampler or "ddim") == (sampler or "ddim")

        def takes_default(name: str) -> bool:
            spec = _SPECS[name]
            return (same or not spec.sampler_specific) and (spec.follows is None or getattr(self, spec.follows) is None)

        filled = {name: getattr(defaults, name) if mine is None and takes_default(name) else mine
                  for name, mine in self.items()}
        filled["sampler"] = sampler
        return SamplingOptions(**filled)

    def resolved(self, schedule_length: int) -> "SamplingOptions":
        """Every sampling field concrete for a training schedule of ``schedule_length`` steps:
        the defaults of the field declarations applied, steps capped at the schedule's length.
        Fields that do not act on the sampler stay None (``eta`` for all but DDIM);
        ``tile_size`` stays None (chosen per image) and ``precision`` "auto" (chosen per device).
        An option chosen for a sampler it does not act on is a ValueError."""
        sampler = self.sampler or "ddim"
        self._check_applies(sampler)
        steps = self.steps if self.steps is not None else (schedule_length if sampler == "ddpm" else DEFAULT_STEPS)
        takes_eta = "eta" in sampler_parameters(sampler)
        return dataclasses.replace(
            self, sampler=sampler, steps=min(steps, schedule_length),
            eta=(self.eta if self.eta is not None else 0.0) if takes_eta else None,
            start_strength=self.start_strength if self.start_strength is not None else 1.0,
            zero_mean_noise=(self.zero_mean_noise if self.zero_mean_noise is not None
                             else sampler not in _SPECS["zero_mean_noise"].refused_by),
            stage1_size=self.stage1_size or 0, stage1_detail=self.stage1_detail or 0,
            stage1_flip=bool(self.stage1_flip),
            denoise_size=self.denoise_size or 0,
            attention_window=self.attention_window or 0, samples=self.samples or 1, precision=self.precision or "auto")

    def sampler_keywords(self) -> Dict[str, Any]:
        """The chosen options that are parameters of the sampler functions (``eta``): what
        :func:`~dehazeddpm.diffusion.sample` passes on to the sampler that takes them."""
        return {name: getattr(self, name) for name in _SAMPLER_PARAMETERS if getattr(self, name) is not None}

    def describe(self, evaluations: Optional[int] = None, started_at: Optional[float] = None) -> str:
        """One line for people: what ran (use on resolved options). ``evaluations``: the denoiser
        calls that ran, when a start below 1 ran only part of the ``steps``-step chain;
        ``started_at``: the level that run began at, said when it is not the asked start."""
        if evaluations is not None and evaluations != self.steps:
            noun = "evaluation" if evaluations == 1 else "evaluations"
            parts = [f"{self.sampler}, {evaluations} {noun} of a {self.steps}-step chain"]
        else:
            parts = [f"{self.sampler} {self.steps} step{'' if self.steps == 1 else 's'}"]
        for name, spec in _SPECS.items():
            value = getattr(self, name)
            if spec.describe and value is not None and value not in spec.quiet:
                parts.append(spec.describe.format(v=value))
                if name == "start_strength" and started_at is not None and abs(started_at - value) >= 0.005:
                    # the chain's step at or below the asked start: a short chain can land far below it
                    parts[-1] += f" (began at {started_at:.2f}, the chain's step below)"
        return ", ".join(parts)


def option_specs() -> Dict[str, OptionSpec]:
    """Field name -> :class:`OptionSpec`, in declaration order: what the CLI, the pipeline's
    keywords, validation and :meth:`SamplingOptions.describe` are generated from."""
    return dict(_SPECS)


_SPECS: Dict[str, OptionSpec] = {f.name: f.metadata["option"] for f in dataclasses.fields(SamplingOptions)}
# Fields that are parameters of some sampler function: they reach a sampler by its signature.
_SAMPLER_PARAMETERS = tuple(n for n in _SPECS if any(n in sampler_parameters(s) for s in SAMPLERS))
# Fields whose weights' default applies to the sampler it was set for only (kept for callers).
SAMPLER_FIELDS = tuple(n for n, s in _SPECS.items() if s.sampler_specific)


def check_seed(seed: Any) -> Optional[int]:
    """A call's seed as an int in [0, MAX_SEED] (None: the global RNG); anything else is a ValueError."""
    if seed is None:
        return None
    if not _is_int(seed) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be an integer in [0, 2**63 - 1], got {seed!r}")
    return int(seed)
