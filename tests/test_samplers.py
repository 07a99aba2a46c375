"""Sampler behaviour on small models: shapes, determinism, callbacks, and the DDIM algebra."""
from __future__ import annotations

import pytest
import torch

import dehazeddpm as dd

SCHED = dd.diffusion.RELEASED_SCHEDULE


class OracleDenoiser(torch.nn.Module):
    """Knows the clean image x0: returns the exact noise eps = (x_t - gamma x0) / sqrt(1 - gamma^2)."""

    def __init__(self, x0):
        super().__init__()
        self.x0 = x0

    def forward(self, inp, noise_level):
        x = inp[:, -3:]
        g = noise_level.reshape(-1, 1, 1, 1)
        return (x - g * self.x0) / (1 - g ** 2).sqrt()


@pytest.fixture(scope="module")
def small_unet(tiny_unet):
    return tiny_unet()


class GaussianDataDenoiser(torch.nn.Module):
    """The exact denoiser when every pixel of x0 is N(mu, s^2): E[x0 | x_t] is linear in x_t, so the
    probability-flow ODE has a smooth solution that a higher-order solver must approach faster."""

    def __init__(self, mu: float = 0.1, s: float = 0.4):
        super().__init__()
        self.mu, self.s2 = mu, s * s

    def forward(self, inp, noise_level):
        x = inp[:, -3:].double()
        a = noise_level.double().reshape(-1, 1, 1, 1)
        sigma2 = 1 - a ** 2
        x0 = self.mu + a * self.s2 / (a ** 2 * self.s2 + sigma2) * (x - a * self.mu)
        return ((x - a * x0) / sigma2.sqrt()).float()


ALL = [("ddim", 1, 0.0), ("ddim", 5, 0.0), ("ddim", 10, 1.0), ("ddpm", 10, None), ("dpmpp_2m", 1, None),
       ("dpmpp_2m", 2, None), ("dpmpp_2m", 7, None), ("dpmpp_2m_sde", 2, None), ("dpmpp_2m_sde", 7, None)]


