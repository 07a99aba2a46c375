"""The public dehazing benchmarks by their published file names, with each one's standard split.

Layer: data. Nothing is downloaded: ``root`` is the folder a dataset unpacks to (its files may
sit in one folder or in subfolders such as ``hazy/`` and ``GT/``; the tree is searched). Each
reader finds every hazy image and its ground truth by the dataset's own names, refuses what it
cannot place (an unknown image, a hazy image without its ground truth, a test image missing),
and returns the pairs of the split papers report:

=============  =================================================  ===========================
name           files                                              test split
=============  =================================================  ===========================
nh-haze        ``01_hazy.png`` / ``01_GT.png``                    51-55 (NTIRE 2020)
dense-haze     ``01_hazy.png`` / ``01_GT.png``                    51-55 (NTIRE 2019)
o-haze         ``01_outdoor_hazy.jpg`` / ``01_outdoor_GT.jpg``    41-45 (NTIRE 2018)
i-haze         ``01_indoor_hazy.jpg`` / ``01_indoor_GT.jpg``      31-35 (NTIRE 2018)
sots-indoor    ``hazy/1400_1.png`` / ``gt/1400.png``              all 500 hazy images
sots-outdoor   ``hazy/0001_0.8_0.2.jpg`` / ``gt/0001.png``        all 500 hazy images
hsts           ``synthetic/0586.jpg`` / ``original/0586.jpg``     all 10 synthetic images
=============  =================================================  ===========================

RESIDE's ground-truth folder may be called ``gt``, ``GT``, ``clear`` or ``original``; several
hazy images share one clear image there, so a pair's name is the hazy file's stem.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, FrozenSet, List, Optional, Sequence, Tuple, Union

from ..io.images import is_image_file

__all__ = ["DATASETS", "SPLITS", "DatasetError", "DatasetLayout", "Pair", "dataset_pairs", "describe_datasets"]

SPLITS = ("test", "all", "train")


class DatasetError(ValueError):
    """A dataset folder that does not hold what its published names promise; the message names the file."""


@dataclass(frozen=True)
class Pair:
    """One evaluation pair: ``name`` (the pairing key), the input image and its ground truth."""

    name: str
    input: Path
    gt: Path


@dataclass(frozen=True)
class DatasetLayout:
    """How one public dataset names its files.

    hazy, gt: patterns of a file name whose ``id`` group is the scene number.
    hazy_dirs, gt_dirs: the folder names (lower case) those files sit in; None: any folder.
    test_ids: the scene numbers of the standard test split; None: every image.
    source: where the dataset and its split are published.
    """

    name: str
    hazy: str
    gt: str
    test_ids: Optional[Tuple[int, ...]]
    source: str
    hazy_dirs: Optional[FrozenSet[str]] = None
    gt_dirs: Optional[FrozenSet[str]] = None
    example: str = ""

    def split_ids(self, split: str) -> Optional[Tuple[int, ...]]:
        """The scene numbers ``split`` keeps (None: all); ``"train"`` is every scene but the test split's."""
        if split not in SPLITS:
            raise DatasetError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        if split == "train" and self.test_ids is None:
            raise DatasetError(f"{self.name} has no training split: papers test on all of its images")
        return self.test_ids if split != "all" else None


_RESIDE_GT = frozenset({"gt", "clear", "original"})
_NTIRE = r"\d+"
_IMG = r"\.(?:png|jpe?g)"

DATASETS: Dict[str, DatasetLayout] = {d.name: d for d in (
    DatasetLayout("nh-haze", rf"(?P<id>{_NTIRE})_hazy{_IMG}", rf"(?P<id>{_NTIRE})_GT{_IMG}", tuple(range(51, 56)),
                  "Ancuti et al., NH-HAZE, NTIRE 2020 (CVPRW 2020)", example="01_hazy.png / 01_GT.png"),
    DatasetLayout("dense-haze", rf"(?P<id>{_NTIRE})_hazy{_IMG}", rf"(?P<id>{_NTIRE})_GT{_IMG}",
                  tuple(range(51, 56)), "Ancuti et al., Dense-Haze, ICIP 2019 / NTIRE 2019",
                  example="01_hazy.png / 01_GT.png"),
    DatasetLayout("o-haze", rf"(?P<id>{_NTIRE})_outdoor_hazy{_IMG}", rf"(?P<id>{_NTIRE})_outdoor_GT{_IMG}",
                  tuple(range(41, 46)), "Ancuti et al., O-HAZE, NTIRE 2018 (CVPRW 2018)",
                  example="01_outdoor_hazy.jpg / 01_outdoor_GT.jpg"),
    DatasetLayout("i-haze", rf"(?P<id>{_NTIRE})_indoor_hazy{_IMG}", rf"(?P<id>{_NTIRE})_indoor_GT{_IMG}",
                  tuple(range(31, 36)), "Ancuti et al., I-HAZE, NTIRE 2018 (ACIVS 2018)",
                  example="01_indoor_hazy.jpg / 01_indoor_GT.jpg"),
    DatasetLayout("sots-indoor", rf"(?P<id>\d+)_\d+{_IMG}", rf"(?P<id>\d+){_IMG}", None,
                  "Li et al., RESIDE (TIP 2019), SOTS indoor", frozenset({"hazy"}), _RESIDE_GT,
                  example="hazy/1400_1.png / gt/1400.png"),
    DatasetLayout("sots-outdoor", rf"(?P<id>\d+)_[\d.]+_[\d.]+{_IMG}", rf"(?P<id>\d+){_IMG}", None,
                  "Li et al., RESIDE (TIP 2019), SOTS outdoor", frozenset({"hazy"}), _RESIDE_GT,
                  example="hazy/0001_0.8_0.2.jpg / gt/0001.png"),
    DatasetLayout("hsts", rf"(?P<id>\d+)(?:_[\d.]+)*{_IMG}", rf"(?P<id>\d+){_IMG}", None,
                  "Li et al., RESIDE (TIP 2019), HSTS synthetic", frozenset({"hazy", "synthetic"}), _RESIDE_GT,
                  example="synthetic/0586.jpg / original/0586.jpg"),
)}


