"""Training of both DehazeDDPM stages: ``train_stage1`` (physics-aware net) and ``train_denoiser``.

Stage 1 learns J, T, A from hazy images in [0, 1]; stage 2 (the SR3 ``UNet``) learns the diffusion
noise loss on ``x0 = to_signed(gt)`` conditioned on ``cat([to_signed(J), to_signed(T)])`` of a
frozen stage 1. Runs on one device, or several through ``torchrun`` (DistributedDataParallel).

Determinism: the sample at global position ``p = (step * world + rank) * batch + k`` is a pure
function of ``(seed, p)``, and every other random stream (diffusion noise, dropout) lives in
generators whose state is saved; so ``resume=True`` continues exactly where a run stopped.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from . import haze, imageio
from .checkpoints import _atomic_save, load_denoiser, load_stage1, save_denoiser, save_stage1
from .config import load_json_with_comments
from .datasets import PairedFolderDataset, SyntheticHazeDataset, item_generator
from .losses import FREQUENCY_WEIGHT, diffusion_loss
from .metrics import psnr
from .samplers import sample
from .schedule import NoiseSchedule
from .stage1 import Stage1Net
from .unet import UNet, UNetConfig

STAGES = ("stage1", "denoiser")
DEFAULT_SCHEDULE = {"schedule": "linear", "n_timestep": 2000, "linear_start": 1e-6, "linear_end": 1e-2}
DEFAULT_UNET = {"in_channel": 7, "out_channel": 3, "inner_channel": 32, "norm_groups": 16,
                "channel_mults": [1, 2, 2], "attn_res": [16], "res_blocks": 1, "dropout": 0.0,
                "image_size": 64}
DEFAULT_LOSS_WEIGHTS = {"J": 1.0, "coarse": 1.0, "I": 1.0, "T": 1.0, "A": 1.0}


@dataclass
class TrainConfig:
    """Everything a training run needs; JSON keys equal the field names (``//`` comments allowed).

    ``data``: ``"synthetic"`` (hazy crops of ``haze.builtin_photos(photos)``) or ``"folder"``
    (``hazy_dir``/``gt_dir`` pairs). ``steps`` counts optimiser steps; ``val_every``/``save_every``
    of 0 mean "only at the end". ``max_minutes`` stops early (checkpoint written) when the wall
    time runs out. ``ema_decay`` None disables the EMA; with it the checkpoints hold EMA weights.
    ``min_scale``: synthetic crops are taken at a random scale in [min_scale, 1] of the photo
    (lower: more scene per crop, closer to whole downsized images). ``lr_schedule``: ``"constant"``
    (the reference) or ``"cosine"`` (decays to ``lr / 20`` at ``steps``). ``condition_pool`` (denoiser
    only): 0 runs the frozen stage 1 on every batch; N > 0 runs it once over N fixed training crops
    and trains on those (with fresh flips and noise), which removes stage 1 from the step cost.
    ``frequency_weight``: weight of the diffusion loss's FFT-amplitude term (0.01, the reference).
    ``augment`` (synthetic data): random channel order and depth power per crop;
    ``random_depth``: the fraction of crops hazed over a random smooth depth field (both
    ``SyntheticHazeDataset``; validation crops keep the photo's depth). ``init_checkpoint``: start
    from these weights (a stage-1 or denoiser checkpoint of the same architecture, loaded
    strictly) instead of a random init, i.e. fine-tune; when resuming, the resume file's weights
    replace them.
    """

    stage: str = "stage1"
    data: str = "synthetic"
    photos: str = "train"
    hazy_dir: Optional[str] = None
    gt_dir: Optional[str] = None
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
    unet: Dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_UNET))
    schedule: Dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_SCHEDULE))
    stage1_checkpoint: Optional[str] = None
    loss_weights: Dict[str, float] = field(default_factory=lambda: dict(DEFAULT_LOSS_WEIGHTS))
    num_val: int = 4
    val_crop: Optional[int] = None
    val_sampler_steps: int = 10
    num_workers: int = 0
    grad_clip: Optional[float] = None
    frequency_weight: float = FREQUENCY_WEIGHT
    condition_pool: int = 0
    augment: bool = False
    random_depth: float = 0.0
    init_checkpoint: Optional[str] = None
    max_minutes: Optional[float] = None
    progress: bool = True

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {self.stage!r}")
        if self.data not in ("synthetic", "folder"):
            raise ValueError(f"data must be 'synthetic' or 'folder', got {self.data!r}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}")
        if self.frequency_weight < 0:
            raise ValueError(f"frequency_weight must be >= 0, got {self.frequency_weight}")
        if not 0 <= self.random_depth <= 1:
            raise ValueError(f"random_depth is a probability in [0, 1], got {self.random_depth}")
        if self.condition_pool < 0:
            raise ValueError(f"condition_pool must be >= 0, got {self.condition_pool}")
        if self.data == "folder" and not (self.hazy_dir and self.gt_dir):
            raise ValueError("data='folder' needs hazy_dir and gt_dir")
        if self.stage == "denoiser" and not self.stage1_checkpoint:
            raise ValueError("the denoiser stage needs stage1_checkpoint (a trained stage 1)")
        weights = dict(DEFAULT_LOSS_WEIGHTS)
        weights.update(self.loss_weights or {})
        unknown = sorted(set(weights) - set(DEFAULT_LOSS_WEIGHTS))
        if unknown:
            raise ValueError(f"unknown loss weights {unknown}; known: {sorted(DEFAULT_LOSS_WEIGHTS)}")
        self.loss_weights = weights
        UNetConfig.from_dict(self.unet)  # fail early on a bad UNet config

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown training config keys {unknown}; known: {sorted(known)}")
        return cls(**d)

    @classmethod
    def from_json(cls, path: "str | os.PathLike", **overrides: Any) -> "TrainConfig":
        d = load_json_with_comments(path)
        d.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(d)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


# -- distributed ------------------------------------------------------------------------------------

@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


def _setup_distributed() -> _Dist:
    """Init the process group when launched by torchrun with WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    if world <= 1:
        return _Dist(device=torch.device("cuda" if cuda else "cpu"))
    import torch.distributed as dist
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    if cuda:
        torch.cuda.set_device(local)
    return _Dist(rank, world, local, torch.device(f"cuda:{local}" if cuda else "cpu"))


def _wrap(model: torch.nn.Module, d: _Dist) -> torch.nn.Module:
    if d.world <= 1:
        return model
    from torch.nn.parallel import DistributedDataParallel
    return DistributedDataParallel(model, device_ids=[d.local_rank] if d.device.type == "cuda" else None)


def _barrier(d: _Dist) -> None:
    if d.world > 1:
        import torch.distributed as dist
        dist.barrier()


# -- data -------------------------------------------------------------------------------------------

class StepShardedData(Dataset):
    """Position ``p`` -> item of ``base``: epoch ``p // n``, index ``perm_epoch[p % n]``.

    Plays the role of a ``DistributedSampler``: each rank reads the positions of its own shard
    (see :func:`positions`), and since positions depend only on the step, a resumed run reads the
    very batches the uninterrupted run would have read.
    """

    def __init__(self, base: Dataset, seed: int) -> None:
        self.base, self.seed, self.n = base, seed, len(base)  # type: ignore[arg-type]
        self._perm: Dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return 2 ** 62

    def __getitem__(self, p: int) -> dict:
        epoch, r = divmod(int(p), self.n)
        if epoch not in self._perm:
            self._perm = {epoch: torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100003 + epoch))}
        if hasattr(self.base, "set_epoch"):
            self.base.set_epoch(epoch)  # type: ignore[attr-defined]
        return self.base[int(self._perm[epoch][r])]


