"""Fine-tuning both stages from existing weights within a time budget: the two configs notebook 06
and a Colab user start from.

The stage-1 recipe (the reference author's description, as :func:`~dehazeddpm.training.stage1_loss`
computes it): L1 of J, of the first sub-network's coarse J and of the re-hazed I = J T + A (1 - T)
against the hazy input, plus L1 of T and A where the data knows them (synthetic haze), all with
weight 1. The denoiser then learns the diffusion loss on the condition the fine-tuned stage 1
gives, as inference builds it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

from .config import TrainConfig

__all__ = ["finetune_configs"]


def finetune_configs(stage1_file: Union[str, os.PathLike], denoiser_file: Union[str, os.PathLike],
                     unet: Dict[str, Any], out_dir: Union[str, os.PathLike], *,
                     hazy_dir: Optional[str] = None, gt_dir: Optional[str] = None, photos: str = "train",
                     dataset: Optional[str] = None, root: Optional[str] = None,
                     minutes: Optional[float] = None,
                     steps: int = 2000, crop: int = 128, batch_size: int = 4, accumulate: int = 1,
                     precision: str = "auto", lr: float = 5e-5, seed: int = 0, smoke: bool = False
                     ) -> Tuple[TrainConfig, TrainConfig]:
    """(stage 1's config, the denoiser's) continuing ``stage1_file`` and ``denoiser_file`` (whose
    UNet settings are ``unet``) on a public dataset's training split (``dataset`` at ``root``: every
    image but its test split), on a folder of pairs (``hazy_dir``/``gt_dir``) or, without either, on
    synthetic haze (depth and non-homogeneous, airlight often tinted, and stage 1's mean-colour loss
    term, as the demo was trained) over ``photos``: the
    built-in training photos (``"train"``) or a folder of your clear photos. Each stage gets half of ``minutes`` (``max_minutes``; None: no budget) and saves
    every 50 steps, so rerunning the same cell continues (``train(cfg, resume=True)``). The
    denoiser's frozen stage 1 is the fine-tuned one, ``out_dir/stage1/stage1_final.pth``.
    ``smoke``: a few tiny steps (the tests' and CI's runs)."""
    out = Path(out_dir)
    if smoke:
        steps, crop, batch_size = 3, 32, 2
    data: Dict[str, Any]
    if dataset:
        data = {"data": "dataset", "dataset": dataset, "root": root}
    elif hazy_dir or gt_dir:
        data = {"data": "folder", "hazy_dir": hazy_dir, "gt_dir": gt_dir}
    else:
        data = {"data": "synthetic", "photos": photos, "random_depth": 0.5, "nonhomogeneous": 0.5, "augment": True,
                "airlight_cast": 0.75}
    common: Dict[str, Any] = dict(crop=crop, batch_size=batch_size, accumulate=accumulate, steps=steps, lr=lr,
                                  lr_schedule="cosine", seed=seed, precision=precision, num_val=2 if smoke else 4,
                                  save_every=0 if smoke else 50, val_every=0, progress=not smoke,
                                  max_minutes=None if minutes is None else minutes / 2, **data)
    # synthetic haze knows its airlight is tinted: the demo's mean-colour term (round 8) keeps J from a cast
    colour = {"loss_weights": {"colour": 1.0}} if data["data"] == "synthetic" else {}
    stage1 = TrainConfig(stage="stage1", out_dir=str(out / "stage1"), init_checkpoint=os.fspath(stage1_file),
                         **common, **colour)
    denoiser = TrainConfig(stage="denoiser", out_dir=str(out / "denoiser"), init_checkpoint=os.fspath(denoiser_file),
                           stage1_checkpoint=str(out / "stage1" / "stage1_final.pth"), unet=dict(unet),
                           val_sampler_steps=2 if smoke else 10, **common)
    return stage1, denoiser
