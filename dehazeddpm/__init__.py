"""dehazeddpm: DehazeDDPM (Yu et al., arXiv 2308.11949), exact to the reference, fast and explorable.

Value ranges: images and stage-1 outputs are in [0, 1]; the diffusion works in [-1, 1]
(``dehazeddpm.io.to_signed`` / ``to_unit`` convert). Reference names: ``netH`` = stage 1
(``Stage1Net``), ``netG`` = the diffusion model (``UNet`` denoiser + ``NoiseSchedule``).

The layers, bottom up (each imports only those below it; docs/architecture.md draws them):
``utils``/``physics``/``metrics`` -> ``models`` -> ``diffusion`` -> ``options`` -> ``io`` ->
``hub`` -> ``data`` -> ``inference`` -> ``evaluation`` -> ``training`` -> ``viz`` -> ``cli``.
"""
from __future__ import annotations

from .diffusion import (
    NoiseSchedule,
    ScheduleConfig,
    ddim_sample,
    ddpm_sample,
    diffusion_loss,
    make_beta_schedule,
    p_mean_variance,
    q_sample,
    sample,
)
from .hub.download import download_file
from .hub.resolve import load_denoiser  # io's loader, recognising the registry's files by sha256
from .io import (
    CheckpointError,
    DehazeConfig,
    infer_unet_config,
    load_json_with_comments,
    load_schedule,
    load_stage1,
    read_checkpoint,
    save_denoiser,
    save_stage1,
)
from .models import FeatureWiseAffine, NoiseLevelEncoding, SelfAttention, Stage1Net, Stage1Output, UNet, UNetConfig
from .options import SamplingOptions
from .version import __version__


def __getattr__(name: str):
    # The pipeline pulls in the inference layer and the registry: import it on first use only.
    if name in ("DehazePipeline", "DehazeResult", "choose_weights"):
        from . import inference
        return getattr(inference, name)
    if name == "notebook_session":
        from .viz.session import notebook_session
        return notebook_session
    raise AttributeError(f"module 'dehazeddpm' has no attribute {name!r}")


__all__ = [
    "CheckpointError", "DehazeConfig", "DehazePipeline", "DehazeResult", "FeatureWiseAffine", "NoiseLevelEncoding",
    "NoiseSchedule", "SamplingOptions", "ScheduleConfig", "SelfAttention", "Stage1Net", "Stage1Output", "UNet",
    "UNetConfig", "__version__", "choose_weights", "ddim_sample", "ddpm_sample", "diffusion_loss", "download_file",
    "infer_unet_config", "load_denoiser", "load_json_with_comments", "load_schedule", "load_stage1",
    "make_beta_schedule", "notebook_session", "p_mean_variance", "q_sample", "read_checkpoint", "sample", "save_denoiser", "save_stage1",
]