def positions(start_step: int, steps: int, batch: int, rank: int, world: int) -> Iterator[int]:
    """Global sample positions read by ``rank`` for steps ``start_step .. steps-1``."""
    for s in range(start_step, steps):
        base = (s * world + rank) * batch
        yield from range(base, base + batch)


def _build_datasets(cfg: TrainConfig) -> Tuple[Dataset, Dict[str, torch.Tensor]]:
    """(training dataset, fixed validation batch {hazy, gt} (N, 3, c, c) in [0, 1])."""
    vcrop = cfg.val_crop or cfg.crop
    if cfg.data == "synthetic":
        photos = haze.builtin_photos(cfg.photos)
        length = max(1000, cfg.batch_size * 8, cfg.condition_pool)
        train = SyntheticHazeDataset(photos, crop=cfg.crop, length=length, seed=cfg.seed, min_scale=cfg.min_scale,
                                     augment=cfg.augment, random_depth=cfg.random_depth)
        # fixed crops from another seed: a validation set that never changes between runs
        val_ds: Dataset = SyntheticHazeDataset(photos, crop=vcrop, length=cfg.num_val, seed=cfg.seed + 7919, fixed=True,
                                               min_scale=cfg.min_scale)
    else:
        train = PairedFolderDataset(cfg.hazy_dir, cfg.gt_dir, crop=cfg.crop, flip=True, seed=cfg.seed)  # type: ignore[arg-type]
        val_ds = PairedFolderDataset(cfg.hazy_dir, cfg.gt_dir, crop=vcrop, flip=False, seed=cfg.seed + 7919)  # type: ignore[arg-type]
    items = [val_ds[i] for i in range(min(cfg.num_val, len(val_ds)))]  # type: ignore[arg-type]
    val = {k: torch.stack([it[k] for it in items]) for k in ("hazy", "gt")}
    return train, val


