"""Remake the clear photos in ``dehazeddpm/assets/photos/`` from Debian's lomiri wallpaper packages.

    apt-get download lomiri-wallpapers-16.04 lomiri-wallpapers-20.04
    python scripts/wallpaper_photos.py lomiri-wallpapers-16.04_20.04.0-2_all.deb lomiri-wallpapers-20.04_20.04.0-2_all.deb

Each photo is read from the package, downscaled (Lanczos, 8 bits) so its shorter side is 512 px,
as long as scikit-image's 512 x 512 photos, and saved as JPEG quality 92. The packages' sha256 are
checked first, so the files are the ones ``assets/photos/README.md`` credits. Which photo goes
to which split (trained on or only judged) is decided in ``dehazeddpm.data.photos``, by licence.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

from dehazeddpm.hub import sha256_file
from dehazeddpm.utils import scaled_shape

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "dehazeddpm" / "assets" / "photos"
SHORTER_SIDE = 512

PACKAGES = {  # file name -> sha256 (Debian bookworm, pool/main/l/lomiri-wallpapers/)
    "lomiri-wallpapers-16.04_20.04.0-2_all.deb": "a99ff6a3bfe451e4cc0682ecb3cc82e71740626d59e4845ae34a0a0e45421eab",
    "lomiri-wallpapers-20.04_20.04.0-2_all.deb": "d44e89b8473aafe64a5b678f014862dc31335aaaf18665c544d985d854f1a709",
}
# asset name -> file in /usr/share/backgrounds of one of the packages
SOURCES = {
    "picosdeeuropa": "picosdeeuropa_by_Aitzol_Berasategi.jpg",
    "life": "life_by_Aitzol_Berasategi.jpg",
    "friends": "friends_by_Aitzol_Berasategi.jpg",
    "seeding": "seeding_by_Clements_Engelhardt.jpg",
    "wine": "Wine_by_Jakkub_Mede.jpg",
    "fig": "Picture_0B_by_freespace.jpg",
    "brushes": "Picture_1A_by_freespace.jpg",
    "bridge": "Bridge_by_Sander_Klootwijk.jpg",
    "dragonfly": "Dragonfly_by_Bolly.jpg",
    "kleiber": "Kleiber_by_Lukas_Baubkus.jpg",
    "free": "free_by_Peter_Nerlich.jpg",
    "greentock": "greentock_by_Peter_Nerlich.jpg",
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("debs", nargs="+", type=Path, help="the downloaded lomiri-wallpapers .deb files")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        for deb in args.debs:
            want = PACKAGES.get(deb.name)
            if want is None:
                sys.exit(f"wallpaper_photos.py: {deb.name} is not one of {sorted(PACKAGES)}")
            if sha256_file(deb) != want:
                sys.exit(f"wallpaper_photos.py: {deb} does not have the sha256 recorded for it")
            subprocess.run(["dpkg-deb", "-x", str(deb), tmp], check=True)
        backgrounds = Path(tmp) / "usr" / "share" / "backgrounds"
        missing = [src for src in SOURCES.values() if not (backgrounds / src).is_file()]
        if missing:
            sys.exit(f"wallpaper_photos.py: not in the packages given: {', '.join(missing)}")
        OUT.mkdir(parents=True, exist_ok=True)
        for name, src in SOURCES.items():
            with Image.open(backgrounds / src) as im:
                im = im.convert("RGB")
                h, w = scaled_shape(im.height, im.width, SHORTER_SIDE)
                small = im.resize((w, h), Image.LANCZOS)
            small.save(OUT / f"{name}.jpg", quality=92)
            print(f"{name}.jpg  {small.size[0]}x{small.size[1]}  {sha256_file(OUT / f'{name}.jpg')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
