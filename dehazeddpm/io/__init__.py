"""Files in and out: images of any mode, checkpoints in the released layouts, reference configs.

Layer: io. May import ``models`` and ``diffusion`` (to build what a checkpoint describes) and the
foundation. Images come out as float32 (1, 3, H, W) in [0, 1]; :func:`to_signed` and
:func:`to_unit` are the only conversions to and from diffusion space [-1, 1]. Checkpoints load
strictly and always with ``weights_only=True``.
"""
from .checkpoints import (
    CheckpointError,
    check_state_dict,
    denoiser_state_dict,
    infer_unet_config,
    load_denoiser,
    load_schedule,
    load_stage1,
    read_checkpoint,
    save_checkpoint,
    save_denoiser,
    save_stage1,
    split_denoiser_state_dict,
    stage1_state_dict,
)
from .images import (
    IMAGE_EXTENSIONS,
    ImageReadError,
    ImageSource,
    denoiser_condition,
    is_image_file,
    load_image,
    read_png_text,
    save_image_atomic,
    to_pil,
    to_signed,
    to_unit,
)
from .reference_config import DehazeConfig, load_json_with_comments, strip_json_comments

__all__ = ["CheckpointError", "DehazeConfig", "IMAGE_EXTENSIONS", "ImageReadError", "ImageSource", "check_state_dict",
           "denoiser_condition", "denoiser_state_dict", "infer_unet_config", "is_image_file", "load_denoiser", "load_image", "read_png_text",
           "load_json_with_comments", "load_schedule", "load_stage1", "read_checkpoint", "save_checkpoint",
           "save_denoiser", "save_image_atomic", "save_stage1", "split_denoiser_state_dict", "stage1_state_dict",
           "strip_json_comments", "to_pil", "to_signed", "to_unit"]
