"""The package computes the reference function: every tensor in ../shared/parity, float32 on CPU."""
from __future__ import annotations

import pytest
import torch

import dehazeddpm as dd
from dehazeddpm.io.images import to_signed, to_unit

ATOL = 1e-4


@pytest.fixture(scope="module")
def io1(parity_dir):
    return torch.load(parity_dir / "stage1_io.pt", weights_only=True)


@pytest.fixture(scope="module")
def io2(parity_dir):
    return torch.load(parity_dir / "stage2_io.pt", weights_only=True)


@pytest.fixture(scope="module")
def stage1(parity_dir):
    return dd.load_stage1(parity_dir / "stage1_net_g.pth")


@pytest.fixture(scope="module")
def unet(parity_dir):
    return dd.load_denoiser(parity_dir / "stage2_gen.pth")


def test_stage1_outputs(stage1, io1):
    with torch.no_grad():
        out = stage1(io1["hazy01"])
    for name in ("J", "coarse", "T", "A", "I"):
        got, want = getattr(out, name), io1[name]
        assert got.shape == want.shape, name
        torch.testing.assert_close(got, want, atol=ATOL, rtol=0, msg=name)
    # The re-hazed image is the scattering model applied to the outputs.
    torch.testing.assert_close(out.I, out.T * out.J + (1 - out.T) * out.A)
    # Reference tuple order: (J, coarse, T, A, I).
    J, coarse, T, A, I = out
    assert J is out.J and coarse is out.coarse and A is out.A


def test_stage1_outputs_are_the_clamped_raw_outputs(stage1, io1):
    # The reference's raw J and T leave [0, 1]; the network returns them clamped.
    assert io1["J_raw"].min() < 0 or io1["J_raw"].max() > 1 or io1["T_raw"].min() < 0 or io1["T_raw"].max() > 1
    with torch.no_grad():
        out = stage1(io1["hazy01"])
    torch.testing.assert_close(out.J, io1["J_raw"].clamp(0, 1), atol=ATOL, rtol=0)
    torch.testing.assert_close(out.T, io1["T_raw"].clamp(0, 1), atol=ATOL, rtol=0)


def test_unet_eps(unet, io2):
    assert unet.config.to_dict() | {"dropout": 0.2} == io2["unet_config"] | {"use_affine_level": False}
    with torch.no_grad():
        eps = unet(io2["x_in"], io2["noise_level"])
        eps_flat = unet(io2["x_in"], io2["noise_level"].reshape(-1))  # (B,) and (B, 1) agree
    torch.testing.assert_close(eps, io2["eps"], atol=ATOL, rtol=0)
    torch.testing.assert_close(eps_flat, eps)


def test_unet_eps_reference_attention(unet, io2):
    unet.set_attention_impl("reference")
    try:
        with torch.no_grad():
            eps = unet(io2["x_in"], io2["noise_level"])
    finally:
        unet.set_attention_impl("sdpa")
    torch.testing.assert_close(eps, io2["eps"], atol=ATOL, rtol=0)


def test_schedule_buffers_equal_checkpoint(parity_dir, io2):
    sd = torch.load(parity_dir / "stage2_gen.pth", weights_only=True)
    sched = dd.NoiseSchedule.from_config(io2["train_schedule"])
    for name, value in sched.buffers().items():
        torch.testing.assert_close(value, sd[name], atol=0, rtol=0, msg=name)


def test_p_mean_variance_four_timesteps(unet, io2):
    sched = dd.NoiseSchedule.from_config(io2["val_schedule"])
    with torch.no_grad():
        for j, t in enumerate(io2["step_t"].tolist()):
            mean, log_var = dd.p_mean_variance(unet, sched, io2["x_t"], t, io2["cond"], clip_denoised=True)
            torch.testing.assert_close(mean, io2["step_mean"][j], atol=ATOL, rtol=0, msg=f"t={t}")
            assert abs(float(log_var) - float(io2["step_logvar"][j])) < 1e-5


def test_ancestral_sample_seeded(unet, io2):
    sched = dd.NoiseSchedule.from_config(io2["short_schedule"])
    gen = torch.Generator().manual_seed(io2["sample_seed"])
    x = dd.sample(unet, io2["cond"], sched, sampler="ddpm", generator=gen)
    torch.testing.assert_close(x, io2["sample"], atol=ATOL, rtol=0)
    # The global RNG, seeded the same way, gives the same draws.
    torch.manual_seed(io2["sample_seed"])
    torch.testing.assert_close(dd.sample(unet, io2["cond"], sched, sampler="ddpm"), x)


def test_end_to_end_reference_test_path(stage1, unet, io2):
    with torch.no_grad():
        out = stage1(to_unit(io2["hazy_m11"]))
    condition = torch.cat([to_signed(out.J), to_signed(out.T)], 1)
    sched = dd.NoiseSchedule.from_config(io2["short_schedule"])
    x = dd.sample(unet, condition, sched, sampler="ddpm", generator=torch.Generator().manual_seed(io2["e2e_seed"]))
    torch.testing.assert_close(x, io2["e2e_out"], atol=ATOL, rtol=0)


def test_training_loss(unet, io2):
    unet.eval()  # the fixture was made without dropout
    loss = dd.diffusion_loss(unet, io2["loss_x0"], io2["cond"], gamma=io2["loss_gamma"], noise=io2["loss_noise"])
    assert abs(loss.item() - io2["loss"].item()) < ATOL
