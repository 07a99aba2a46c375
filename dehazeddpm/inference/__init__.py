"""Inference: the two-stage pipeline, tiled denoising, stage 1 at a working size, and the
device and precision policy.

Layer: inference. May import ``models``, ``diffusion``, ``options``, ``io``, ``hub`` (to resolve
a registry name) and the foundation. The pipeline prepares the condition and the start and calls
:func:`dehazeddpm.diffusion.sample`; it never samples on its own.
"""
from .choice import RELEASED, WeightsChoice, choose_weights, smoke_mode
from .device import (
    PrecisionDenoiser,
    autocast,
    choose_tile,
    default_device,
    device_info,
    pin_threads,
    resolve_precision,
    sync,
)
from .pipeline import TRAJECTORY_MAX_FRAMES, TRAJECTORY_MAX_SIDE, DehazePipeline, DehazeResult, TrajectoryFrame
from .tiling import TiledDenoiser
from .working_size import (
    MAX_WORKING_SIDE,
    MIN_TRANSMISSION,
    from_working_size,
    mirror_averaged,
    stage1_at_size,
    to_working_size,
    working_shape,
)

__all__ = ["RELEASED", "WeightsChoice", "choose_weights", "smoke_mode", "DehazePipeline", "DehazeResult", "MAX_WORKING_SIDE", "MIN_TRANSMISSION", "PrecisionDenoiser",
           "TRAJECTORY_MAX_FRAMES", "TRAJECTORY_MAX_SIDE", "TiledDenoiser", "TrajectoryFrame", "autocast",
           "choose_tile", "default_device", "device_info", "from_working_size", "mirror_averaged", "pin_threads",
           "resolve_precision", "stage1_at_size", "sync", "to_working_size", "working_shape"]
