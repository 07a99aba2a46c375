"""The photos bundled with the package's dependencies, split into disjoint train and eval sets.

Photos come from files inside installed wheels (nothing is downloaded): scikit-image's data,
the photos PyWavelets, mahotas and glymur ship (:data:`WHEEL_PHOTOS` says which file and
licence), and this package's own ``assets/photos`` (:data:`ASSET_PHOTOS`, from Debian's lomiri
wallpapers, credited in ``assets/photos/README.md``):

* ``TRAIN_PHOTOS``: astronaut, coffee, chelsea, immunohistochemistry, hubble_deep_field, grass,
  brick, gravel, coins, moon, text, page (scikit-image); ascent, aero (PyWavelets);
  department_store, luispedro (mahotas);
* ``MORE_TRAIN_PHOTOS``: nemo (a Boston street after a blizzard), goodstuff (a glass of beer)
  (glymur). Split ``"train_all"`` is both sets; ``"train"`` stays the 16 above so the recipes
  trained on them reproduce;
* ``WIDE_TRAIN_PHOTOS``: picosdeeuropa, life, friends, seeding, wine, fig, brushes (CC BY 4.0 /
  CC0 wallpapers): split ``"train_wide"`` is ``"train_all"`` and these;
* ``JUDGE_PHOTOS``: bridge, dragonfly, kleiber, free, greentock (CC BY-SA wallpapers), split
  ``"judge"``: photos no shipped weights train on, for rules that must see how weights do on a
  photo they never saw;
* ``EVAL_PHOTOS``: motorcycle (left view of Middlebury 2014 "Motorcycle", with its *real*
  disparity-derived depth), rocket, camera.
* ``INDEPENDENT_PHOTOS``: grace_hopper (matplotlib's sample portrait), split ``"independent"``.

matplotlib's and scikit-learn's sample images (``grace_hopper`` among them) are reserved for
independent evaluation and are never trained on: no training split holds them. Grayscale photos are replicated to RGB.
skimage's ``cat`` is the same photo as ``chelsea`` and ``motorcycle_right`` shows the same scene
as ``motorcycle``; both are left out so nothing leaks between the splits. Only ``motorcycle`` has
real depth; the others are hazed over :func:`dehazeddpm.data.haze.depth_prior`.

All images here are image space: float ``[0, 1]``, ``3xHxW``.
"""
from __future__ import annotations

import functools
import zlib
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch

from ..io.images import load_image, save_image_atomic, to_pil
from ..utils import resize, scaled_shape, write_json
from .haze import HazySample, depth_prior, random_haze_params, synthesize_haze
from .nonhomogeneous import HAZE_KINDS, synthesize_nonhomogeneous

__all__ = ["ASSET_PHOTOS", "EVAL_HAZE", "EVAL_PHOTOS", "INDEPENDENT_PHOTOS", "JUDGE_PHOTOS", "MORE_TRAIN_PHOTOS", "MOTORCYCLE_DOFFS", "PHOTO_SPLITS", "REAL_HAZE_PHOTOS", "TRAIN_PHOTOS", "WHEEL_PHOTOS", "WIDE_TRAIN_PHOTOS", "builtin_photos", "disparity_to_depth", "real_haze_photos",
           "eval_haze", "eval_haze_params", "load_photo", "make_eval_set", "resize_photo"]

TRAIN_PHOTOS: tuple[str, ...] = ("astronaut", "coffee", "chelsea", "immunohistochemistry", "hubble_deep_field", "grass",
                                  "brick", "gravel", "coins", "moon", "text", "page",
                                  "ascent", "aero", "department_store", "luispedro")
MORE_TRAIN_PHOTOS: tuple[str, ...] = ("nemo", "goodstuff")
WIDE_TRAIN_PHOTOS: tuple[str, ...] = ("picosdeeuropa", "life", "friends", "seeding", "wine", "fig", "brushes")
PHOTO_SPLITS: dict[str, tuple[str, ...]] = {"train": TRAIN_PHOTOS, "train_all": TRAIN_PHOTOS + MORE_TRAIN_PHOTOS,
                                            "train_wide": TRAIN_PHOTOS + MORE_TRAIN_PHOTOS + WIDE_TRAIN_PHOTOS}
# Never in PHOTO_SPLITS (what training reads), so their CC BY-SA licence cannot reach trained weights.
JUDGE_PHOTOS: tuple[str, ...] = ("bridge", "dragonfly", "kleiber", "free", "greentock")
# Clear photos shipped in assets/photos (512 px shorter side): name -> licence, credited in its README.
ASSET_PHOTOS: dict[str, str] = {
    **{name: "CC BY 4.0" for name in ("picosdeeuropa", "life", "friends", "wine", "fig", "brushes")},
    "seeding": "CC0 1.0", "kleiber": "CC BY-SA 3.0",
    **{name: "CC BY-SA 4.0" for name in ("bridge", "dragonfly", "free", "greentock")},
}
_ASSET_PHOTO_DIR = Path(__file__).resolve().parents[1] / "assets" / "photos"

