"""The training configuration: every setting of a run, as one dataclass that reads JSON."""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Dict, List, Optional

from ..data.photos import PHOTO_SPLITS
from ..diffusion.loss import FREQUENCY_WEIGHT
from ..diffusion.schedule import RELEASED_SCHEDULE
from ..io.reference_config import load_json_with_comments
from ..models.unet import DEMO_UNET, UNetConfig
from ..options import PRECISIONS
from ..utils import check_keys, from_dict

__all__ = ["DEFAULT_LOSS_WEIGHTS", "DEFAULT_UNET", "DenoiserSettings", "RunSettings", "STAGES", "Stage1Settings",
           "TRAIN_PRECISIONS", "TrainConfig"]

STAGES = ("stage1", "denoiser")
TRAIN_PRECISIONS = PRECISIONS
# A run's denoiser unless its config says otherwise: the demo's, small enough to train on a CPU.
DEFAULT_UNET = DEMO_UNET.to_dict()
# "colour" (not in the reference's loss, hence 0): L1 between J's and the ground truth's mean colour
DEFAULT_LOSS_WEIGHTS = {"J": 1.0, "coarse": 1.0, "I": 1.0, "T": 1.0, "A": 1.0, "colour": 0.0}


# Ranges of the numeric settings: (least, greatest, least excluded); None: unbounded.
_RANGES = {"crop": (16, None, False), "batch_size": (1, None, False), "steps": (1, None, False),
           "lr": (0, None, False), "seed": (0, None, False), "val_every": (0, None, False),
           "save_every": (0, None, False), "log_every": (0, None, False), "num_val": (1, None, False),
           "val_crop": (16, None, False), "num_workers": (0, None, False), "grad_clip": (0, None, True),
           "min_scale": (0, 1, True), "ema_decay": (0, 1, False), "max_minutes": (0, None, True),
           "val_sampler_steps": (1, None, False), "condition_pool": (0, None, False),
           "accumulate": (1, None, False)}


def _type_error(name: str, value: Any, kind: str) -> Optional[str]:
    """Why ``value`` is not of the annotated ``kind`` (a string: ``"int"``, ``"Optional[float]"`` ...)."""
    if kind.startswith("Optional["):
        return None if value is None else _type_error(name, value, kind[len("Optional["):-1])
    if kind == "bool":
        ok = isinstance(value, bool)
    elif kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind == "float":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    elif kind == "str":
        ok = isinstance(value, str)
    elif kind.startswith("Dict["):
        ok = isinstance(value, dict)
    elif kind.startswith("List[int]"):
        ok = isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    else:
        ok = True
    return None if ok else f"{name} must be {'a finite number' if kind == 'float' else kind.lower()}, got {value!r}"


def check_values(cfg: Any) -> None:
    """Every field of a training config against its annotated type and its range: a ValueError
    with one line per problem, before anything runs."""
    problems = [p for f in fields(cfg) if (p := _type_error(f.name, getattr(cfg, f.name), str(f.type)))]
    for name, (low, high, open_low) in _RANGES.items():
        value = getattr(cfg, name, None)
        if value is None or any(p.startswith(f"{name} ") for p in problems):
            continue
        if (value <= low if open_low else value < low) or (high is not None and value > high):
            rng = f"{'(' if open_low else '['}{low}, {high if high is not None else 'inf'}{']' if high is not None else ')'}"
            problems.append(f"{name} must be in {rng}, got {value!r}")
    if problems:
        raise ValueError("bad training config: " + "; ".join(problems))


