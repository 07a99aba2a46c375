"""Training of both stages: the config, the trainer, its data, objectives, state and the torchrun
helpers.

Layer: training. May import ``models``, ``diffusion``, ``io``, ``data``, ``metrics``, the
foundation, ``inference.working_size`` (the denoiser trains on the condition inference builds)
and ``inference.device`` (the precision policy); never the pipeline or the hub (a run starts from
files it is given).
"""
from .config import (
    DEFAULT_LOSS_WEIGHTS,
    DEFAULT_UNET,
    STAGES,
    DenoiserSettings,
    RunSettings,
    Stage1Settings,
    TrainConfig,
)
from .data import ConditionPool, SceneConditionPool, StepShardedData, build_datasets, make_loader, positions
from .distributed import Dist, barrier, setup_distributed, wrap
from .finetune import finetune_configs
from .memory import MemoryEstimate, estimate_memory
from .objectives import denoiser_loss, learning_rate, stage1_condition, stage1_loss
from .state import EMA, provenance, resume_path, rng_state, set_rng_state
from .trainer import RunExistsError, Trainer, TrainResult, check_run_folder, train, train_denoiser, train_stage1

__all__ = ["MemoryEstimate", "estimate_memory", "finetune_configs", "ConditionPool", "SceneConditionPool", "DEFAULT_LOSS_WEIGHTS", "DEFAULT_UNET", "DenoiserSettings", "Dist", "EMA", "RunSettings",
           "STAGES", "Stage1Settings", "StepShardedData",
           "RunExistsError", "TrainConfig", "TrainResult", "Trainer", "check_run_folder", "barrier", "build_datasets", "denoiser_loss", "learning_rate",
           "make_loader", "positions", "provenance", "resume_path", "rng_state", "set_rng_state",
           "setup_distributed", "stage1_condition", "stage1_loss", "train", "train_denoiser", "train_stage1", "wrap"]