class ConditionPool(Dataset):
    """The first ``size`` items of ``base`` with the frozen stage 1's condition computed once.

    Items: ``{"gt": 3xHxW in [0, 1], "condition": 4xHxW in [-1, 1]}``, both mirrored together with
    probability 1/2, drawn from ``(seed, epoch, index)`` like the other datasets. Stage 1 is frozen
    during denoiser training, so its output for a given crop never changes: computing it once per
    crop instead of once per step gives the same condition for a fraction of the cost.
    """

    def __init__(self, base: Dataset, stage1: Stage1Net, size: int, seed: int, batch: int = 16,
                 device: "torch.device | str" = "cpu") -> None:
        if size < 1:
            raise ValueError(f"size must be positive, got {size}")
        if hasattr(base, "set_epoch"):
            base.set_epoch(0)  # type: ignore[attr-defined]
        n = min(size, len(base))  # type: ignore[arg-type]
        gts, conds = [], []
        for lo in range(0, n, batch):
            items = [base[i] for i in range(lo, min(n, lo + batch))]
            hazy = torch.stack([it["hazy"] for it in items]).to(device)
            conds.append(stage1_condition(stage1, hazy).cpu())
            gts.append(torch.stack([it["gt"] for it in items]))
        self.gt, self.condition = torch.cat(gts), torch.cat(conds)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.gt.shape[0]

    def __getitem__(self, index: int) -> dict:
        gt, cond = self.gt[index], self.condition[index]
        if torch.rand((), generator=item_generator(self.seed, self.epoch, index)) < 0.5:
            gt, cond = gt.flip(-1), cond.flip(-1)
        return {"gt": gt.contiguous(), "condition": cond.contiguous()}


def _loader(train: Dataset, cfg: TrainConfig, start_step: int, d: _Dist) -> Iterator[Dict[str, Any]]:
    data = StepShardedData(train, cfg.seed)
    pos = list(positions(start_step, cfg.steps, cfg.batch_size, d.rank, d.world))
    # own generator: the loader's worker base seed must not draw from the global RNG, which
    # stage 1's dropout uses (a resumed run creates its loader at a different RNG state)
    dl = DataLoader(data, batch_size=cfg.batch_size, sampler=pos, num_workers=cfg.num_workers,
                    drop_last=False, generator=torch.Generator().manual_seed(cfg.seed * 1000 + start_step))
    return iter(dl)


