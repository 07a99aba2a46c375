"""Shared test fixtures: where the parity data lives, small deterministic helpers, the tiny
networks the tests build (one factory each, here)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
# The reference parity fixtures (tests/parity/README.md) travel with the code; the variable points
# the suite at another copy.
PARITY_DIR = Path(os.environ.get("DEHAZEDDPM_PARITY_DIR") or Path(__file__).parent / "parity")


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    if not (PARITY_DIR / "stage2_io.pt").is_file():
        pytest.fail(f"parity fixtures not found at {PARITY_DIR} (DEHAZEDDPM_PARITY_DIR)")
    return PARITY_DIR


# The tiny denoiser the unit tests sample with: two levels, attention on the 8 px level.
TINY_UNET = {"in_channel": 7, "out_channel": 3, "inner_channel": 16, "norm_groups": 8, "channel_mults": [1, 2],
             "attn_res": [8], "res_blocks": 1, "dropout": 0.0, "image_size": 16}


@pytest.fixture(scope="session")
def tiny_unet():
    """``tiny_unet(seed=0, **overrides)``: a seeded tiny :class:`UNet` in eval mode (overrides
    change :data:`TINY_UNET`)."""
    from dehazeddpm.models import UNet, UNetConfig

    def make(seed: int = 0, **overrides):
        torch.manual_seed(seed)
        return UNet.from_config(UNetConfig.from_dict({**TINY_UNET, **overrides})).eval()

    return make


@pytest.fixture(scope="session")
def tiny_stage1():
    """``tiny_stage1(seed=0)``: a seeded :class:`Stage1Net` in eval mode."""
    from dehazeddpm.models import Stage1Net

    def make(seed: int = 0):
        torch.manual_seed(seed)
        return Stage1Net().eval()

    return make


@pytest.fixture(autouse=True)
def _one_thread():
    # Test tensors are tiny: a second thread gains nothing, and on a shared, busy 2-core machine
    # its barrier waits (a descheduled worker) made single calls take seconds.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def released_cache(tmp_path_factory) -> Path:
    """A weights cache holding ``nh-haze`` files of the released layout with random weights (what
    the real files look like to the loaders: ``{'params': sd}`` and ``denoise_fn.*`` + buffers)."""
    from dehazeddpm.diffusion import NoiseSchedule
    from dehazeddpm.hub import get_entry
    from dehazeddpm.io import denoiser_state_dict
    from dehazeddpm.models import Stage1Net, UNet

    entry = get_entry("nh-haze")
    cache = tmp_path_factory.mktemp("released_cache")
    folder = cache / entry.name
    folder.mkdir()
    torch.manual_seed(0)
    torch.save({"params": Stage1Net().state_dict()}, folder / entry.stage1.filename)
    unet = UNet.from_config(entry.unet_config).half()  # fp16 keeps the file at 185 MB
    torch.save(denoiser_state_dict(unet, NoiseSchedule.from_config(entry.schedule)), folder / entry.denoiser.filename)
    return cache