@dataclass
class RunSettings:
    """What both stages read: the data, the optimiser, the run's folder and its schedule of saves.

    ``data``: ``"synthetic"`` (hazy crops of ``photos``: ``"train"``, the 16 built-in training
    photos, ``"train_all"``, those and glymur's two, ``"train_wide"``, those and seven wallpaper
    photos (``assets/photos``), or a folder of your own clear photos),
    ``"folder"`` (``hazy_dir``/``gt_dir`` pairs) or
    ``"dataset"``: the training split (every image but the test split's) of a public dataset the
    eval readers know (``dataset``, e.g. ``"nh-haze"``, unpacked at ``root``). ``steps`` counts optimiser steps; ``val_every``/``save_every``
    of 0 mean "only at the end". ``max_minutes`` stops early (checkpoint written) when the wall
    time runs out. ``ema_decay`` None disables the EMA; with it the checkpoints hold EMA weights.
    ``min_scale``: synthetic crops are taken at a random scale in [min_scale, 1] of the photo.
    ``lr_schedule``: ``"constant"`` (the reference) or ``"cosine"`` (decays to ``lr / 20`` at
    ``steps``). ``augment`` (synthetic data): random channel order and depth power per crop;
    ``random_depth``: the fraction of crops hazed over a random smooth depth field;
    ``nonhomogeneous``: the fraction with non-homogeneous haze, ``dense_share`` of those "dense";
    ``airlight_cast``: the fraction of the other (depth-hazed) crops whose airlight is cast towards
    smog or mist instead of near-grey; ``scene_tint``: the fraction of crops whose clear image is put
    under a random white balance before hazing (a tinted scene to keep, not a cast to remove).
    ``init_checkpoint``: start from these weights (same architecture, loaded strictly), i.e.
    fine-tune; when resuming, the resume file's weights replace them.
    ``precision``: the arithmetic of the forward pass, the inference policy's names: ``auto`` is
    fp16 autocast with a gradient scaler on CUDA, bf16 autocast on CPUs with native bf16, else
    fp32; the weights, the optimiser, the EMA and the loss (its FFT term) stay fp32. An fp16 step
    whose gradients overflow is skipped by the scaler, counted and logged.
    ``accumulate``: batches of ``batch_size`` per optimiser step (the step sees
    ``batch_size * accumulate`` samples, in the order an unaccumulated run of that batch sees them).
    """

    stage: str = "stage1"
    data: str = "synthetic"
    photos: str = "train"
    hazy_dir: Optional[str] = None
    gt_dir: Optional[str] = None
    dataset: Optional[str] = None
    root: Optional[str] = None
    crop: int = 64
    min_scale: float = 0.5
    batch_size: int = 4
    steps: int = 1000
    lr: float = 2e-4
    lr_schedule: str = "constant"
    seed: int = 0
    ema_decay: Optional[float] = None
    val_every: int = 0
    save_every: int = 0
    log_every: int = 10
    out_dir: str = "runs/train"
    num_val: int = 4
    val_crop: Optional[int] = None
    num_workers: int = 0
    grad_clip: Optional[float] = None
    augment: bool = False
    random_depth: float = 0.0
    init_checkpoint: Optional[str] = None
    nonhomogeneous: float = 0.0
    dense_share: float = 0.3
    airlight_cast: float = 0.0
    scene_tint: float = 0.0
    max_minutes: Optional[float] = None
    progress: bool = True
    precision: str = "auto"
    accumulate: int = 1

    def check_run(self) -> None:
        """Raise ValueError for a bad value of these settings."""
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {self.stage!r}")
        if self.data not in ("synthetic", "folder", "dataset"):
            raise ValueError(f"data must be 'synthetic', 'folder' or 'dataset', got {self.data!r}")
        if self.data == "dataset" and not (self.dataset and self.root):
            raise ValueError("data='dataset' needs dataset (e.g. 'nh-haze') and root (the folder it unpacks to)")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}")
        for name in ("random_depth", "nonhomogeneous", "dense_share", "airlight_cast", "scene_tint"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} is a probability in [0, 1], got {getattr(self, name)}")
        if self.data == "synthetic" and self.photos not in PHOTO_SPLITS and not os.path.isdir(self.photos):
            why = (" (the evaluation photos are never trained on, nor the judge and independent ones)"
                   if self.photos in ("eval", "independent", "judge") else "")
            raise ValueError(f"photos must be one of {', '.join(map(repr, PHOTO_SPLITS))} (the built-in training "
                             f"photos) or a folder of your clear photos, got {self.photos!r}{why}")
        if self.precision not in TRAIN_PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(TRAIN_PRECISIONS)}, got {self.precision!r}")
        if self.data == "folder" and not (self.hazy_dir and self.gt_dir):
            raise ValueError("data='folder' needs hazy_dir and gt_dir")


@dataclass
class Stage1Settings:
    """What only stage 1 reads: the weights of its loss terms (J, coarse, I, T, A, colour)."""

    loss_weights: Dict[str, float] = field(default_factory=lambda: dict(DEFAULT_LOSS_WEIGHTS))

    def check_stage1(self) -> None:
        """Complete the loss weights from the defaults; unknown terms are a ValueError."""
        weights = dict(DEFAULT_LOSS_WEIGHTS)
        weights.update(self.loss_weights or {})
        unknown = sorted(set(weights) - set(DEFAULT_LOSS_WEIGHTS))
        if unknown:
            raise ValueError(f"unknown loss weights {unknown}; known: {sorted(DEFAULT_LOSS_WEIGHTS)}")
        bad = {k: v for k, v in weights.items() if isinstance(v, bool) or not isinstance(v, (int, float))
               or not math.isfinite(v) or v < 0}
        if bad:
            raise ValueError(f"loss weights must be finite numbers >= 0, got {bad}")
        self.loss_weights = weights