def _images(root: Path) -> List[Path]:
    """Every image file under root, skipping hidden files and macOS archive debris."""
    return sorted(p for p in root.rglob("*") if p.is_file() and is_image_file(p) and not p.name.startswith(".")
                  and "__MACOSX" not in p.parts)


def _in(dirs: Optional[FrozenSet[str]], path: Path) -> bool:
    return dirs is None or path.parent.name.lower() in dirs


def _classify(layout: DatasetLayout, root: Path) -> Tuple[List[Tuple[int, Path]], Dict[int, Path]]:
    """(hazy files with their scene id, ground truth by scene id); unknown images are an error."""
    hazy_re, gt_re = re.compile(layout.hazy, re.I), re.compile(layout.gt, re.I)
    hazy: List[Tuple[int, Path]] = []
    gt: Dict[int, Path] = {}
    seen: Dict[str, Path] = {}
    for path in _images(root):
        in_hazy, in_gt = _in(layout.hazy_dirs, path), _in(layout.gt_dirs, path)
        if layout.hazy_dirs is not None and not (in_hazy or in_gt):
            continue  # RESIDE folders hold more than the split (real-world photos, depth maps)
        m_gt = gt_re.fullmatch(path.name) if in_gt else None
        m_hazy = hazy_re.fullmatch(path.name) if in_hazy and not m_gt else None
        if not (m_gt or m_hazy):
            raise DatasetError(f"{path} is not a {layout.name} file name (expected {layout.example})")
        key = f"{'gt' if m_gt else 'hazy'}:{path.name.lower()}"
        if key in seen:
            raise DatasetError(f"{path} and {seen[key]} are the same {layout.name} image twice; keep one")
        seen[key] = path
        if m_gt:
            sid = int(m_gt["id"])
            if sid in gt:
                raise DatasetError(f"{path} and {gt[sid]} are both the ground truth of scene {sid}; keep one")
            gt[sid] = path
        else:
            hazy.append((int(m_hazy["id"]), path))
    return hazy, gt


def dataset_pairs(name: str, root: Union[str, Path], split: str = "test") -> List[Pair]:
    """The pairs of a public dataset under ``root``: the standard test split (``split="test"``),
    every other image (``"train"``, for fine-tuning) or every image (``"all"``), sorted by name. Raises :class:`DatasetError` naming the file for an
    unknown name or split, an image that is not the dataset's, a hazy image without ground truth
    (or the reverse), or a test scene that is missing; ``FileNotFoundError`` for a missing root."""
    layout = DATASETS.get(name)
    if layout is None:
        raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    ids = layout.split_ids(split)
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"not a folder: {root} (give the folder {name} unpacks to)")
    hazy, gt = _classify(layout, root)
    if not hazy and not gt:
        raise DatasetError(f"no {layout.name} images under {root} (expected names like {layout.example})")
    for sid, path in hazy:
        if sid not in gt:
            raise DatasetError(f"{path} has no ground truth (scene {sid}) under {root}")
    lonely = sorted(set(gt) - {sid for sid, _ in hazy})
    if lonely:
        raise DatasetError(f"{gt[lonely[0]]} has no hazy image under {root}")
    if ids is not None and split == "test":
        missing = sorted(set(ids) - {sid for sid, _ in hazy})
        if missing:
            raise DatasetError(f"{layout.name}'s test split is scenes {ids[0]}-{ids[-1]}; scene "
                               f"{', '.join(map(str, missing))} is missing under {root}")
    # "test" keeps the split's scenes, "train" the others, "all" (ids None) every one
    chosen = [(sid, p) for sid, p in hazy if ids is None or (sid in ids) == (split == "test")]
    if not chosen:
        raise DatasetError(f"no {layout.name} images of the {split} split under {root}")
    return sorted((Pair(_pair_name(p), p, gt[sid]) for sid, p in chosen), key=lambda pr: pr.name)


def _pair_name(hazy: Path) -> str:
    """A pair's name: the hazy stem without its ``_hazy`` word (``01_hazy`` -> ``01``,
    ``01_outdoor_hazy`` -> ``01_outdoor``; RESIDE's ``0001_0.8_0.2`` stays whole)."""
    stem = hazy.stem
    return stem[:-5] if stem.lower().endswith("_hazy") else stem


def describe_datasets(names: Sequence[str] = tuple(DATASETS)) -> str:
    """One line per dataset: its name, its files and its test split (the CLI's help)."""
    return "\n".join(f"{n}: {DATASETS[n].example}; test split "
                     + (f"{DATASETS[n].test_ids[0]}-{DATASETS[n].test_ids[-1]}" if DATASETS[n].test_ids else "all")
                     for n in names)
