"""Training of both DehazeDDPM stages: ``train_stage1`` (physics-aware net) and ``train_denoiser``.

Stage 1 learns J, T, A from hazy images in [0, 1]; stage 2 (the SR3 ``UNet``) learns the diffusion
noise loss on ``x0 = to_signed(gt)`` conditioned on ``cat([to_signed(J), to_signed(T)])`` of a
frozen stage 1. Runs on one device, or several through ``torchrun`` (DistributedDataParallel).

Determinism: the sample at global position ``p = (step * world + rank) * batch + k`` is a pure
function of ``(seed, p)``, and every other random stream (diffusion noise, dropout) lives in
generators whose state is saved; so ``resume=True`` continues exactly where a run stopped.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch

from ..diffusion.samplers import sample
from ..diffusion.schedule import NoiseSchedule
from ..inference.device import autocast, resolve_precision
from ..io.checkpoints import load_denoiser, load_stage1, read_checkpoint, save_checkpoint, save_denoiser, save_stage1
from ..io.images import save_image_atomic, to_unit
from ..metrics import psnr
from ..models.stage1 import Stage1Net
from ..models.unet import UNet, UNetConfig
from .config import TrainConfig
from .data import ConditionPool, SceneConditionPool, build_datasets, make_loader, training_photos
from .distributed import RankStopped, barrier, on_termination, setup_distributed, wrap
from .objectives import denoiser_loss, learning_rate, stage1_condition, stage1_loss
from .state import EMA, latest_path, provenance, resume_path, rng_state, set_rng_state, write_json

__all__ = ["AutocastModel", "RunExistsError", "TrainResult", "Trainer", "check_run_folder", "train", "train_denoiser", "train_stage1"]


@dataclass
class TrainResult:
    """What a run produced: final checkpoint, its sidecar, steps done, last losses and val PSNRs."""

    checkpoint: Path
    sidecar: Path
    step: int
    seconds: float
    losses: List[float]
    val_psnr: List[Tuple[int, float]]


class AutocastModel(torch.nn.Module):
    """A network run under a resolved precision's autocast, its tensor outputs returned in fp32
    (a Stage1Output field by field), so the loss (and its FFT term) is computed in fp32."""

    def __init__(self, model: torch.nn.Module, precision: str, device: torch.device):
        super().__init__()
        self.model, self.precision, self.device = model, precision, device

    def forward(self, *args: Any) -> Any:
        if self.precision == "fp32":
            return self.model(*args)
        with autocast(self.precision, self.device):
            out = self.model(*args)
        if isinstance(out, torch.Tensor):
            return out.float()
        return type(out)(*(t.float() for t in out))


class Trainer:
    """One training run of ``cfg.stage``. Construction sets everything up (seeds, models, the
    optimiser, the resume state, the data) in a fixed order, so that the random streams of a
    resumed run line up with the uninterrupted one; :meth:`run` trains."""

    def __init__(self, cfg: TrainConfig, resume: bool = False, overwrite: bool = False):
        self.cfg = cfg
        self.out = Path(cfg.out_dir)
        check_run_folder(cfg, resume, overwrite)
        self.d = d = setup_distributed()
        torch.manual_seed(cfg.seed + d.rank)
        np.random.seed((cfg.seed + d.rank) % 2 ** 32)
        random.seed(cfg.seed + d.rank)
        self.loss_gen = torch.Generator().manual_seed(cfg.seed * 7 + 1 + d.rank)

        self.stage1_frozen: Optional[Stage1Net] = None
        self.schedule: Optional[NoiseSchedule] = None
        self.model = self._new_model()
        if cfg.stage == "denoiser":
            self.schedule = NoiseSchedule.from_config(cfg.schedule)
            self.focus_schedule = self.schedule.truncate(cfg.noise_focus)
            self.stage1_frozen = load_stage1(cfg.stage1_checkpoint, device=d.device)  # type: ignore[arg-type]
            for p in self.stage1_frozen.parameters():
                p.requires_grad_(False)
        if cfg.init_checkpoint:
            init = (load_stage1(cfg.init_checkpoint) if cfg.stage == "stage1"
                    else load_denoiser(cfg.init_checkpoint, **cfg.unet))
            self.model.load_state_dict(init.float().state_dict(), strict=True)
        self.model.to(d.device)
        if cfg.stage == "denoiser" and cfg.checkpoint_blocks:
            self.model.checkpoint_blocks = True
        self.precision = resolve_precision(cfg.precision, d.device)
        # fp16 gradients underflow without a scale; a step whose scaled gradients overflow is skipped
        self.scaler = torch.amp.GradScaler(d.device.type) if self.precision == "fp16" else None
        self.skipped_steps = 0
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)  # each step's rate: learning_rate()
        self.ema = EMA(self.model, cfg.ema_decay) if cfg.ema_decay else None
        self.step = self._load_resume() if resume else 0
        self.train_model = wrap(self.model, d)

        train_ds, val = build_datasets(cfg)
        if cfg.stage == "denoiser" and cfg.condition_pool and cfg.scene_sizes:
            train_ds = SceneConditionPool(training_photos(cfg.photos), self.stage1_frozen,  # type: ignore[arg-type]
                                          cfg.condition_pool, crop=cfg.crop, scene_sizes=tuple(cfg.scene_sizes),
                                          working_size=cfg.working_size, seed=cfg.seed,
                                          nonhomogeneous=cfg.nonhomogeneous, dense_share=cfg.dense_share,
                                          augment=cfg.augment, airlight_cast=cfg.airlight_cast,
                                          scene_tint=cfg.scene_tint, stage1_detail=cfg.stage1_detail,
                                          stage1_flip=cfg.stage1_flip, denoise_size=cfg.denoise_size,
                                          device=d.device)
        elif cfg.stage == "denoiser" and cfg.condition_pool:
            train_ds = ConditionPool(train_ds, self.stage1_frozen, cfg.condition_pool, cfg.seed,  # type: ignore[arg-type]
                                     device=d.device)
        self.val = {k: v.to(d.device) for k, v in val.items()}
        self.batches = make_loader(train_ds, cfg, self.step, d)
        self.losses: List[float] = []
        self.val_hist: List[Tuple[int, float]] = []
        self._last_checkpoint: Optional[str] = None
        # the run's folder is made last, so a set-up that fails (bad weights, a photo package not
        # installed) leaves nothing behind
        if d.main:
            self.out.mkdir(parents=True, exist_ok=True)
        barrier(d)
        self.t0 = time.time()

    # -- set-up ------------------------------------------------------------------------------------
    def _new_model(self) -> torch.nn.Module:
        if self.cfg.stage == "stage1":
            return Stage1Net()
        return UNet.from_config(UNetConfig.from_dict(self.cfg.unet))

    def _load_resume(self) -> int:
        rp = resume_path(self.cfg, self.d.rank)
        if not rp.is_file():
            if self.d.main:
                print(f"no resume file at {rp}; starting from step 0")
            return 0
        st = read_checkpoint(rp)  # weights_only; a damaged file is a CheckpointError
        if st.get("stage") != self.cfg.stage:
            raise ValueError(f"{rp} is not a {self.cfg.stage} resume file (it says stage {st.get('stage')!r})")
        try:
            self.model.load_state_dict(st["model"], strict=True)
            self.opt.load_state_dict(st["optimizer"])
            if self.ema is not None and st.get("ema") is not None:
                self.ema.shadow = {k: v.to(self.d.device) for k, v in st["ema"].items()}
            set_rng_state(st["rng"], self.loss_gen)
            if self.scaler is not None and st.get("scaler"):
                self.scaler.load_state_dict(st["scaler"])
            self.skipped_steps = int(st.get("skipped_steps", 0))
            step = int(st["step"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise ValueError(f"{rp} is not a resume file of this run: {type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
        if step > self.cfg.steps:  # it would be written out as a finished run of fewer steps than it has
            raise ValueError(f"{rp} is at step {step}, past this config's steps={self.cfg.steps}: give steps >= "
                             f"{step} to continue it")
        changed = changed_settings(st.get("config"), self.cfg.to_dict())
        if changed:  # the run would finish as a mix of two recipes that no config describes
            raise ValueError(f"{rp} was saved by a run with other settings ({'; '.join(changed)}): resume with the "
                             "run's settings, or start a new run from its checkpoint (init_checkpoint)")
        return step

    # -- one step ----------------------------------------------------------------------------------
    def loss(self, batch: Dict[str, Any]) -> torch.Tensor:
        """The loss of one batch; the networks run in the run's precision, the loss in fp32."""
        model = AutocastModel(self.train_model, self.precision, self.d.device)
        if self.cfg.stage == "stage1":
            return stage1_loss(model, batch, self.cfg.loss_weights, self.d.device)
        schedule = self.schedule
        if self.cfg.noise_focus_share and float(torch.rand((), generator=self.loss_gen)) < self.cfg.noise_focus_share:
            schedule = self.focus_schedule
        return denoiser_loss(model, self.stage1_frozen, batch, schedule,  # type: ignore[arg-type]
                             self.loss_gen, self.d.device, self.cfg.frequency_weight)

    def train_step(self, batches: Iterator[Dict[str, Any]]) -> float:
        """One optimiser step over ``cfg.accumulate`` batches drawn from ``batches``: their
        gradients are summed, each loss divided by ``accumulate`` (the mean over all their samples)."""
        self.opt.zero_grad(set_to_none=True)
        total = 0.0
        for _ in range(self.cfg.accumulate):
            loss = self.loss(next(batches))
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {float(loss)} at step {self.step}")
            part = loss / self.cfg.accumulate
            (self.scaler.scale(part) if self.scaler is not None else part).backward()
            total += float(part.detach())
        for group in self.opt.param_groups:
            group["lr"] = learning_rate(self.cfg, self.step)
        if self.scaler is not None:
            self.scaler.unscale_(self.opt)
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        if self.scaler is None:
            self.opt.step()
            stepped = True
        else:
            scale = self.scaler.get_scale()
            self.scaler.step(self.opt)
            self.scaler.update()
            stepped = self.scaler.get_scale() >= scale  # the scaler lowers its scale when it skipped
            if not stepped:
                self.skipped_steps += 1
                print(f"step {self.step}: fp16 gradients overflowed, optimiser step skipped "
                      f"(scale now {self.scaler.get_scale():g}; {self.skipped_steps} skipped so far)", flush=True)
        if stepped and self.ema is not None:
            self.ema.update(self.model)
        self.step += 1
        self.losses.append(total)
        return total

    # -- evaluation and files ----------------------------------------------------------------------
    def eval_model(self) -> torch.nn.Module:
        """The weights a checkpoint holds: the EMA's when there is one, else the model itself."""
        if self.ema is None:
            return self.model
        m = self._new_model().to(self.d.device)
        self.ema.copy_to(m)
        return m

    def _fork_rng(self):
        # building the EMA copy draws from the global RNG (init); fork so training's RNG (dropout in
        # stage 1's AirlightNet) is the same whether or not this ran: resume stays exact
        return torch.random.fork_rng(devices=[self.d.device] if self.d.device.type == "cuda" else [])

    def validate(self) -> float:
        """Mean PSNR on the fixed validation crops; writes a grid image hazy | (J) | prediction | gt."""
        with self._fork_rng():
            m = self.eval_model()
            was = m.training
            m.eval()
            with torch.no_grad():
                hazy, gt = self.val["hazy"], self.val["gt"]
                if self.cfg.stage == "stage1":
                    pred = m(hazy).J.clamp(0, 1)
                    row = [hazy, pred, gt]
                else:
                    cond = stage1_condition(self.stage1_frozen, hazy)  # type: ignore[arg-type]
                    g = torch.Generator(device=self.d.device).manual_seed(self.cfg.seed)
                    # the pipeline's default path for weights without defaults: DDIM, eta 0, mean-free noise
                    x = sample(m, cond, self.schedule, sampler="ddim", steps=self.cfg.val_sampler_steps,  # type: ignore[arg-type]
                               generator=g, zero_mean_noise=True)
                    pred = to_unit(x).clamp(0, 1)
                    row = [hazy, to_unit(cond[:, :3]), pred, gt]
            m.train(was)
        value = float(np.mean([psnr(pred[i], gt[i]) for i in range(gt.shape[0])]))
        if self.cfg.stage == "denoiser" and not self.val_hist:
            j = to_unit(cond[:, :3]).clamp(0, 1)
            print(f"validation crops: stage-1 J alone reaches {np.mean([psnr(j[i], gt[i]) for i in range(gt.shape[0])]):.2f} dB")
        grid = torch.cat([torch.cat(list(r), dim=-1) for r in zip(*row)], dim=-2)
        save_image_atomic(grid.cpu(), self.out / f"val_{self.cfg.stage}_{self.step:06d}.png")
        return value

    def save(self, final: bool) -> Tuple[Path, Path]:
        """The checkpoint (reference layout) and its JSON sidecar (config, provenance)."""
        with self._fork_rng():
            m = self.eval_model()
        name = f"{self.cfg.stage}_{'final' if final else f'{self.step:06d}'}"
        ck = self.out / f"{name}.pth"
        if self.cfg.stage == "stage1":
            save_stage1(m, ck)  # type: ignore[arg-type]
        else:
            save_denoiser(m, ck, self.schedule)  # type: ignore[arg-type]
        side = self.out / f"{name}.json"
        write_json(side, {"stage": self.cfg.stage, "step": self.step, "config": self.cfg.to_dict(),
                          "ema": self.ema is not None, "seconds": round(time.time() - self.t0, 1),
                          "precision": self.precision, "skipped_steps": self.skipped_steps,
                          "val_psnr": self.val_hist, "provenance": provenance()})
        self._last_checkpoint = ck.name
        return ck, side

    def save_resume(self) -> None:
        """Everything needed to continue this rank exactly (every rank writes its own)."""
        save_checkpoint({"stage": self.cfg.stage, "step": self.step, "model": self.model.state_dict(),
                         "optimizer": self.opt.state_dict(), "ema": self.ema.shadow if self.ema is not None else None,
                         "rng": rng_state(self.loss_gen), "config": self.cfg.to_dict(),
                         "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                         "skipped_steps": self.skipped_steps},
                        resume_path(self.cfg, self.d.rank))
        if self.d.main:
            # what a rerun after a disconnect reads first: where this run stands
            write_json(latest_path(self.cfg), {"stage": self.cfg.stage, "step": self.step, "steps": self.cfg.steps,
                                               "resume": resume_path(self.cfg).name,
                                               "checkpoint": self._last_checkpoint})

    # -- the loop ----------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        """Train to ``cfg.steps``. Under torchrun, a failed peer ends this rank with one
        :class:`RankStopped` that says where ``--resume`` continues."""
        try:
            # a notebook may have turned autograd off (dd.notebook_session does): training needs it
            with on_termination(self.d), torch.enable_grad():
                return self._run()
        except RuntimeError as exc:  # RankStopped, or a collective that lost its peer
            if self.d.world <= 1:
                raise
            saved = torch.load(resume_path(self.cfg, self.d.rank), map_location="cpu", weights_only=True)["step"] \
                if resume_path(self.cfg, self.d.rank).is_file() else 0
            reason = " ".join(str(exc).split())[:300]
            raise RankStopped(f"rank {self.d.rank} of {self.d.world} stopped at step {self.step}: {reason}. "
                              f"The state saved at step {saved} is intact: --resume continues from there") from exc

    def _run(self) -> TrainResult:
        cfg, d = self.cfg, self.d
        bar = None
        if cfg.progress and d.main:
            from tqdm.auto import tqdm
            bar = tqdm(total=cfg.steps, initial=self.step, desc=f"train {cfg.stage}", dynamic_ncols=True)
        last_ckpt: Optional[Tuple[Path, Path]] = None
        self.model.train()
        stopped_early = False
        while self.step < cfg.steps:
            if cfg.max_minutes is not None and time.time() - self.t0 > 60 * cfg.max_minutes:
                stopped_early = True
                break
            self.train_step(self.batches)
            step = self.step
            if bar is not None:
                bar.update(1)
                if step % max(1, cfg.log_every) == 0:
                    bar.set_postfix(loss=f"{np.mean(self.losses[-cfg.log_every:]):.4f}")
            if d.main and cfg.val_every and step % cfg.val_every == 0 and step < cfg.steps:
                self.val_hist.append((step, self.validate()))
                msg = f"step {step}: val PSNR {self.val_hist[-1][1]:.2f} dB"
                bar.write(msg) if bar is not None else print(msg, flush=True)
            if cfg.save_every and step % cfg.save_every == 0 and step < cfg.steps:
                if d.main:
                    last_ckpt = self.save(final=False)
                self.save_resume()
        if bar is not None:
            bar.close()
        if d.main:
            self.val_hist.append((self.step, self.validate()))
            print(f"{cfg.stage}: {self.step} steps in {time.time() - self.t0:.0f} s"
                  f"{' (stopped by max_minutes)' if stopped_early else ''}; val PSNR {self.val_hist[-1][1]:.2f} dB")
            last_ckpt = self.save(final=True)
        self.save_resume()
        barrier(d)
        ck, side = last_ckpt if last_ckpt is not None else (self.out / f"{cfg.stage}_final.pth",
                                                          self.out / f"{cfg.stage}_final.json")
        return TrainResult(ck, side, self.step, time.time() - self.t0, self.losses, self.val_hist)


# what a resumed run may set anew: how long it goes on, how it reports and saves, and where and how
# fast it runs; every other setting is the recipe, and must be the saved run's
RESUME_MAY_CHANGE = frozenset({"steps", "max_minutes", "progress", "log_every", "val_every", "save_every", "out_dir",
                               "num_workers", "precision"})


def changed_settings(saved: Any, current: Dict[str, Any]) -> List[str]:
    """``"name: saved -> current"`` for each recipe setting of a resume file's config (``saved``, a
    dict, or anything else for a file that recorded none) that ``current`` changes. Settings the
    saved config does not name (added since) are not compared."""
    if not isinstance(saved, dict):
        return []
    return [f"{k}: {saved[k]!r} -> {current.get(k)!r}" for k in sorted(saved)
            if k in current and k not in RESUME_MAY_CHANGE and saved[k] != current[k]]


class RunExistsError(ValueError):
    """The run folder holds a finished or resumable run, and neither resume nor overwrite was asked."""


def check_run_folder(cfg: TrainConfig, resume: bool, overwrite: bool) -> None:
    """Refuse, before anything is written, a folder that cannot hold this run: a file, or one that
    holds a finished or resumable run of this stage when neither ``resume`` nor ``overwrite`` is set
    (a rerun must never destroy a finished run)."""
    out = Path(cfg.out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir {out} is a file, not a folder")
    if resume or overwrite:
        return
    found = [p.name for p in (out / f"{cfg.stage}_final.pth", resume_path(cfg)) if p.is_file()]
    if found:
        raise RunExistsError(f"{out} already holds a {cfg.stage} run ({', '.join(found)}): --resume continues it, "
                             "--overwrite starts again over it, or choose another out_dir")


def train_stage1(cfg: TrainConfig, resume: bool = False, overwrite: bool = False) -> TrainResult:
    """Train ``Stage1Net``: L1(J, gt) + L1(coarse, gt) + L1(I, hazy) (+ L1 on T and A when known)."""
    if cfg.stage != "stage1":
        raise ValueError(f"train_stage1 got a config for stage {cfg.stage!r}")
    return Trainer(cfg, resume, overwrite).run()


def train_denoiser(cfg: TrainConfig, resume: bool = False, overwrite: bool = False) -> TrainResult:
    """Train the SR3 ``UNet`` with ``diffusion_loss`` on the condition of a frozen stage 1."""
    if cfg.stage != "denoiser":
        raise ValueError(f"train_denoiser got a config for stage {cfg.stage!r}")
    return Trainer(cfg, resume, overwrite).run()


def train(cfg: TrainConfig, resume: bool = False, overwrite: bool = False) -> TrainResult:
    """Dispatch on ``cfg.stage``. A folder holding a finished or resumable run of the stage is a
    :class:`RunExistsError` unless ``resume`` (continue it) or ``overwrite`` (start over it)."""
    return (train_stage1 if cfg.stage == "stage1" else train_denoiser)(cfg, resume, overwrite)