# Photos other packages bundle in their wheels: name -> (import name, file inside the package,
# licence). The files are found through the package's install location, without importing it.
# Left out on purpose: mahotas' lena.jpg (no licence for the photo and a long-standing request
# to stop using it), PyWavelets' camera.npz (skimage's camera, an eval photo), imgaug's
# quokka.jpg (imgaug pulls OpenCV and Shapely in for one photo).
WHEEL_PHOTOS: dict[str, tuple[str, str, str]] = {
    "ascent": ("pywt", "data/ascent.npz", "PyWavelets (MIT); public domain photo (see pywt.data.ascent)"),
    "aero": ("pywt", "data/aero.npz", "PyWavelets (MIT), bundled aerial photograph"),
    "department_store": ("mahotas", "demos/data/DepartmentStore.jpg", "mahotas (MIT), bundled demo photo"),
    "luispedro": ("mahotas", "demos/data/luispedro.jpg", "mahotas (MIT), bundled portrait of its author"),
    "nemo": ("glymur", "data/nemo.jp2", "glymur (MIT), its author's photo of Boston after the 2013 blizzard Nemo"),
    "goodstuff": ("glymur", "data/goodstuff.j2k", "glymur (MIT), its author's photo of a glass of beer"),
    "grace_hopper": ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg",
                     "matplotlib (PSF-based licence), its sample data; a U.S. Navy portrait, public domain"),
}
# Wheel photos far larger than the others are shrunk on load (shorter side, px): a crop then
# spans as much of the scene as a crop of a 512 px photo can, not only a patch of texture.
_SHORTER_SIDE: dict[str, int] = {"nemo": 728}
EVAL_PHOTOS: tuple[str, ...] = ("motorcycle", "rocket", "camera")
# Reserved for independent evaluation (never in PHOTO_SPLITS, which is what training reads).
INDEPENDENT_PHOTOS: tuple[str, ...] = ("grace_hopper",)
# Photos of real haze, shipped in the package (CC BY 4.0; assets/real_haze/README.md credits them):
# judged by eye, never trained on; no ground truth exists for them.
REAL_HAZE_PHOTOS: tuple[str, ...] = ("aitzgorri", "sunset")
_REAL_HAZE_DIR = Path(__file__).resolve().parents[1] / "assets" / "real_haze"


def real_haze_photos() -> dict[str, Path]:
    """The bundled photos of real haze, name -> JPEG path (:data:`REAL_HAZE_PHOTOS`); load one
    with :func:`dehazeddpm.io.load_image`. Real distance haze, not synthetic: there is no clear
    ground truth, so they are for looking at, not for PSNR."""
    return {name: _REAL_HAZE_DIR / f"{name}.jpg" for name in REAL_HAZE_PHOTOS}

# Middlebury's depth is Z = f * baseline / (disparity + doffs); doffs (the principal point
# offset between the two cameras) for the 4x down-sampled Motorcycle shipped by skimage.
MOTORCYCLE_DOFFS = 31.086


def disparity_to_depth(disp: Union[np.ndarray, torch.Tensor], *, doffs: float = 0.0) -> torch.Tensor:
    """Stereo disparity HxW (pixels) -> relative depth HxW in (0, 1], 1 = farthest.

    depth = 1 / (disparity + doffs) (``doffs`` is Middlebury's principal-point offset; 0 for a
    plain stereo pair), divided by its maximum so depth ratios survive. Invalid disparities
    (non-finite or <= -doffs, e.g. occlusions) are filled along each row with the smaller
    (farther) of the nearest valid disparities to the left and right: occluded pixels belong to
    the background of the adjacent edge. A map with no valid pixel raises ``ValueError``.
    """
    dp = np.asarray(disp.detach().cpu() if isinstance(disp, torch.Tensor) else disp, dtype=np.float64)
    if dp.ndim != 2:
        raise ValueError(f"expected an HxW disparity map, got shape {dp.shape}")
    dp = dp + doffs
    valid = np.isfinite(dp) & (dp > 0)
    if not valid.any():
        raise ValueError("disparity map has no valid (finite, positive) value")
    if not valid.all():
        h, w = dp.shape
        cols = np.arange(w)
        # index of the nearest valid pixel to the left / right in each row (-1 / w when none)
        left = np.maximum.accumulate(np.where(valid, cols, -1), axis=1)
        right = np.minimum.accumulate(np.where(valid, cols, w)[:, ::-1], axis=1)[:, ::-1]
        rows = np.arange(h)[:, None]
        big = np.inf
        from_left = np.where(left >= 0, dp[rows, np.clip(left, 0, w - 1)], big)
        from_right = np.where(right < w, dp[rows, np.clip(right, 0, w - 1)], big)
        filled = np.minimum(from_left, from_right)
        # rows without any valid pixel: farthest valid disparity in the map
        filled = np.where(np.isfinite(filled), filled, dp[valid].min())
        dp = np.where(valid, dp, filled)
    depth = 1.0 / dp
    return torch.from_numpy(depth / depth.max()).float()


