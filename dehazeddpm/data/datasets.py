"""Training/evaluation datasets. Every tensor they return is image space: float32 in ``[0, 1]``.

* :class:`PairedFolderDataset`: hazy/clear pairs from two folders, paired by file name;
* :class:`SyntheticHazeDataset`: on-the-fly hazy crops of (built-in) photos with ground-truth
  transmission and airlight, reproducible from ``(seed, epoch, index)``.

Randomness: with an integer ``seed`` each item draws from its own ``torch.Generator`` seeded from
``(seed, epoch, index)``, so results do not depend on worker count, shuffling or the global RNG;
call ``set_epoch(epoch)`` to get fresh crops each epoch. ``PairedFolderDataset(seed=None)`` uses
the global torch RNG instead (which ``DataLoader`` seeds differently per worker).
"""
from __future__ import annotations

import itertools
import math
import os
from collections import defaultdict
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from ..io.images import is_image_file, load_image
from ..utils import resize
from . import haze
from .nonhomogeneous import smog_or_mist, synthesize_nonhomogeneous

__all__ = ["PAIR_SUFFIXES", "PairedFolderDataset", "SyntheticHazeDataset", "item_generator", "list_images", "pair_key"]

# Stripped (case-insensitively, once) from file stems before pairing: "01_hazy" ~ "01_GT" ~ "01".
PAIR_SUFFIXES: tuple[str, ...] = ("_hazy", "_gt", "_clean", "_clear")

# the six orders of the RGB channels (augmentation)
_PERMUTATIONS: tuple[list[int], ...] = tuple(list(p) for p in itertools.permutations(range(3)))

Photos = Mapping[str, tuple[torch.Tensor, Optional[torch.Tensor]]]


def pair_key(stem: str) -> str:
    """Pairing key of a file stem: the stem without one trailing ``PAIR_SUFFIXES`` entry."""
    low = stem.lower()
    for suffix in PAIR_SUFFIXES:
        if low.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    return stem


def item_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A CPU generator for one item, decorrelated across (seed, epoch, index) by SeedSequence."""
    state = np.random.SeedSequence([seed & 0xFFFFFFFFFFFFFFFF, epoch, index]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state >> np.uint64(1)))  # manual_seed wants < 2**63


def _randint(high: int, g: Optional[torch.Generator]) -> int:
    """Uniform integer in [0, high)."""
    return int(torch.randint(high, (1,), generator=g)) if high > 1 else 0


def _rand(g: Optional[torch.Generator]) -> float:
    return float(torch.rand((), generator=g, dtype=torch.float64))


def list_images(folder: Union[str, os.PathLike]) -> list[Path]:
    """The image files directly in ``folder`` (not its subfolders; hidden files skipped), sorted.
    FileNotFoundError if it is not a folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"not a folder: {folder}")
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and is_image_file(p))


def _format_names(names: list[str], limit: int = 20) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


