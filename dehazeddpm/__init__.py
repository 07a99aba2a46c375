"""dehazeddpm: DehazeDDPM (Yu et al., arXiv 2308.11949), exact to the reference, fast and explorable.

Value ranges: images and stage-1 outputs are in [0, 1]; the diffusion works in [-1, 1]
(``imageio.to_signed`` / ``imageio.to_unit`` convert). Reference names: ``netH`` = stage 1
(``Stage1Net``), ``netG`` = the diffusion model (``UNet`` denoiser + ``NoiseSchedule``).
"""
from __future__ import annotations

__version__ = "0.1.0"

from .attention import SelfAttention
from .checkpoints import (CheckpointError, infer_unet_config, load_denoiser, load_schedule, load_stage1,
                          read_checkpoint, save_denoiser, save_stage1)
from .config import DehazeConfig, load_json_with_comments
from .encodings import FeatureWiseAffine, NoiseLevelEncoding
from .losses import diffusion_loss
from .samplers import ddim_sample, ddpm_sample, p_mean_variance, q_sample, sample
from .schedule import NoiseSchedule, ScheduleConfig, make_beta_schedule
from .stage1 import Stage1Net, Stage1Output
from .unet import UNet, UNetConfig


def __getattr__(name: str):
    # The pipeline pulls in image I/O and the weights registry: import it on first use only.
    if name == "DehazePipeline":
        from .pipeline import DehazePipeline
        return DehazePipeline
    raise AttributeError(f"module 'dehazeddpm' has no attribute {name!r}")


__all__ = [
    "CheckpointError", "DehazeConfig", "DehazePipeline", "FeatureWiseAffine", "NoiseLevelEncoding",
    "NoiseSchedule", "ScheduleConfig", "SelfAttention", "Stage1Net", "Stage1Output", "UNet", "UNetConfig",
    "ddim_sample", "ddpm_sample", "diffusion_loss", "infer_unet_config", "load_denoiser",
    "load_json_with_comments", "load_schedule", "load_stage1", "make_beta_schedule", "p_mean_variance",
    "q_sample", "read_checkpoint", "sample", "save_denoiser", "save_stage1",
]