# -- state: EMA, RNG, resume ------------------------------------------------------------------------

class EMA:
    """Exponential moving average of a model's floating-point state (parameters and buffers)."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = float(decay)
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for k, v in model.state_dict().items():
            if v.is_floating_point():
                self.shadow[k].mul_(self.decay).add_(v.detach(), alpha=1 - self.decay)
            else:
                self.shadow[k].copy_(v)

    def copy_to(self, model: torch.nn.Module) -> None:
        model.load_state_dict(self.shadow, strict=True)


def _rng_state(gen: torch.Generator) -> Dict[str, Any]:
    """Every RNG the training loop touches, as tensors and plain ints (loadable with weights_only)."""
    _, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    st: Dict[str, Any] = {"torch": torch.get_rng_state(), "loss_gen": gen.get_state(),
                          "numpy_keys": torch.from_numpy(np_keys.astype(np.int64)),
                          "numpy_rest": [int(np_pos), int(np_has_gauss), float(np_gauss)],
                          "python": [int(py_version), list(py_state), py_gauss]}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: Dict[str, Any], gen: torch.Generator) -> None:
    torch.set_rng_state(st["torch"])
    gen.set_state(st["loss_gen"])
    pos, has_gauss, gauss = st["numpy_rest"]
    np.random.set_state(("MT19937", st["numpy_keys"].numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, state, py_gauss = st["python"]
    random.setstate((version, tuple(state), py_gauss))
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def resume_path(cfg: TrainConfig, rank: int = 0) -> Path:
    """``out_dir/resume_<stage>.pt`` (rank suffix beyond rank 0: RNG states differ per rank)."""
    return Path(cfg.out_dir) / (f"resume_{cfg.stage}.pt" if rank == 0 else f"resume_{cfg.stage}.rank{rank}.pt")


def provenance() -> Dict[str, Any]:
    """Versions and host facts recorded next to every checkpoint."""
    from . import __version__
    return {"dehazeddpm": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "platform": platform.platform(),
            "cuda": torch.version.cuda if torch.cuda.is_available() else None,
            "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


# -- losses -----------------------------------------------------------------------------------------

def stage1_loss(net: torch.nn.Module, batch: Dict[str, Any], weights: Dict[str, float],
                device: "torch.device | str" = "cpu") -> torch.Tensor:
    """L1(J, gt) + L1(coarse, gt) + L1(I, hazy) [+ L1(T, transmission) + L1(A, airlight) when the
    batch has them]; each term times ``weights[name]``. batch["hazy"/"gt"]: (B, 3, H, W) in [0, 1]."""
    hazy, gt = batch["hazy"].to(device), batch["gt"].to(device)
    o = net(hazy)
    w = {**DEFAULT_LOSS_WEIGHTS, **weights}
    loss = w["J"] * F.l1_loss(o.J, gt) + w["coarse"] * F.l1_loss(o.coarse, gt) + w["I"] * F.l1_loss(o.I, hazy)
    if "transmission" in batch and w["T"]:
        loss = loss + w["T"] * F.l1_loss(o.T, batch["transmission"].to(device))
    if "airlight" in batch and w["A"]:
        loss = loss + w["A"] * F.l1_loss(o.A, batch["airlight"].to(device))
    return loss


@torch.no_grad()
def stage1_condition(stage1: Stage1Net, hazy01: torch.Tensor) -> torch.Tensor:
    """The denoiser condition cat([to_signed(J), to_signed(T)]): (B, 4, H, W) in [-1, 1]."""
    o = stage1(hazy01)
    return torch.cat([imageio.to_signed(o.J.clamp(0, 1)), imageio.to_signed(o.T.clamp(0, 1))], 1)


def denoiser_loss(unet: torch.nn.Module, stage1: Stage1Net, batch: Dict[str, Any], schedule: NoiseSchedule,
                  generator: Optional[torch.Generator] = None, device: "torch.device | str" = "cpu",
                  frequency_weight: float = FREQUENCY_WEIGHT) -> torch.Tensor:
    """``diffusion_loss`` on x0 = to_signed(gt) given the frozen stage 1's condition of batch["hazy"]
    (or batch["condition"] when a :class:`ConditionPool` computed it already)."""
    gt = batch["gt"].to(device)
    cond = batch["condition"].to(device) if "condition" in batch else stage1_condition(stage1, batch["hazy"].to(device))
    return diffusion_loss(unet, imageio.to_signed(gt), cond, generator=generator, schedule=schedule,
                          frequency_weight=frequency_weight)


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """Learning rate of optimiser step ``step`` (0-based) under ``cfg.lr_schedule``."""
    if cfg.lr_schedule == "constant" or cfg.steps <= 1:
        return cfg.lr
    floor = cfg.lr / 20  # not zero: the last steps still learn
    return floor + 0.5 * (cfg.lr - floor) * (1 + math.cos(math.pi * min(step, cfg.steps - 1) / (cfg.steps - 1)))


# -- the loop ---------------------------------------------------------------------------------------

@dataclass
class TrainResult:
    """What a run produced: final checkpoint, its sidecar, steps done, last losses and val PSNRs."""

    checkpoint: Path
    sidecar: Path
    step: int
    seconds: float
    losses: List[float]
    val_psnr: List[Tuple[int, float]]


def _run(cfg: TrainConfig, resume: bool) -> TrainResult:
    d = _setup_distributed()
    out = Path(cfg.out_dir)
    if d.main:
        out.mkdir(parents=True, exist_ok=True)
    _barrier(d)
    torch.manual_seed(cfg.seed + d.rank)
    np.random.seed((cfg.seed + d.rank) % 2 ** 32)
    random.seed(cfg.seed + d.rank)
    loss_gen = torch.Generator().manual_seed(cfg.seed * 7 + 1 + d.rank)

    stage1_frozen: Optional[Stage1Net] = None
    schedule: Optional[NoiseSchedule] = None
    if cfg.stage == "stage1":
        model: torch.nn.Module = Stage1Net()
    else:
        model = UNet.from_config(UNetConfig.from_dict(cfg.unet))
        schedule = NoiseSchedule.from_config(cfg.schedule)
        stage1_frozen = load_stage1(cfg.stage1_checkpoint, device=d.device)  # type: ignore[arg-type]
        for p in stage1_frozen.parameters():
            p.requires_grad_(False)
    if cfg.init_checkpoint:
        init = (load_stage1(cfg.init_checkpoint) if cfg.stage == "stage1"
                else load_denoiser(cfg.init_checkpoint, **cfg.unet))
        model.load_state_dict(init.float().state_dict(), strict=True)
    model.to(d.device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)  # the step's rate comes from learning_rate()
    ema = EMA(model, cfg.ema_decay) if cfg.ema_decay else None
    step = 0
    rp = resume_path(cfg, d.rank)
    if resume and rp.is_file():
        st = torch.load(rp, map_location="cpu", weights_only=True)
        if st["stage"] != cfg.stage:
            raise ValueError(f"{rp} is a {st['stage']} resume file, not {cfg.stage}")
        model.load_state_dict(st["model"], strict=True)
        opt.load_state_dict(st["optimizer"])
        if ema is not None and st.get("ema") is not None:
            ema.shadow = {k: v.to(d.device) for k, v in st["ema"].items()}
        step = int(st["step"])
        _set_rng_state(st["rng"], loss_gen)
    elif resume and d.main:
        print(f"no resume file at {rp}; starting from step 0")
    train_model = _wrap(model, d)

    train_ds, val = _build_datasets(cfg)
    if cfg.stage == "denoiser" and cfg.condition_pool:
        train_ds = ConditionPool(train_ds, stage1_frozen, cfg.condition_pool, cfg.seed,  # type: ignore[arg-type]
                                 device=d.device)
    val = {k: v.to(d.device) for k, v in val.items()}
    batches = _loader(train_ds, cfg, step, d)
    losses: List[float] = []
    val_hist: List[Tuple[int, float]] = []
    t0 = time.time()
    last_ckpt: Optional[Tuple[Path, Path]] = None

    def condition_of(hazy01: torch.Tensor) -> torch.Tensor:
        return stage1_condition(stage1_frozen, hazy01)  # type: ignore[arg-type]

    def compute_loss(batch: Dict[str, Any]) -> torch.Tensor:
        if cfg.stage == "stage1":
            return stage1_loss(train_model, batch, cfg.loss_weights, d.device)
        return denoiser_loss(train_model, stage1_frozen, batch, schedule, loss_gen, d.device,  # type: ignore[arg-type]
                             cfg.frequency_weight)

    def eval_model() -> torch.nn.Module:
        if ema is None:
            return model
        m = Stage1Net() if cfg.stage == "stage1" else UNet.from_config(UNetConfig.from_dict(cfg.unet))
        m.to(d.device)
        ema.copy_to(m)
        return m

    def validate(at: int) -> float:
        # building the EMA copy draws from the global RNG (init); fork so training's RNG (dropout in
        # stage 1's AirlightNet) is the same whether or not this ran: resume stays exact
        with torch.random.fork_rng(devices=[d.device] if d.device.type == "cuda" else []):
            return _validate(at)

    def _validate(at: int) -> float:
        m = eval_model()
        was = m.training
        m.eval()
        with torch.no_grad():
            hazy, gt = val["hazy"], val["gt"]
            if cfg.stage == "stage1":
                pred = m(hazy).J.clamp(0, 1)
                row = [hazy, pred, gt]
            else:
                cond = condition_of(hazy)
                g = torch.Generator(device=d.device).manual_seed(cfg.seed)
                # the pipeline's default path for weights without ddim_defaults: DDIM, eta 0, mean-free noise
                x = sample(m, cond, schedule, sampler="ddim", steps=cfg.val_sampler_steps, generator=g,  # type: ignore[arg-type]
                           zero_mean_noise=True)
                pred = imageio.to_unit(x).clamp(0, 1)
                row = [hazy, imageio.to_unit(cond[:, :3]), pred, gt]
        m.train(was)
        value = float(np.mean([psnr(pred[i], gt[i]) for i in range(gt.shape[0])]))
        if cfg.stage == "denoiser" and not val_hist:
            j = imageio.to_unit(cond[:, :3]).clamp(0, 1)
            j_psnr = np.mean([psnr(j[i], gt[i]) for i in range(gt.shape[0])])
            print(f"validation crops: stage-1 J alone reaches {j_psnr:.2f} dB")
        # grid: one row per validation image, columns hazy | (J) | prediction | gt
        grid = torch.cat([torch.cat(list(r), dim=-1) for r in zip(*row)], dim=-2)
        imageio.save_image_atomic(grid.cpu(), out / f"val_{cfg.stage}_{at:06d}.png")
        return value

    def save(at: int, final: bool) -> Tuple[Path, Path]:
        with torch.random.fork_rng(devices=[d.device] if d.device.type == "cuda" else []):
            m = eval_model()
        name = f"{cfg.stage}_{'final' if final else f'{at:06d}'}"
        ck = out / f"{name}.pth"
        if cfg.stage == "stage1":
            save_stage1(m, ck)  # type: ignore[arg-type]
        else:
            save_denoiser(m, ck, schedule)  # type: ignore[arg-type]
        side = out / f"{name}.json"
        _write_json_atomic(side, {"stage": cfg.stage, "step": at, "config": cfg.to_dict(),
                                  "ema": ema is not None, "seconds": round(time.time() - t0, 1),
                                  "val_psnr": val_hist, "provenance": provenance()})
        return ck, side

    def save_resume(at: int) -> None:
        _atomic_save({"stage": cfg.stage, "step": at, "model": model.state_dict(), "optimizer": opt.state_dict(),
                      "ema": ema.shadow if ema is not None else None, "rng": _rng_state(loss_gen),
                      "config": cfg.to_dict()}, resume_path(cfg, d.rank))

    bar = None
    if cfg.progress and d.main:
        from tqdm.auto import tqdm
        bar = tqdm(total=cfg.steps, initial=step, desc=f"train {cfg.stage}", dynamic_ncols=True)
    model.train()
    stopped_early = False
    while step < cfg.steps:
        if cfg.max_minutes is not None and time.time() - t0 > 60 * cfg.max_minutes:
            stopped_early = True
            break
        batch = next(batches)
        loss = compute_loss(batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {float(loss)} at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for group in opt.param_groups:
            group["lr"] = learning_rate(cfg, step)
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        if ema is not None:
            ema.update(model)
        step += 1
        losses.append(float(loss.detach()))
        if bar is not None:
            bar.update(1)
            if step % max(1, cfg.log_every) == 0:
                bar.set_postfix(loss=f"{np.mean(losses[-cfg.log_every:]):.4f}")
        if d.main and cfg.val_every and step % cfg.val_every == 0 and step < cfg.steps:
            val_hist.append((step, validate(step)))
            msg = f"step {step}: val PSNR {val_hist[-1][1]:.2f} dB"
            bar.write(msg) if bar is not None else print(msg, flush=True)
        if cfg.save_every and step % cfg.save_every == 0 and step < cfg.steps:
            if d.main:
                last_ckpt = save(step, final=False)
            save_resume(step)  # every rank: its own RNG state
    if bar is not None:
        bar.close()
    if d.main:
        val_hist.append((step, validate(step)))
        print(f"{cfg.stage}: {step} steps in {time.time() - t0:.0f} s"
              f"{' (stopped by max_minutes)' if stopped_early else ''}; val PSNR {val_hist[-1][1]:.2f} dB")
        last_ckpt = save(step, final=True)
    save_resume(step)
    _barrier(d)
    ck, side = last_ckpt if last_ckpt is not None else (out / f"{cfg.stage}_final.pth", out / f"{cfg.stage}_final.json")
    return TrainResult(ck, side, step, time.time() - t0, losses, val_hist)


def train_stage1(cfg: TrainConfig, resume: bool = False) -> TrainResult:
    """Train ``Stage1Net``: L1(J, gt) + L1(coarse, gt) + L1(I, hazy) (+ L1 on T and A when known)."""
    if cfg.stage != "stage1":
        raise ValueError(f"train_stage1 got a config for stage {cfg.stage!r}")
    return _run(cfg, resume)


def train_denoiser(cfg: TrainConfig, resume: bool = False) -> TrainResult:
    """Train the SR3 ``UNet`` with ``diffusion_loss`` on the condition of a frozen stage 1."""
    if cfg.stage != "denoiser":
        raise ValueError(f"train_denoiser got a config for stage {cfg.stage!r}")
    return _run(cfg, resume)


def train(cfg: TrainConfig, resume: bool = False) -> TrainResult:
    """Dispatch on ``cfg.stage``."""
    return (train_stage1 if cfg.stage == "stage1" else train_denoiser)(cfg, resume)


# -- command line -----------------------------------------------------------------------------------

def _cmd_train(args: argparse.Namespace) -> int:
    try:
        cfg = TrainConfig.from_json(args.config, stage=args.stage, steps=args.steps, out_dir=args.out)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}")
        return 2
    res = train(cfg, resume=args.resume)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"checkpoint: {res.checkpoint}\nsidecar: {res.sidecar}")
    return 0


def register_cli(subparsers: Any) -> None:
    """``dehazeddpm train stage1|denoiser --config FILE [--resume] [--steps N] [--out DIR]``."""
    p = subparsers.add_parser("train", help="train stage 1 or the diffusion denoiser (torchrun for several GPUs)")
    p.add_argument("stage", choices=STAGES)
    p.add_argument("--config", required=True, help="JSON training config (TrainConfig fields; // comments allowed)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/resume_<stage>.pt")
    p.add_argument("--steps", type=int, default=None, help="override the total number of steps")
    p.add_argument("--out", default=None, help="override out_dir")
    p.set_defaults(func=_cmd_train)