class PairedFolderDataset(Dataset):
    """Hazy/clear pairs from ``hazy_dir`` and ``gt_dir``, matched by ``key(file stem)``.

    ``key`` defaults to :func:`pair_key`, so ``01.png``/``01.png`` and ``01_hazy.png``/
    ``01_GT.png`` both pair; pass e.g. ``lambda s: s.split("_")[0]`` for RESIDE-style names
    (``0001_0.8_0.2.png`` -> ``0001.png``). Several hazy files may share one GT; two GT files with
    one key, an unmatched file on either side, or an empty folder raise ``ValueError`` listing the
    files. Only image extensions are considered (hidden files are skipped). Unreadable images
    raise :class:`~dehazeddpm.io.ImageReadError` naming the file when the item is loaded.

    Items: ``{"hazy": 3xHxW, "gt": 3xHxW, "name": hazy stem}`` in [0, 1]. ``crop`` takes the same
    random ``crop x crop`` window from both (images smaller than that raise ``ValueError``);
    ``flip`` mirrors both horizontally with probability 0.5.
    """

    def __init__(
        self,
        hazy_dir: Union[str, os.PathLike],
        gt_dir: Union[str, os.PathLike],
        *,
        crop: Optional[int] = None,
        flip: bool = False,
        seed: Optional[int] = None,
        key: Callable[[str], str] = pair_key,
    ) -> None:
        self.hazy_dir, self.gt_dir = Path(hazy_dir), Path(gt_dir)
        self._sampling(crop, flip, seed)
        hazy_files, gt_files = list_images(self.hazy_dir), list_images(self.gt_dir)
        if not hazy_files:
            raise ValueError(f"no images in {self.hazy_dir}")
        if not gt_files:
            raise ValueError(f"no images in {self.gt_dir}")

        gt_by_key: dict[str, list[Path]] = defaultdict(list)
        for p in gt_files:
            gt_by_key[key(p.stem)].append(p)
        clashes = [f"{k}: {', '.join(p.name for p in ps)}" for k, ps in sorted(gt_by_key.items()) if len(ps) > 1]
        if clashes:
            raise ValueError(f"several ground-truth files in {self.gt_dir} share a pairing key: " + "; ".join(clashes))

        self.pairs: list[tuple[Path, Path]] = []
        unmatched_hazy: list[str] = []
        used: set[str] = set()
        for p in hazy_files:
            k = key(p.stem)
            if k in gt_by_key:
                self.pairs.append((p, gt_by_key[k][0]))
                used.add(k)
            else:
                unmatched_hazy.append(p.name)
        unmatched_gt = [ps[0].name for k, ps in sorted(gt_by_key.items()) if k not in used]
        if unmatched_hazy or unmatched_gt:
            parts = []
            if unmatched_hazy:
                parts.append(f"{len(unmatched_hazy)} hazy file(s) in {self.hazy_dir} without ground truth: "
                             + _format_names(unmatched_hazy))
            if unmatched_gt:
                parts.append(f"{len(unmatched_gt)} ground-truth file(s) in {self.gt_dir} without a hazy image: "
                             + _format_names(unmatched_gt))
            raise ValueError("unmatched files; " + "; ".join(parts))

    @classmethod
    def from_pairs(cls, pairs: Sequence[Tuple[Union[str, os.PathLike], Union[str, os.PathLike]]], *,
                   crop: Optional[int] = None, flip: bool = False, seed: Optional[int] = None) -> "PairedFolderDataset":
        """The same items over explicit ``(hazy, gt)`` paths, e.g. a public dataset's training split
        (:func:`~dehazeddpm.data.public.dataset_pairs`)."""
        if not pairs:
            raise ValueError("no image pairs to train on")
        self = cls.__new__(cls)
        self.hazy_dir = self.gt_dir = None  # type: ignore[assignment]
        self._sampling(crop, flip, seed)
        self.pairs = [(Path(h), Path(g)) for h, g in pairs]
        return self

    def _sampling(self, crop: Optional[int], flip: bool, seed: Optional[int]) -> None:
        """The per-item randomness both constructors set: crop, flip, seed and epoch."""
        if crop is not None and crop < 1:
            raise ValueError(f"crop must be a positive integer, got {crop}")
        self.crop, self.flip, self.seed, self.epoch = crop, flip, seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch used to seed per-item randomness (only matters with an integer seed)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        hazy_path, gt_path = self.pairs[index]
        hazy = load_image(hazy_path)[0]
        gt = load_image(gt_path)[0]
        if hazy.shape != gt.shape:
            raise ValueError(f"size mismatch: {hazy_path} is {tuple(hazy.shape[1:])}, "
                             f"{gt_path} is {tuple(gt.shape[1:])}")
        g = None if self.seed is None else item_generator(self.seed, self.epoch, index)
        if self.crop is not None:
            h, w = hazy.shape[1:]
            c = self.crop
            if h < c or w < c:
                raise ValueError(f"{hazy_path} is {h}x{w}, smaller than crop {c}")
            top, left = _randint(h - c + 1, g), _randint(w - c + 1, g)
            hazy = hazy[:, top:top + c, left:left + c]
            gt = gt[:, top:top + c, left:left + c]
        if self.flip and _rand(g) < 0.5:
            hazy, gt = hazy.flip(-1), gt.flip(-1)
        return {"hazy": hazy.contiguous(), "gt": gt.contiguous(), "name": hazy_path.stem}


