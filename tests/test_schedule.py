from __future__ import annotations

import numpy as np
import pytest
import torch

import dehazeddpm as dd
from dehazeddpm.diffusion.schedule import BETA_SCHEDULES, make_beta_schedule


@pytest.mark.parametrize("name", BETA_SCHEDULES)
def test_beta_schedules_valid(name):
    betas = make_beta_schedule(name, 100, 1e-4, 2e-2)
    assert betas.shape == (100,) and betas.dtype == np.float64
    assert np.all(betas > 0) and np.all(betas <= 1)
    sched = dd.NoiseSchedule.from_config({"schedule": name, "n_timestep": 100,
                                          "linear_start": 1e-4, "linear_end": 2e-2})
    assert torch.all(sched.noise_levels[1:] <= sched.noise_levels[:-1])  # noise grows with t


def test_schedule_values():
    np.testing.assert_allclose(make_beta_schedule("linear", 5, 0.1, 0.5), [0.1, 0.2, 0.3, 0.4, 0.5])
    np.testing.assert_allclose(make_beta_schedule("quad", 3, 0.01, 0.09), [0.01, 0.04, 0.09])
    np.testing.assert_allclose(make_beta_schedule("jsd", 4), [1 / 4, 1 / 3, 1 / 2, 1])
    w = make_beta_schedule("warmup10", 20, 0.1, 0.5)
    np.testing.assert_allclose(w[:2], [0.1, 0.5])
    np.testing.assert_allclose(w[2:], 0.5)
    assert make_beta_schedule("cosine", 1000).max() <= 0.999
    with pytest.raises(ValueError, match="unknown beta schedule"):
        make_beta_schedule("sigmoid", 10)


def test_released_schedule_endpoints():
    s = dd.NoiseSchedule.from_config({"schedule": "linear", "n_timestep": 2000,
                                      "linear_start": 1e-6, "linear_end": 1e-2})
    ac = np.cumprod(1 - np.linspace(1e-6, 1e-2, 2000))
    assert float(s.noise_levels[0]) == pytest.approx(np.sqrt(1 - 1e-6), abs=1e-7)
    assert float(s.noise_levels[-1]) == pytest.approx(np.sqrt(ac[-1]), rel=1e-6)
    assert float(s.posterior_variance[0]) == 0.0
    assert s.gamma_interval(1) == (1.0, pytest.approx(np.sqrt(ac[0])))


def test_respace_keeps_noise_levels():
    s = dd.NoiseSchedule.from_config({"schedule": "linear", "n_timestep": 2000,
                                      "linear_start": 1e-6, "linear_end": 1e-2})
    r = s.respace(20)
    assert len(r) == 20 and int(r.timesteps[0]) == 0 and int(r.timesteps[-1]) == 1999
    torch.testing.assert_close(r.noise_levels, s.noise_levels[r.timesteps], rtol=1e-6, atol=0)
    torch.testing.assert_close(r.alphas_cumprod, s.alphas_cumprod[r.timesteps], rtol=1e-6, atol=0)
    assert s.respace(2000) is s
    with pytest.raises(ValueError):
        s.respace(0)
    t = s.truncate(0.5)
    assert len(t) == 1000 and int(t.timesteps[-1]) == 999
    torch.testing.assert_close(t.noise_levels, s.noise_levels[:1000])
    assert s.index_of(1999) == 1999 and r.index_of(1999) == 19
