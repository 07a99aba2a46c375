"""Diffusion maths: noise schedules, samplers, noise sources and the training loss.

Layer: diffusion. May import torch, numpy, tqdm and the foundation; never a network class, a file
or a pipeline. Everything here is in diffusion space, [-1, 1]. Samplers are plain functions over
``(model, x, schedule)`` with a callback; :func:`sample` is the one entry point that the pipeline
and training share.
"""
from .forward import eps_from_x0, predict_x0, q_sample, x0_from_eps
from .loss import FREQUENCY_WEIGHT, diffusion_loss, draw_noise_level
from .noise import GaussianNoise, MeanFreeNoise, zero_mean
from .samplers import (
    ETA_SAMPLERS,
    SAMPLERS,
    ddim_sample,
    ddpm_sample,
    dpmpp_2m_sample,
    dpmpp_2m_sde_sample,
    p_mean_variance,
    predict_noise,
    sample,
    sampler_parameters,
    sampling_schedule,
)
from .schedule import BETA_SCHEDULES, RELEASED_SCHEDULE, NoiseSchedule, ScheduleConfig, make_beta_schedule
from .wrappers import ConditionedDenoiser, CountingDenoiser

__all__ = ["BETA_SCHEDULES", "ConditionedDenoiser", "CountingDenoiser", "ETA_SAMPLERS", "FREQUENCY_WEIGHT",
           "GaussianNoise", "MeanFreeNoise", "NoiseSchedule", "RELEASED_SCHEDULE", "SAMPLERS", "ScheduleConfig",
           "ddim_sample", "ddpm_sample", "diffusion_loss", "dpmpp_2m_sample", "dpmpp_2m_sde_sample", "draw_noise_level",
           "eps_from_x0", "make_beta_schedule", "p_mean_variance", "predict_noise", "predict_x0", "q_sample", "sample",
           "sampler_parameters", "sampling_schedule", "x0_from_eps", "zero_mean"]