def _skimage_data():
    try:
        import skimage.data
    except ImportError as exc:  # scikit-image is a train/dev extra, not a core dependency
        raise ImportError(
            "the built-in photos come from scikit-image: pip install scikit-image "
            "(or pip install 'dehazeddpm[train]')"
        ) from exc
    return skimage.data


def _wheel_photo(name: str) -> np.ndarray:
    """The HxW or HxWx3 uint8 array of a :data:`WHEEL_PHOTOS` entry, read from the installed wheel."""
    import importlib.util

    from PIL import Image

    package, rel, _licence = WHEEL_PHOTOS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pip_name = {"pywt": "PyWavelets"}.get(package, package)
        raise ImportError(f"the photo {name!r} ships with {pip_name}: pip install {pip_name} "
                          "(or pip install 'dehazeddpm[train]')")
    path = Path(list(spec.submodule_search_locations)[0]) / rel
    if path.suffix == ".npz":
        with np.load(path) as npz:
            return np.asarray(npz["data"], dtype=np.uint8)
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _rgb(arr: np.ndarray) -> np.ndarray:
    return np.repeat(arr[:, :, None], 3, axis=2) if arr.ndim == 2 else arr[:, :, :3]


@functools.lru_cache(maxsize=None)
def load_photo(name: str) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """One built-in photo as ``(clear 3xHxW in [0, 1], depth HxW or None)``, decoded once per
    process (callers must not modify the tensors: :func:`builtin_photos` hands out copies)."""
    if name in ASSET_PHOTOS:
        return load_image(_ASSET_PHOTO_DIR / f"{name}.jpg")[0], None
    if name in WHEEL_PHOTOS:
        clear = load_image(_rgb(_wheel_photo(name)))[0]
        if name in _SHORTER_SIDE:
            clear, _ = resize_photo(clear, None, _SHORTER_SIDE[name])
        return clear, None
    data = _skimage_data()
    if name == "motorcycle":
        left, _right, disp = data.stereo_motorcycle()
        depth = disparity_to_depth(disp, doffs=MOTORCYCLE_DOFFS)
        return load_image(left)[0], depth
    if name not in TRAIN_PHOTOS + EVAL_PHOTOS:
        raise KeyError(name)
    return load_image(_rgb(getattr(data, name)()))[0], None


def builtin_photos(split: str) -> dict[str, tuple[torch.Tensor, Optional[torch.Tensor]]]:
    """Built-in photos of ``split`` (a :data:`PHOTO_SPLITS` key, "eval", "independent" or "judge") as ``{name: (clear, depth)}``.

    clear: float32 3xHxW in [0, 1]; depth: HxW relative depth in (0, 1] (1 = farthest) where the
    photo has real depth (``motorcycle``), else None. The training splits nest ("train" within
    "train_all" within "train_wide"); ``EVAL_PHOTOS``, ``INDEPENDENT_PHOTOS`` and ``JUDGE_PHOTOS``
    are disjoint from them and from each other.
    Returns fresh tensors: callers may modify them.
    Requires scikit-image (ImportError with the install command otherwise).
    """
    splits = {**PHOTO_SPLITS, "eval": EVAL_PHOTOS, "independent": INDEPENDENT_PHOTOS, "judge": JUDGE_PHOTOS}
    names = splits.get(split)
    if names is None:
        raise ValueError(f"split must be one of {', '.join(map(repr, splits))}, got {split!r}")
    out: dict[str, tuple[torch.Tensor, Optional[torch.Tensor]]] = {}
    for name in names:
        clear, depth = load_photo(name)
        out[name] = (clear.clone(), None if depth is None else depth.clone())
    return out


def resize_photo(clear: torch.Tensor, depth: Optional[torch.Tensor], size: int
                 ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """A photo (3xHxW, [0, 1]) and its depth (HxW or None) with the shorter side ``size``.

    The photo goes through 8 bits and Lanczos, so a ground truth stays the 8-bit image that is
    saved anyway; the depth is resized bilinearly (antialiased when shrinking).
    """
    from PIL import Image

    h, w = clear.shape[-2:]
    new_h, new_w = scaled_shape(h, w, size)
    clear = load_image(to_pil(clear).resize((new_w, new_h), Image.LANCZOS))[0]
    if depth is not None:
        depth = resize(depth[None, None], (new_h, new_w), "antialias" if new_h < h else "bilinear")[0, 0]
    return clear, depth


# The kinds of eval haze: "depth" (today's depth-driven haze) and the non-homogeneous kinds.
EVAL_HAZE: tuple[str, ...] = ("depth",) + tuple(HAZE_KINDS)


def _name_generator(name: str, seed: int, salt: int = 0) -> torch.Generator:
    state = np.random.SeedSequence([seed, zlib.crc32(name.encode()), salt]).generate_state(2, dtype=np.uint64)
    return torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))


