"""Read the reference JSON configs (``config/test_NH.json`` ...) into package config objects.

The reference files are JSON with ``//`` comments and hold the authors' absolute paths; only the
model description is taken from them. Reference names: ``netG`` = the diffusion model (our
``denoiser`` plus ``NoiseSchedule``), ``netH`` = stage 1 (our ``Stage1Net``); ``resume_state`` is the
denoiser checkpoint prefix (``<prefix>_gen.pth``), ``resume_stateH`` the stage-1 file.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Union

from ..diffusion.schedule import ScheduleConfig
from ..models.unet import UNetConfig


def strip_json_comments(text: str) -> str:
    """Remove ``//`` and ``/* */`` comments outside string literals (URLs in strings survive)."""
    out, i, n = [], 0, len(text)
    in_string = False
    while i < n:
        c = text[i]
        if in_string:
            out.append(c)
            if c == "\\" and i + 1 < n:
                out.append(text[i + 1])
                i += 2
                continue
            if c == '"':
                in_string = False
            i += 1
        elif c == '"':
            in_string = True
            out.append(c)
            i += 1
        elif text.startswith("//", i):
            while i < n and text[i] != "\n":
                i += 1
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def load_json_with_comments(path: "Union[str, os.PathLike]") -> Dict[str, Any]:
    text = Path(path).read_text(encoding="utf-8")
    try:
        return json.loads(strip_json_comments(text))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON after removing comments: {exc}") from exc


@dataclass
class DehazeConfig:
    """The parts of a reference config this package uses."""

    unet: UNetConfig = field(default_factory=UNetConfig)
    train_schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    sample_schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    denoiser_checkpoint: Optional[str] = None  # reference path.resume_state + "_gen.pth"
    stage1_checkpoint: Optional[str] = None    # reference path.resume_stateH
    name: str = ""
    lr: float = 1e-4

    @classmethod
    def from_reference(cls, src: "Union[str, os.PathLike, Dict[str, Any]]") -> "DehazeConfig":
        """From a reference JSON file (comments allowed) or the already-parsed dict."""
        opt = load_json_with_comments(src) if not isinstance(src, dict) else src
        model = opt.get("model", {})
        unet_opt = dict(model.get("unet", {}))
        if "image_size" in model.get("diffusion", {}):
            unet_opt["image_size"] = model["diffusion"]["image_size"]
        unet_opt.setdefault("norm_groups", 32)
        if unet_opt.get("norm_groups") is None:
            unet_opt["norm_groups"] = 32
        schedules = model.get("beta_schedule", {})
        train = ScheduleConfig.from_dict(schedules["train"]) if "train" in schedules else ScheduleConfig()
        val = ScheduleConfig.from_dict(schedules["val"]) if "val" in schedules else train
        paths = opt.get("path", {})
        resume = paths.get("resume_state")
        return cls(
            unet=UNetConfig.from_dict(unet_opt),
            train_schedule=train,
            sample_schedule=val,
            denoiser_checkpoint=f"{resume}_gen.pth" if resume else None,
            stage1_checkpoint=paths.get("resume_stateH"),
            name=opt.get("name", ""),
            lr=float(opt.get("train", {}).get("optimizer", {}).get("lr", 1e-4)),
        )