@pytest.mark.parametrize("sampler,steps,eta", ALL)
def test_oracle_recovers_x0(sampler, steps, eta):
    x0 = torch.rand(2, 3, 8, 8) * 2 - 1
    sched = dd.NoiseSchedule.from_config(SCHED)
    out = dd.sample(OracleDenoiser(x0), torch.zeros(2, 4, 8, 8), sched, sampler=sampler, steps=steps, eta=eta,
                    generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(out, x0, atol=2e-4, rtol=0)


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp_2m", "dpmpp_2m_sde"])
def test_oracle_from_a_noised_start(sampler):
    """From J noised part-way (SDEdit-style) every sampler lands on the oracle's x0, in the
    truncated number of steps."""
    x0 = torch.rand(1, 3, 8, 8) * 2 - 1
    start = torch.rand(1, 3, 8, 8) * 2 - 1
    seen = []
    out = dd.sample(OracleDenoiser(x0), torch.zeros(1, 4, 8, 8), dd.NoiseSchedule.from_config(SCHED), sampler,
                    steps=20, start_strength=0.3, start_image=start, generator=torch.Generator().manual_seed(0),
                    callback=lambda step, t, x, x0_hat: seen.append(t))
    torch.testing.assert_close(out, x0, atol=2e-4, rtol=0)
    assert len(seen) == 6 and seen[-1] == 0 and seen == sorted(seen, reverse=True)


def test_second_order_solver_converges_faster_than_ddim():
    """On Gaussian data the ODE solution is smooth: DPM-Solver++(2M) comes much closer to the
    solution over the whole 2000-step grid than DDIM (first order) does with the same steps."""
    model, sched = GaussianDataDenoiser(), dd.NoiseSchedule.from_config(SCHED)
    x_T = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    cond = torch.zeros(1, 4, 16, 16)

    def run(sampler, steps):
        return dd.sample(model, cond, sched, sampler, steps=steps, x_T=x_T.clone(), clip_denoised=False)

    exact = run("ddim", None)
    err = {(name, n): float((run(name, n) - exact).abs().max()) for name in ("ddim", "dpmpp_2m") for n in (20, 50)}
    # measured: 20 steps 0.094 vs 0.221, 50 steps 0.008 vs 0.088 (the first-order final jump bounds both)
    assert err["dpmpp_2m", 20] < 0.5 * err["ddim", 20], err
    assert err["dpmpp_2m", 50] < 0.2 * err["ddim", 50], err


def test_callback_sees_every_step(small_unet):
    sched = dd.NoiseSchedule.from_config(SCHED)
    seen = []
    cond = torch.rand(1, 4, 16, 16) * 2 - 1
    out = dd.sample(small_unet, cond, sched, sampler="ddim", steps=4,
                    callback=lambda step, t, x_t, x0: seen.append((step, t, x_t.shape, float(x0.abs().max()))))
    assert [s[0] for s in seen] == [0, 1, 2, 3]
    assert [s[1] for s in seen] == [1999, 1333, 666, 0]
    assert all(s[2] == (1, 3, 16, 16) and s[3] <= 1.0 for s in seen)
    assert out.shape == (1, 3, 16, 16) and out.abs().max() <= 1.0 + 1e-6


def test_seeded_runs_are_deterministic(small_unet):
    sched = dd.NoiseSchedule.from_config(SCHED)
    cond = torch.rand(1, 4, 16, 16) * 2 - 1
    runs = [dd.sample(small_unet, cond, sched, sampler=s, steps=6, eta=1.0, generator=torch.Generator().manual_seed(7))
            for s in ("ddim", "ddim")]
    torch.testing.assert_close(runs[0], runs[1], atol=0, rtol=0)
    other = dd.sample(small_unet, cond, sched, sampler="ddim", steps=6, eta=1.0,
                      generator=torch.Generator().manual_seed(8))
    assert (other - runs[0]).abs().max() > 1e-3


class FixedNoise(dd.diffusion.GaussianNoise):
    """Every per-step draw is ``scale`` times one fixed tensor."""

    def __init__(self, z, scale):
        super().__init__()
        self.z, self.scale = z, scale

    def like(self, x):
        return self.scale * self.z


def test_ddim_eta1_matches_ddpm_step_distribution():
    """A DDIM step at eta 1 adds noise with the ancestral posterior variance: run ddim_sample with
    one noise draw and with none, from the same start, and compare what the draw added."""
    sched = dd.NoiseSchedule.from_config(SCHED).respace(10)
    x_T = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    z = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    model = lambda x, g: torch.zeros_like(x)  # noqa: E731  (eps = 0)
    after_first = []
    for scale in (1.0, 0.0):
        seen = []
        dd.ddim_sample(model, x_T.clone(), sched, eta=1.0, noise=FixedNoise(z, scale), clip_denoised=False,
                       callback=lambda step, t, x_t, x0: seen.append(x_t.clone()))
        after_first.append(seen[1])  # the input of the second step: x after the first, noisy update
    added = after_first[0] - after_first[1]
    first = len(sched) - 1  # the chain runs from the last index down
    torch.testing.assert_close(added, sched.posterior_variance[first].sqrt() * z, rtol=1e-4, atol=1e-5)


def test_bad_arguments(small_unet):
    sched = dd.NoiseSchedule.from_config(SCHED)
    with pytest.raises(ValueError, match="unknown sampler"):
        dd.sample(small_unet, torch.zeros(1, 4, 16, 16), sched, sampler="euler")
    with pytest.raises(ValueError, match="input channels"):
        small_unet(torch.zeros(1, 6, 16, 16), torch.ones(1))
    with pytest.raises(ValueError, match="multiples of 2"):
        small_unet(torch.zeros(1, 7, 15, 16), torch.ones(1))


def test_loss_draws_and_backprops(small_unet):
    x0 = torch.rand(2, 3, 16, 16) * 2 - 1
    cond = torch.rand(2, 4, 16, 16) * 2 - 1
    g = torch.Generator().manual_seed(3)
    l1 = dd.diffusion_loss(small_unet, x0, cond, generator=g)
    l2 = dd.diffusion_loss(small_unet, x0, cond, generator=torch.Generator().manual_seed(3))
    assert l1.item() == l2.item() and l1.item() > 0
    l1.backward()
    assert small_unet.downs[0].weight.grad is not None
    small_unet.zero_grad()


def test_loss_frequency_weight(small_unet):
    """frequency_weight=0 leaves the plain L1 noise loss; the default is the reference's 0.01."""
    x0 = torch.rand(2, 3, 16, 16) * 2 - 1
    cond = torch.rand(2, 4, 16, 16) * 2 - 1
    gamma, noise = torch.tensor([0.05, 0.9]), torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        eps = small_unet(torch.cat([cond, dd.q_sample(gamma, x0, noise)], 1), gamma)
        plain = dd.diffusion_loss(small_unet, x0, cond, gamma=gamma, noise=noise, frequency_weight=0.0)
        ref = dd.diffusion_loss(small_unet, x0, cond, gamma=gamma, noise=noise)
        double = dd.diffusion_loss(small_unet, x0, cond, gamma=gamma, noise=noise, frequency_weight=0.02)
    torch.testing.assert_close(plain, (noise - eps).abs().mean(), rtol=1e-6, atol=0)
    # the FFT term is linear in its weight: ref - plain is half of double - plain
    assert float(ref - plain) > 0
    torch.testing.assert_close(double - plain, 2 * (ref - plain), rtol=1e-4, atol=0)


def test_zero_mean_removes_only_the_channel_means():
    z = torch.randn(2, 3, 8, 12, generator=torch.Generator().manual_seed(0))
    z = z + torch.tensor([0.5, -1.0, 2.0]).view(1, 3, 1, 1)
    out = dd.diffusion.zero_mean(z)
    assert out.shape == z.shape
    torch.testing.assert_close(out.mean(dim=(-2, -1)), torch.zeros(2, 3), atol=1e-6, rtol=0)
    # what is left is untouched: differences between pixels are the same
    torch.testing.assert_close(out - out[..., :1, :1], z - z[..., :1, :1], atol=1e-5, rtol=0)


def test_zero_mean_noise_start_and_ddpm_refusal(small_unet):
    sched = dd.NoiseSchedule.from_config(SCHED)
    cond = torch.zeros(1, 4, 16, 16)
    starts = []
    for zm in (False, True):
        frames = []
        dd.sample(small_unet, cond, sched, "ddim", steps=3, generator=torch.Generator().manual_seed(4),
                  callback=lambda step, t, x, x0: frames.append(x.clone()), zero_mean_noise=zm)
        starts.append(frames[0])
    # the same draw, without its per-channel mean
    torch.testing.assert_close(starts[1], dd.diffusion.zero_mean(starts[0]), atol=1e-6, rtol=0)
    assert float(starts[0].mean(dim=(-2, -1)).abs().max()) > 1e-3
    with pytest.raises(ValueError, match="DDIM"):
        dd.sample(small_unet, cond, sched, "ddpm", steps=3, zero_mean_noise=True)


def test_zero_mean_noise_is_used_for_eta_noise():
    """With eta > 0 the injected noise loses its mean too, so x_t never gains a channel offset."""

    class MeanFree(torch.nn.Module):
        def forward(self, inp, noise_level):  # eps = x_t: x0 and the next x_t inherit x_t's mean
            return inp[:, -3:]

    sched = dd.NoiseSchedule.from_config(SCHED)
    means = {}
    for zm in (False, True):
        means[zm] = []
        dd.sample(MeanFree(), torch.zeros(1, 4, 16, 16), sched, "ddim", steps=6, eta=1.0,
                  generator=torch.Generator().manual_seed(2), zero_mean_noise=zm,
                  callback=lambda step, t, x, x0: means[zm].append(float(x.mean(dim=(-2, -1)).abs().max())))
    # float32 rounding (x0 = 150 x_t - 149.99 eps at the top) leaves ~1e-4; plain noise ~1/16
    assert len(means[True]) == 6 and max(means[True]) < 1e-3 < 1e-2 < min(means[False][1:])


@pytest.mark.parametrize("steps", [1, 2, 3, 4, 5, 6, 10, 20, 50])
def test_a_short_chain_starts_at_the_asked_noise_level(steps):
    """start_strength 0.3 on any chain: the run begins within one chain step below 0.3 of the
    training grid (t = 599), never from pure noise (t = 1999) nor at the clean end (t = 0)."""
    run = dd.diffusion.sampling_schedule(dd.NoiseSchedule.from_config(SCHED), steps, 0.3)
    top = int(run.timesteps[-1])
    assert 599 - 2000 / steps <= top <= 599 and top > 0, [int(t) for t in run.timesteps]
    assert 1 <= len(run) <= steps


def test_the_default_chain_is_unchanged_by_the_short_chain_rule():
    run = dd.diffusion.sampling_schedule(dd.NoiseSchedule.from_config(SCHED), 20, 0.3)
    assert [int(t) for t in run.timesteps] == [0, 105, 210, 316, 421, 526]


def test_a_sampler_option_reaches_the_sampler_by_its_signature(monkeypatch):
    """A new sampler's own keyword needs no edit of sample(): it goes to the samplers whose
    signature takes it and is refused by the rest."""
    seen = {}

    def scaled_sample(model, x, schedule, *, noise=None, callback=None, clip_denoised=True, progress=False, scale=1.0):
        seen["scale"] = scale
        return x * 0

    monkeypatch.setitem(dd.diffusion.SAMPLERS, "scaled", scaled_sample)
    sched = dd.NoiseSchedule.from_config(SCHED)
    assert dd.diffusion.sampler_parameters("scaled") == {"scale"}
    dd.sample(OracleDenoiser(torch.zeros(1, 3, 8, 8)), torch.zeros(1, 4, 8, 8), sched, "scaled", steps=2, scale=3.0)
    assert seen == {"scale": 3.0}
    with pytest.raises(ValueError, match="scale does not apply to the ddim sampler"):
        dd.sample(OracleDenoiser(torch.zeros(1, 3, 8, 8)), torch.zeros(1, 4, 8, 8), sched, "ddim", steps=2, scale=3.0)