@dataclass
class DenoiserSettings:
    """What only the denoiser reads: its UNet and schedule, the frozen stage 1, the loss and the
    noise levels it trains on, and how its condition pool is built.

    ``frequency_weight``: weight of the diffusion loss's FFT-amplitude term (0.01, the reference).
    ``condition_pool``: 0 runs the frozen stage 1 on every batch; N > 0 runs it once over N fixed
    training crops and trains on those (with fresh flips and noise). ``noise_focus_share`` of the
    batches draw their noise level from the lowest ``noise_focus`` of the chain (the levels a call
    started from J at ``start_strength = noise_focus`` visits), the rest from the whole chain.
    ``scene_sizes`` ``[lo, hi]`` (with ``condition_pool``) builds the pool the way the pipeline
    builds a condition: a whole hazy scene at a shorter side in [lo, hi], stage 1 at
    ``working_size`` (None: at the scene's size), then crops of it; ``stage1_detail`` as the
    pipeline's option of that name (0: stage 1's own J), ``stage1_flip`` too (stage 1 averaged with
    its mirror); ``denoise_size`` brings J, T and the
    clear scene to the denoiser's working size before the crops, as the pipeline's option of that
    name does (None: crops at the scene's size).
    ``checkpoint_blocks``: recompute each UNet block's activations in the backward pass instead
    of keeping them (activation checkpointing): less memory, about a third more time.
    """

    unet: Dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_UNET))
    schedule: Dict[str, Any] = field(default_factory=lambda: dict(RELEASED_SCHEDULE))
    stage1_checkpoint: Optional[str] = None
    val_sampler_steps: int = 10
    frequency_weight: float = FREQUENCY_WEIGHT
    condition_pool: int = 0
    noise_focus: float = 1.0
    noise_focus_share: float = 0.0
    scene_sizes: Optional[List[int]] = None
    working_size: Optional[int] = None
    stage1_detail: int = 0
    stage1_flip: bool = False
    denoise_size: Optional[int] = None
    checkpoint_blocks: bool = False

    def check_denoiser(self, stage: str, crop: int) -> None:
        """Raise ValueError for a bad value of these settings (``stage`` and ``crop``: the run's)."""
        if self.frequency_weight < 0:
            raise ValueError(f"frequency_weight must be >= 0, got {self.frequency_weight}")
        if not 0 <= self.noise_focus_share <= 1:
            raise ValueError(f"noise_focus_share is a probability in [0, 1], got {self.noise_focus_share}")
        if not 0 < self.noise_focus <= 1:
            raise ValueError(f"noise_focus is a fraction of the chain in (0, 1], got {self.noise_focus}")
        if self.scene_sizes is not None:
            if (len(self.scene_sizes) != 2 or not 1 <= self.scene_sizes[0] <= self.scene_sizes[1]
                    or self.scene_sizes[0] < crop):
                raise ValueError(f"scene_sizes must be [lo, hi] with crop <= lo <= hi, got {self.scene_sizes}")
            if stage != "denoiser" or not self.condition_pool:
                raise ValueError("scene_sizes builds the denoiser's condition pool: it needs stage='denoiser' "
                                 "and condition_pool > 0")
        if self.working_size is not None and self.working_size < 1:
            raise ValueError(f"working_size must be a positive shorter side, got {self.working_size}")
        if self.stage1_detail < 0:  # its type is checked with every field's, when the config is read
            raise ValueError(f"stage1_detail must be >= 0, got {self.stage1_detail}")
        for name in ("stage1_detail", "stage1_flip"):
            if getattr(self, name) and not (stage == "denoiser" and self.condition_pool and self.scene_sizes):
                raise ValueError(f"{name} builds the denoiser's condition pool as the pipeline does: it needs "
                                 "stage='denoiser', condition_pool > 0 and scene_sizes")
        if self.denoise_size is not None:
            if self.denoise_size < crop:
                raise ValueError(f"denoise_size must be at least crop ({crop}), got {self.denoise_size}")
            if not self.scene_sizes:
                raise ValueError("denoise_size builds the denoiser's condition pool as the pipeline does: it needs "
                                 "scene_sizes")
        if self.condition_pool < 0:
            raise ValueError(f"condition_pool must be >= 0, got {self.condition_pool}")
        if stage == "denoiser" and not self.stage1_checkpoint:
            raise ValueError("the denoiser stage needs stage1_checkpoint (a trained stage 1)")
        UNetConfig.from_dict(self.unet)  # fail early on a bad UNet config


@dataclass
class TrainConfig(DenoiserSettings, Stage1Settings, RunSettings):
    """Every setting of a training run: the settings both stages read (:class:`RunSettings`), and
    those only stage 1 (:class:`Stage1Settings`) or only the denoiser (:class:`DenoiserSettings`)
    reads, as one flat object whose JSON keys are the field names (``//`` comments allowed), so a
    config file is one object whatever the stage. :meth:`stage_fields` lists what a stage reads.
    """

    def __post_init__(self) -> None:
        check_values(self)
        self.check_run()
        self.check_stage1()
        self.check_denoiser(self.stage, self.crop)

    @staticmethod
    def stage_fields(stage: str) -> List[str]:
        """The field names a run of ``stage`` reads: the run's and that stage's own."""
        own = Stage1Settings if stage == "stage1" else DenoiserSettings
        return [f.name for f in (*fields(RunSettings), *fields(own))]

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "TrainConfig":
        """Build from a JSON object; unknown keys are an error."""
        return from_dict(cls, d, "training config")

    @classmethod
    def from_json(cls, path: "str | os.PathLike", **overrides: Any) -> "TrainConfig":
        """Read a JSON config file (``//`` comments allowed); ``overrides`` that are not None win."""
        d = load_json_with_comments(path)
        check_keys(d, [f.name for f in fields(cls)], f"training config {os.fspath(path)}")
        return cls.from_dict({**d, **{k: v for k, v in overrides.items() if v is not None}})

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)
