"""What a training step reads: step-sharded positions, the datasets of a config, the condition pool.

Item ``p`` of a run is a pure function of ``(seed, p)``, and each rank reads the positions of its
own shard, so a resumed run reads the very batches the uninterrupted run would have read.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Iterator, Mapping, Optional, Tuple

import torch
from torch.utils.data import DataLoader, Dataset

from ..data.datasets import PairedFolderDataset, SyntheticHazeDataset, item_generator, list_images
from ..data.haze import depth_prior, random_haze_params, synthesize_haze, tint_scene
from ..data.nonhomogeneous import smog_or_mist, synthesize_nonhomogeneous
from ..data.photos import PHOTO_SPLITS, builtin_photos
from ..data.public import dataset_pairs
from ..inference.working_size import mirror_averaged, stage1_at_size, to_working_size
from ..io.images import denoiser_condition, load_image
from ..models.stage1 import Stage1Net
from ..utils import resize, scaled_shape
from .config import TrainConfig
from .distributed import Dist
from .objectives import stage1_condition

__all__ = ["ConditionPool", "SceneConditionPool", "StepShardedData", "build_datasets", "make_loader", "positions"]


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


def folder_photos(folder: str) -> Dict[str, Tuple[torch.Tensor, Optional[torch.Tensor]]]:
    """The clear photos of a folder of the user's, ``{stem: (3xHxW in [0, 1], None)}`` (no depth:
    the haze follows a depth cue and random fields), for synthetic haze over them."""
    paths = list_images(folder)
    if not paths:
        raise ValueError(f"photos folder {folder} holds no images")
    return {p.stem: (load_image(p)[0], None) for p in paths}


def training_photos(photos: str) -> Dict[str, Tuple[torch.Tensor, Optional[torch.Tensor]]]:
    """The clear photos synthetic haze is laid over: a key of :data:`~dehazeddpm.data.PHOTO_SPLITS`
    (the built-in training photos: ``"train"``, ``"train_all"``, ``"train_wide"``) or a folder of the user's
    (:func:`folder_photos`)."""
    return builtin_photos(photos) if photos in PHOTO_SPLITS else folder_photos(photos)


def build_datasets(cfg: TrainConfig) -> Tuple[Dataset, Dict[str, torch.Tensor]]:
    """(training dataset, fixed validation batch {hazy, gt} (N, 3, c, c) in [0, 1])."""
    vcrop = cfg.val_crop or cfg.crop
    if cfg.data == "synthetic":
        photos = training_photos(cfg.photos)
        length = max(1000, cfg.batch_size * 8, cfg.condition_pool)
        train = SyntheticHazeDataset(photos, crop=cfg.crop, length=length, seed=cfg.seed, min_scale=cfg.min_scale,
                                     augment=cfg.augment, random_depth=cfg.random_depth,
                                     nonhomogeneous=cfg.nonhomogeneous, dense_share=cfg.dense_share,
                                     airlight_cast=cfg.airlight_cast, scene_tint=cfg.scene_tint)
        # fixed crops from another seed: a validation set that never changes between runs
        val_ds: Dataset = SyntheticHazeDataset(photos, crop=vcrop, length=cfg.num_val, seed=cfg.seed + 7919, fixed=True,
                                               min_scale=cfg.min_scale)
    elif cfg.data == "dataset":
        pairs = [(p.input, p.gt) for p in dataset_pairs(cfg.dataset, cfg.root, "train")]  # type: ignore[arg-type]
        train = PairedFolderDataset.from_pairs(pairs, crop=cfg.crop, flip=True, seed=cfg.seed)
        val_ds = PairedFolderDataset.from_pairs(pairs, crop=vcrop, flip=False, seed=cfg.seed + 7919)
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


class SceneConditionPool(ConditionPool):
    """``size`` denoiser crops whose condition was built the way the pipeline builds it.

    Scene ``k`` (drawn from ``(seed, k)``): a photo of ``photos`` resized to a shorter side in
    ``scene_sizes``, its colour channels in a random order when ``augment``, hazed whole (depth
    haze over its depth prior, its airlight cast with probability ``airlight_cast``, or, with
    probability ``nonhomogeneous``, non-homogeneous haze, "dense" one time in ``dense_share``), and
    stage 1 run on the whole scene at ``working_size`` (:func:`stage1_at_size`; None: as it is).
    ``crops_per_scene`` random ``crop``-square windows of the scene give the items
    ``{"gt": 3xcxc in [0, 1], "condition": 4xcxc in [-1, 1]}``, mirrored with probability 1/2 per
    epoch like :class:`ConditionPool`. So the denoiser learns on the J and T it is given at
    inference: stage 1's errors at that scene size, the working size's upsampling included. With
    probability ``scene_tint`` the scene is put under a random white balance (:func:`tint_scene`)
    before it is hazed. ``stage1_detail`` > 0: J takes the input's detail finer than that many
    pixels, as the pipeline's option of that name does (:func:`stage1_at_size`); ``stage1_flip``:
    stage 1 averaged with its mirror (:func:`mirror_averaged`), as the pipeline's option of that
    name. ``denoise_size``:
    J, T and the clear scene are then brought to the denoiser's working size
    (:func:`to_working_size`, the pipeline's ``denoise_size``) before cropping, so the denoiser
    learns on what it is given at inference: the whole image at that size.
    """

    def __init__(self, photos: Mapping[str, Tuple[torch.Tensor, Optional[torch.Tensor]]], stage1: Stage1Net,
                 size: int, *, crop: int, scene_sizes: Tuple[int, int], working_size: Optional[int], seed: int,
                 nonhomogeneous: float = 0.0, dense_share: float = 0.3, augment: bool = False,
                 crops_per_scene: int = 4, airlight_cast: float = 0.0, scene_tint: float = 0.0,
                 stage1_detail: int = 0, stage1_flip: bool = False, denoise_size: Optional[int] = None,
                 device: "torch.device | str" = "cpu") -> None:
        if size < 1 or crops_per_scene < 1:
            raise ValueError(f"size and crops_per_scene must be positive, got {size}, {crops_per_scene}")
        lo, hi = scene_sizes
        if not crop <= lo <= hi:
            raise ValueError(f"scene_sizes must satisfy crop <= lo <= hi, got {scene_sizes} with crop {crop}")
        if denoise_size is not None and denoise_size < crop:
            raise ValueError(f"denoise_size must be at least crop ({crop}), got {denoise_size}")
        names = list(photos)
        gts, conds = [], []
        net = mirror_averaged(stage1) if stage1_flip else stage1

        for k in range(math.ceil(size / crops_per_scene)):
            g = item_generator(seed, 1, k)
            clear, depth = photos[names[int(torch.randint(len(names), (1,), generator=g))]]
            side = int(torch.randint(lo, hi + 1, (1,), generator=g))
            shape = scaled_shape(*clear.shape[-2:], side)
            clear = resize(clear[None], shape, "antialias")[0].clamp(0, 1)
            if augment:
                clear = clear[torch.randperm(3, generator=g)]
            if scene_tint > 0 and float(torch.rand((), generator=g)) < scene_tint:
                clear = tint_scene(clear, g)
            d = depth_prior(clear) if depth is None else resize(depth[None, None], shape, "antialias")[0, 0].clamp(0, 1)
            if float(torch.rand((), generator=g)) < nonhomogeneous:
                kind = "dense" if float(torch.rand((), generator=g)) < dense_share else "nh"
                sample = synthesize_nonhomogeneous(clear, kind, d, generator=g)
            elif airlight_cast > 0 and float(torch.rand((), generator=g)) < airlight_cast:
                beta, grey = random_haze_params(g)
                sample = synthesize_haze(clear, d, beta=beta, airlight=smog_or_mist(grey, g))
            else:
                sample = synthesize_haze(clear, d, generator=g)
            with torch.no_grad():
                hazy = sample.hazy[None].to(device)
                out = stage1_at_size(net, hazy, working_size or 0, detail=stage1_detail)
                J, T, clear = out.J, out.T, sample.clear
                if denoise_size:
                    J, T = to_working_size(J, denoise_size), to_working_size(T, denoise_size)
                    clear = to_working_size(clear[None], denoise_size)[0]
                cond = denoiser_condition(J, T)[0].cpu()
            h, w = cond.shape[-2:]
            for _ in range(crops_per_scene):
                top = int(torch.randint(h - crop + 1, (1,), generator=g))
                left = int(torch.randint(w - crop + 1, (1,), generator=g))
                gts.append(clear[:, top:top + crop, left:left + crop])
                conds.append(cond[:, top:top + crop, left:left + crop])
        self.gt, self.condition = torch.stack(gts[:size]), torch.stack(conds[:size])
        self.seed, self.epoch = seed, 0


def make_loader(train: Dataset, cfg: TrainConfig, start_step: int, d: Dist) -> Iterator[Dict[str, Any]]:
    data = StepShardedData(train, cfg.seed)
    # an optimiser step reads batch_size * accumulate samples, as batches of batch_size in order
    pos = list(positions(start_step, cfg.steps, cfg.batch_size * cfg.accumulate, d.rank, d.world))
    # own generator: the loader's worker base seed must not draw from the global RNG, which
    # stage 1's dropout uses (a resumed run creates its loader at a different RNG state)
    dl = DataLoader(data, batch_size=cfg.batch_size, sampler=pos, num_workers=cfg.num_workers,
                    drop_last=False, generator=torch.Generator().manual_seed(cfg.seed * 1000 + start_step))
    return iter(dl)