def eval_haze_params(name: str, seed: int = 0) -> tuple[float, tuple[float, float, float]]:
    """The fixed ``(beta, airlight)`` of eval photo ``name`` for ``seed`` (as used by make_eval_set).

    Seeded by the photo's name, not its position, so adding photos never changes existing pairs.
    """
    state = np.random.SeedSequence([seed, zlib.crc32(name.encode())]).generate_state(2, dtype=np.uint64)
    g = torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))  # as before salts: pairs unchanged
    return random_haze_params(g)


def eval_haze(name: str, clear: torch.Tensor, depth: Optional[torch.Tensor], *, kind: str = "depth",
              seed: int = 0) -> HazySample:
    """The haze :func:`make_eval_set` lays over photo ``name`` (its clear image 3xHxW in [0, 1] and
    depth HxW or None, as :func:`builtin_photos` / :func:`resize_photo` give them), with the true
    transmission and airlight that the saved pair does not keep. Seeded by ``name`` and ``seed``."""
    if kind not in EVAL_HAZE:
        raise ValueError(f"kind must be one of {EVAL_HAZE}, got {kind!r}")
    if kind == "depth":
        beta, airlight = eval_haze_params(name, seed)
        return synthesize_haze(clear, depth, beta=beta, airlight=airlight)
    d = depth_prior(clear) if depth is None else depth.clamp(0, 1)
    return synthesize_nonhomogeneous(clear, kind, d, generator=_name_generator(name, seed, 1))


def make_eval_set(
    out_dir: Union[str, Path], *, size: Optional[int] = None, seed: int = 0, kind: str = "depth",
    split: str = "eval", names: Optional[Sequence[str]] = None,
) -> list[tuple[Path, Path]]:
    """Write the deterministic eval pairs ``out_dir/hazy/NAME.png`` and ``out_dir/gt/NAME.png``.

    One pair per ``EVAL_PHOTOS`` entry, in that order (``split="train"``: per ``TRAIN_PHOTOS``
    entry, for choices that must not look at the eval photos; any split of :func:`builtin_photos`;
    ``names`` keeps only those). ``kind`` (one of :data:`EVAL_HAZE`):
    "depth" hazes over the photo's depth with :func:`eval_haze_params`; "nh" / "dense" lay
    non-homogeneous haze of that kind (:func:`synthesize_nonhomogeneous`) seeded by the photo's
    name, whose layout is the same at every ``size``. The parameters go to ``out_dir/params.json``.
    ``size``: resize so the shorter side is ``size`` pixels first (None keeps the original size).
    The hazy image is made from the 8-bit GT exactly as saved, so the pair is consistent. Files
    are written atomically; rerunning rewrites identical bytes. Returns ``[(hazy_path, gt_path), ...]``.
    """
    out = Path(out_dir)
    if size is not None and size < 1:
        raise ValueError(f"size must be a positive integer, got {size}")
    if kind not in EVAL_HAZE:
        raise ValueError(f"kind must be one of {EVAL_HAZE}, got {kind!r}")
    pairs: list[tuple[Path, Path]] = []
    params: dict[str, dict] = {}
    for name, (clear, depth) in builtin_photos(split).items():
        if names is not None and name not in names:
            continue
        if size is not None:
            clear, depth = resize_photo(clear, depth, size)
        info: dict = {"height": int(clear.shape[-2]), "width": int(clear.shape[-1]), "real_depth": depth is not None}
        sample = eval_haze(name, clear, depth, kind=kind, seed=seed)
        if kind == "depth":
            info.update(beta=sample.beta, airlight=list(eval_haze_params(name, seed)[1]))
        else:
            info.update(beta=sample.beta, mean_airlight=[round(v, 4) for v in sample.airlight.flatten().tolist()],
                        mean_transmission=round(float(sample.transmission.mean()), 4))
        gt_path = save_image_atomic(sample.clear, out / "gt" / f"{name}.png")
        hazy_path = save_image_atomic(sample.hazy, out / "hazy" / f"{name}.png")
        pairs.append((hazy_path, gt_path))
        params[name] = info
    write_json(out / "params.json", {"seed": seed, "size": size, "kind": kind, "images": params})
    return pairs