class SyntheticHazeDataset(Dataset):
    """Random hazy crops of clear photos, e.g. ``photos.builtin_photos("train")``.

    Each item: pick a photo, pick a scale in [min_scale, 1] (limited so the crop fits), take a random
    window that becomes a ``crop x crop`` patch at that scale, flip it horizontally with
    probability 0.5, and haze it with :func:`haze.random_haze_params` using the photo's depth (its
    real depth or, if None, :func:`haze.depth_prior` of the *whole* photo, normalised once per
    photo so every crop of one scene shares one depth scale).

    Items: ``{"hazy": 3xcxc, "gt": 3xcxc, "transmission": 1xcxc, "airlight": 3x1x1,
    "beta": 0-d tensor, "name": photo name}``, float32, image space [0, 1].

    Item ``i`` is a pure function of ``(seed, epoch, i)`` (``epoch`` from :meth:`set_epoch`, 0 by
    default); ``fixed=True`` ignores the epoch, for a validation set that never changes.

    ``augment=True`` widens a small photo set: each crop's colour channels are permuted at random
    (one of the six orders) and its depth is raised to a random power in [1/2, 2] (log-uniform), so
    the same scene comes with haze that thickens at another rate; a few photos otherwise let a
    network learn their colours and haze layouts by heart.

    ``random_depth`` (probability in [0, 1]): a crop is hazed over :func:`haze.random_depth_field`
    instead of the photo's depth, so the haze does not follow the depth prior's layout. 0 draws no
    extra random numbers (earlier recipes reproduce).

    ``nonhomogeneous`` (probability in [0, 1]): a crop gets non-homogeneous haze
    (:func:`~dehazeddpm.data.nonhomogeneous.synthesize_nonhomogeneous`, kind "dense" one time in
    ``dense_share``, else "nh") over its depth instead; its "airlight" is the mean of the airlight
    map. 0 draws no extra random numbers.

    ``airlight_cast`` (probability in [0, 1]): a depth-hazed crop's airlight is cast towards smog
    or mist like the non-homogeneous kinds' (:func:`~dehazeddpm.data.nonhomogeneous.smog_or_mist`)
    instead of near-grey. 0 draws no extra random numbers.

    ``scene_tint`` (probability in [0, 1]): a crop's clear image (its ground truth) is put under a
    random white balance first (:func:`haze.tint_scene`), so a clear scene is not always neutral.
    0 draws no extra random numbers.
    """

    def __init__(self, photos: Photos, *, crop: int, length: int, seed: int = 0, fixed: bool = False,
                 min_scale: float = 0.5, augment: bool = False, random_depth: float = 0.0,
                 nonhomogeneous: float = 0.0, dense_share: float = 0.3, airlight_cast: float = 0.0,
                 scene_tint: float = 0.0) -> None:
        if not photos:
            raise ValueError("photos is empty")
        if crop < 1 or length < 1:
            raise ValueError(f"crop and length must be positive, got crop={crop}, length={length}")
        if not 0 < min_scale <= 1:
            raise ValueError(f"min_scale must lie in (0, 1], got {min_scale}")
        if not 0 <= random_depth <= 1:
            raise ValueError(f"random_depth is a probability in [0, 1], got {random_depth}")
        if not all(0 <= p <= 1 for p in (nonhomogeneous, dense_share, airlight_cast, scene_tint)):
            raise ValueError(f"nonhomogeneous, dense_share, airlight_cast and scene_tint are probabilities in [0, 1], "
                             f"got {nonhomogeneous}, {dense_share}, {airlight_cast}, {scene_tint}")
        self.airlight_cast, self.scene_tint = float(airlight_cast), float(scene_tint)
        self.random_depth = float(random_depth)
        self.nonhomogeneous, self.dense_share = float(nonhomogeneous), float(dense_share)
        self.crop, self.length, self.seed, self.fixed, self.epoch = crop, length, seed, fixed, 0
        self.min_scale = float(min_scale)
        self.augment = bool(augment)
        self.names = list(photos)
        self.photos: list[tuple[torch.Tensor, torch.Tensor]] = []
        for name in self.names:
            clear, depth = photos[name]
            clear = clear[0] if clear.ndim == 4 else clear
            if clear.ndim != 3 or clear.shape[0] != 3:
                raise ValueError(f"photo {name!r}: expected 3xHxW, got {tuple(clear.shape)}")
            if min(clear.shape[1:]) < crop:
                raise ValueError(f"photo {name!r} is {clear.shape[1]}x{clear.shape[2]}, smaller than crop {crop}")
            clear = clear.float().contiguous()
            d = haze.depth_prior(clear) if depth is None else torch.as_tensor(depth, dtype=torch.float32)
            if d.shape != clear.shape[1:]:
                raise ValueError(f"photo {name!r}: depth {tuple(d.shape)} does not match {tuple(clear.shape[1:])}")
            # one scale per scene (same rule as synthesize_haze's normalize_depth)
            finite = torch.isfinite(d)
            if not finite.all():  # unknown depth counts as farthest, as in synthesize_haze
                d = torch.where(finite, d, d[finite].max() if finite.any() else torch.ones(()))
            if float(d.min()) < 0:
                raise ValueError(f"photo {name!r}: depth must be non-negative")
            d = d / d.max() if float(d.max()) > 0 else d
            self.photos.append((clear, d.contiguous()))

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch mixed into the per-item seed (ignored when ``fixed``)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        if index < 0:
            index += self.length
        if not 0 <= index < self.length:
            raise IndexError(index)
        g = item_generator(self.seed, 0 if self.fixed else self.epoch, index)
        k = _randint(len(self.photos), g)
        clear, depth = self.photos[k]
        h, w = clear.shape[1:]
        c = self.crop
        # scale s in [max(min_scale, c / shorter side), 1]: the source window c / s must fit the photo
        s_min = max(self.min_scale, c / min(h, w))
        s = s_min + _rand(g) * (1.0 - s_min)
        win = min(min(h, w), max(c, round(c / s)))
        top, left = _randint(h - win + 1, g), _randint(w - win + 1, g)
        patch = clear[:, top:top + win, left:left + win]
        dpatch = depth[top:top + win, left:left + win]
        if win != c:
            patch = resize(patch[None], (c, c), "antialias")[0].clamp(0, 1)
            dpatch = resize(dpatch[None, None], (c, c), "antialias")[0, 0].clamp(0, 1)
        if _rand(g) < 0.5:
            patch, dpatch = patch.flip(-1), dpatch.flip(-1)
        if self.augment:
            patch = patch[_PERMUTATIONS[_randint(len(_PERMUTATIONS), g)]]
            dpatch = dpatch ** math.exp((2 * _rand(g) - 1) * math.log(2))
        if self.scene_tint > 0 and _rand(g) < self.scene_tint:
            patch = haze.tint_scene(patch, g)
        if self.random_depth > 0 and _rand(g) < self.random_depth:
            dpatch = haze.random_depth_field(c, c, generator=g)
        if self.nonhomogeneous > 0 and _rand(g) < self.nonhomogeneous:
            kind = "dense" if _rand(g) < self.dense_share else "nh"
            sample = synthesize_nonhomogeneous(patch, kind, dpatch, generator=g)
        else:
            beta, airlight = haze.random_haze_params(g)
            if self.airlight_cast > 0 and _rand(g) < self.airlight_cast:
                airlight = smog_or_mist(airlight, g)
            sample = haze.synthesize_haze(patch, dpatch, beta=beta, airlight=airlight, normalize_depth=False)
        return {
            "hazy": sample.hazy.contiguous(),
            "gt": sample.clear.contiguous(),
            "transmission": sample.transmission.contiguous(),
            "airlight": sample.airlight,
            "beta": torch.tensor(sample.beta, dtype=torch.float32),
            "name": self.names[k],
        }
