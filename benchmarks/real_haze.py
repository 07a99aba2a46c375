"""Real haze, judged by eye: the demo weights of two revisions side by side on photos no one hazed.

Usage::

    python benchmarks/real_haze.py --before 8206101 [--before-options JSON] [--photos DIR] [--out docs/real_haze.jpg]

For each photo (``--photos``: a folder of images; default the package's photos of real haze,
:func:`dehazeddpm.data.real_haze_photos`, CC BY 4.0, credited in ``dehazeddpm/assets/real_haze/``):
the hazy photo, then stage 1's J, its
transmission T and the default call (seed 0) with the demo weights of ``--before`` (a git
revision; its ``dehazeddpm/assets`` files, read with ``git show``) and with today's. Without
ground truth the figure is the judgement; the JSON adds two measures of each output: the haze
left (:func:`dehazeddpm.metrics.haze_density`, the mean dark channel, in [0, 1]) and the colour
shift from the photo (mean a* and b* of the output minus the photo's, CIE Lab).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from dehazeddpm.data import real_haze_photos  # noqa: E402
from dehazeddpm.data.datasets import list_images  # noqa: E402
from dehazeddpm.hub import WeightsError  # noqa: E402
from dehazeddpm.inference import DehazePipeline, pin_threads  # noqa: E402
from dehazeddpm.io import CheckpointError, ImageReadError, load_image  # noqa: E402
from dehazeddpm.metrics import haze_density, mean_ab  # noqa: E402
from dehazeddpm.utils import write_json  # noqa: E402
from dehazeddpm.viz.plotting import to_numpy_image  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ASSETS = "dehazeddpm/assets"


def weights_at(rev: str, dest: Path) -> Tuple[Path, Path]:
    """The demo stage 1 and denoiser files of git revision ``rev``, written into ``dest``."""
    files = []
    for name in ("demo_stage1.pth", "demo_denoiser.pth"):
        try:
            blob = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{ASSETS}/{name}"], check=True,
                                  capture_output=True).stdout
        except (OSError, subprocess.CalledProcessError) as exc:
            raise SystemExit(f"--before {rev}: cannot read {ASSETS}/{name} from git ({exc})") from exc
        (dest / name).write_bytes(blob)
        files.append(dest / name)
    return files[0], files[1]


def run(pipe: DehazePipeline, photo: torch.Tensor, options: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The default call (seed 0; ``options`` over the weights' defaults) on ``photo`` (1, 3, H, W)
    in [0, 1]: J, T, the output and their measures."""
    res = pipe(photo, seed=0, progress=False, **(options or {}))
    out = torch.from_numpy(np.asarray(res.image, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    a0, b0 = mean_ab(photo)
    measures = {}
    for key, img in (("J", res.J), ("output", out)):
        a, b = mean_ab(img)
        measures[key] = {"haze": float(haze_density(img)), "da": a - a0, "db": b - b0}
    return {"J": res.J, "T": res.T, "output": out, "measures": measures}


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", default=None, help="a folder of hazy photos (default: the bundled real haze)")
    ap.add_argument("--before", default=None, help="a git revision whose bundled demo weights to compare with")
    ap.add_argument("--before-options", default="{}", metavar="JSON",
                    help="sampling options for the --before side's calls, when its defaults differed "
                         "(e.g. '{\"stage1_detail\": 0}')")
    ap.add_argument("--out", default=str(ROOT / "docs" / "real_haze.jpg"))
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "real_haze.json"))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    if args.photos is None:
        photos = list(real_haze_photos().values())
    else:
        try:
            photos = list_images(args.photos)
        except FileNotFoundError as exc:
            ap.error(f"--photos: {exc}")
        if not photos:
            ap.error(f"--photos: no images in {args.photos}")
    try:
        before_options = json.loads(args.before_options)
        if not isinstance(before_options, dict):
            raise ValueError("not a JSON object")
    except ValueError as exc:
        ap.error(f"--before-options: {exc}")
    pin_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        sides: Dict[str, DehazePipeline] = {}
        if args.before:
            s1, den = weights_at(args.before, Path(tmp))
            sides[f"before ({args.before})"] = DehazePipeline.from_pretrained(
                "demo", device="cpu", stage1=str(s1), denoiser=str(den), download=False, progress=False)
        sides["today"] = DehazePipeline.from_pretrained("demo", device="cpu", download=False, progress=False)
        results: Dict[str, Dict[str, Any]] = {}
        # a row per (photo, weights): the photo, J, T, the default call
        aspect = 0.5
        fig, axes = plt.subplots(len(photos) * len(sides), 4, figsize=(13, 13 / 4 * aspect * len(photos) * len(sides) + 0.6),
                                 squeeze=False)
        for i, path in enumerate(photos):
            photo = load_image(path)
            photo = photo[None] if photo.ndim == 3 else photo
            results[path.stem] = {"photo_haze": float(haze_density(photo))}
            for k, (label, pipe) in enumerate(sides.items()):
                r = run(pipe, photo, before_options if label.startswith("before") else None)
                m = results[path.stem][label] = r["measures"]
                row = axes[i * len(sides) + k]
                row[0].imshow(to_numpy_image(photo))
                row[0].set_title(f"{path.stem} (haze {results[path.stem]['photo_haze']:.2f})", fontsize=10)
                row[1].imshow(to_numpy_image(r["J"]))
                row[1].set_title(f"{label}: J (haze {m['J']['haze']:.2f}, b* {m['J']['db']:+.1f})", fontsize=10)
                row[2].imshow(r["T"][0, 0].numpy(), cmap="gray", vmin=0, vmax=1)
                row[2].set_title(f"{label}: T", fontsize=10)
                row[3].imshow(to_numpy_image(r["output"]))
                row[3].set_title(f"{label}: output (haze {m['output']['haze']:.2f}, b* {m['output']['db']:+.1f})",
                                 fontsize=10)
        for ax in axes.flat:
            ax.axis("off")
        fig.tight_layout()
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        jpeg = Path(args.out).suffix.lower() in (".jpg", ".jpeg")
        fig.savefig(args.out, dpi=110, **({"pil_kwargs": {"quality": 85}} if jpeg else {}))
    write_json(args.json, {"command": "python benchmarks/real_haze.py " + " ".join(sys.argv[1:] if argv is None else argv),
                           "photos": [p.name for p in photos], "results": results, "torch": torch.__version__})
    print(f"wrote {args.out} and {args.json}")
    for name, r in results.items():
        print(name, {k: v for k, v in r.items()})
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (CheckpointError, ImageReadError, WeightsError) as exc:  # a bad file given: one line, no traceback
        sys.exit(f"real_haze.py: {exc}")
