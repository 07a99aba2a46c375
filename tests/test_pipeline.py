"""DehazePipeline: sizes, input modes, step counts, determinism, trajectory, fusion, references."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from dehazeddpm import CheckpointError, NoiseSchedule, UNet, UNetConfig, load_denoiser, save_denoiser, save_stage1
from dehazeddpm.diffusion import RELEASED_SCHEDULE, sample
from dehazeddpm.diffusion import CountingDenoiser as Counting
from dehazeddpm.inference.device import choose_tile
from dehazeddpm.inference.pipeline import TRAJECTORY_MAX_FRAMES, TRAJECTORY_MAX_SIDE, DehazePipeline
from dehazeddpm.io.images import to_pil, to_signed, to_unit
from dehazeddpm.options import DEFAULT_STEPS, SamplingOptions
from dehazeddpm.physics import fuse_transmission
from dehazeddpm.utils import pad_to_multiple

SCHEDULE = RELEASED_SCHEDULE


class Pointwise(nn.Module):
    """A cheap stand-in denoiser: a 1x1 conv scaled by the noise level (no spatial mixing)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(7, 3, 1)
        self.config = UNetConfig(in_channel=7, out_channel=3, inner_channel=16, norm_groups=8, channel_mults=(1, 2))

    def forward(self, x, noise_level):
        return self.conv(x) * noise_level.reshape(-1, 1, 1, 1)


@pytest.fixture(scope="module")
def pipe(tiny_stage1, tiny_unet) -> DehazePipeline:
    return DehazePipeline(tiny_stage1(), tiny_unet(), NoiseSchedule.from_config(SCHEDULE), device="cpu")


@pytest.fixture()
def counting_pipe(pipe) -> DehazePipeline:
    return DehazePipeline(pipe.stage1, Counting(Pointwise()), NoiseSchedule.from_config(SCHEDULE), device="cpu")


def _rand_image(h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, h, w, generator=g)


@pytest.mark.parametrize("hw", [(37, 53), (5, 7), (1, 1)])
def test_output_size_equals_input_size(pipe, hw):
    res = pipe(_rand_image(*hw), steps=2, seed=0, progress=False)
    assert res.image.size == (hw[1], hw[0])
    assert res.J.shape == (1, 3, *hw) and res.T.shape == (1, 1, *hw) and res.I.shape == (1, 3, *hw)
    assert res.A.shape == (1, 3, 1, 1)
    for t in (res.J, res.T, res.A, res.I):
        assert t.device.type == "cpu" and t.dtype == torch.float32
        assert float(t.min()) >= 0 and float(t.max()) <= 1
    assert res.evaluations == 2 and {"stage1", "denoise", "total"} <= set(res.timings)


def test_input_modes(pipe):
    rng = np.random.default_rng(0)
    gray = Image.fromarray(rng.integers(0, 256, (9, 11), dtype=np.uint8))
    rgba = Image.fromarray(rng.integers(0, 256, (10, 12, 4), dtype=np.uint8))
    deep = rng.integers(0, 65536, (13, 6, 3), dtype=np.uint16)
    for src, size in ((gray, (11, 9)), (rgba, (12, 10)), (deep, (6, 13))):
        res = pipe(src, steps=1, seed=0, progress=False)
        assert res.image.size == size and res.image.mode == "RGB"


def test_steps_zero_returns_j_without_denoiser(counting_pipe):
    res = counting_pipe(_rand_image(20, 24), steps=0)
    assert counting_pipe.denoiser.calls == 0
    assert res.evaluations == 0
    assert np.array_equal(np.asarray(res.image), np.asarray(to_pil(res.J)))


def test_default_is_ddim_with_default_steps(counting_pipe):
    res = counting_pipe(_rand_image(16, 16), seed=0, progress=False)
    assert counting_pipe.denoiser.calls == DEFAULT_STEPS == res.evaluations == res.options.steps
    assert res.options.sampler == "ddim" and res.options.start_strength == 1.0


def test_seed_is_deterministic(pipe):
    x = _rand_image(16, 16, seed=3)
    a = np.asarray(pipe(x, steps=3, seed=7, progress=False).image)
    b = np.asarray(pipe(x, steps=3, seed=7, progress=False).image)
    c = np.asarray(pipe(x, steps=3, seed=8, progress=False).image)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_ddpm_full_schedule_is_the_reference_path(pipe):
    # A 40-step schedule keeps it fast: every ancestral step, the reference draws, nothing else.
    sched = NoiseSchedule.from_config({**SCHEDULE, "n_timestep": 40})
    counted = Counting(Pointwise())
    p = DehazePipeline(pipe.stage1, counted, sched, device="cpu")
    x = _rand_image(16, 32, seed=5)
    res = p(x, sampler="ddpm", seed=11, progress=False, precision="fp32")  # parity stays in fp32
    assert counted.calls == 40 and res.evaluations == 40
    with torch.inference_mode():
        out = pipe.stage1(x)
        cond = torch.cat([to_signed(out.J), to_signed(out.T)], 1)
        ref = sample(counted.model, cond, sched, "ddpm", generator=torch.Generator().manual_seed(11))
    assert np.array_equal(np.asarray(res.image), np.asarray(to_pil(to_unit(ref).clamp(0, 1))))


def test_default_ddim_starts_from_zero_mean_noise(pipe):
    """DDIM's start noise loses its per-channel mean by default (samplers.zero_mean says why);
    zero_mean_noise=False is the same draw with the mean kept; the ancestral path never uses it."""
    x = _rand_image(16, 24, seed=2)
    starts = {}
    for zm in (None, False):
        seen = []
        pipe(x, steps=3, seed=5, progress=False, zero_mean_noise=zm,
             callback=lambda step, t, x_t, x0: seen.append(x_t.clone()) if step == 0 else None)
        starts[zm] = seen[0]
    torch.testing.assert_close(starts[None].mean(dim=(-2, -1)), torch.zeros(1, 3), atol=1e-6, rtol=0)
    torch.testing.assert_close(starts[None], starts[False] - starts[False].mean(dim=(-2, -1), keepdim=True),
                               atol=1e-6, rtol=0)
    # partial starts: J noised with mean-free noise, so x_T keeps exactly g * mean(J)
    x = _rand_image(32, 32, seed=2)  # a multiple of the networks' size: no padding in x_t
    seen = []
    pipe(x, steps=10, start_strength=0.5, seed=5, progress=False,
         callback=lambda step, t, x_t, x0: seen.append(x_t.clone()) if step == 0 else None)
    g = float(pipe.schedule.respace(10).truncate(0.5).noise_levels[-1])
    J = to_signed(pipe(x, steps=0, progress=False).J)
    torch.testing.assert_close(seen[0].mean(dim=(-2, -1)), g * J.mean(dim=(-2, -1)), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="zero_mean_noise does not apply to the ddpm"):
        pipe(x, sampler="ddpm", steps=3, zero_mean_noise=True, progress=False)


def test_weights_ddim_defaults_apply_to_ddim_only(pipe):
    """An entry's DDIM defaults (the demo's start_strength) fill DDIM arguments left at None;
    explicit arguments win, and the ancestral sampler stays the reference path."""
    counted = Counting(Pointwise())
    p = DehazePipeline(pipe.stage1, counted, NoiseSchedule.from_config({**SCHEDULE, "n_timestep": 40}),
                       device="cpu", defaults={"sampler": "ddim", "start_strength": 0.3})
    x = _rand_image(16, 16)
    assert p(x, steps=20, seed=0, progress=False).evaluations == 6  # 0.3 of 20 steps, from noised J
    assert p(x, steps=20, start_strength=1.0, seed=0, progress=False).evaluations == 20
    assert p(x, sampler="ddpm", seed=0, progress=False).evaluations == 40
    assert counted.calls == 6 + 20 + 40
    assert DehazePipeline.from_pretrained("demo", device="cpu").defaults == SamplingOptions(
        sampler="ddim", start_strength=0.3, eta=1.0, stage1_size=128, stage1_detail=3, denoise_size=128, tile_size=256,
        samples=2)


def test_weights_samples_come_with_their_steps(pipe):
    """Weights whose defaults average 3 samples of a 7-step chain: a call that chooses its own
    steps, or another sampler, draws one sample unless it asks for more."""
    counted = Counting(Pointwise())
    p = DehazePipeline(pipe.stage1, counted, NoiseSchedule.from_config({**SCHEDULE, "n_timestep": 40}),
                       device="cpu", defaults={"sampler": "ddim", "steps": 7, "samples": 3, "start_strength": 0.3})
    x = _rand_image(16, 16)
    res = p(x, seed=0, progress=False)
    assert (res.options.steps, res.options.samples, res.evaluations) == (7, 3, 2) and res.spread is not None
    assert counted.calls == 2  # the 3 samples go through the denoiser as one batch per step
    for chosen, samples in (({"steps": 20}, 1), ({"sampler": "ddpm", "steps": 5}, 1),
                            ({"steps": 20, "samples": 2}, 2), ({"samples": 4}, 4)):
        res = p(x, seed=0, progress=False, **chosen)
        assert res.options.samples == samples, chosen
        assert (res.spread is None) == (samples == 1)


def test_weights_default_eta_fills_only_an_eta_left_at_none(pipe):
    sched = NoiseSchedule.from_config({**SCHEDULE, "n_timestep": 40})
    p1 = DehazePipeline(pipe.stage1, Pointwise(), sched, device="cpu", defaults={"eta": 1.0})
    p0 = DehazePipeline(pipe.stage1, p1.denoiser, sched, device="cpu")
    x = _rand_image(16, 16)

    def out(p, **kw):
        return p(x, steps=10, seed=0, progress=False, **kw).image

    stochastic, deterministic = np.asarray(out(p1)), np.asarray(out(p0))
    assert np.array_equal(stochastic, np.asarray(out(p0, eta=1.0)))
    assert np.array_equal(np.asarray(out(p1, eta=0.0)), deterministic)
    assert not np.array_equal(stochastic, deterministic)  # eta 1 adds fresh noise at every step
    # the ancestral sampler has no eta: the default does not touch it
    assert np.array_equal(np.asarray(out(p1, sampler="ddpm")), np.asarray(out(p0, sampler="ddpm")))
    for bad in (-0.5, 1.5):
        with pytest.raises(ValueError, match="eta"):
            p1(x, steps=2, eta=bad, progress=False)


def test_start_strength_runs_fewer_steps(counting_pipe):
    x = _rand_image(16, 16)
    res = counting_pipe(x, steps=10, start_strength=0.5, seed=0, progress=False)
    assert counting_pipe.denoiser.calls == 5 and res.evaluations == 5
    with pytest.raises(ValueError):
        counting_pipe(x, steps=10, start_strength=0.0)


def test_trajectory_content_on_cpu_and_downscaled(pipe):
    res = pipe(_rand_image(16, 300), steps=3, seed=0, progress=False, trajectory_every=1)
    assert [f.step for f in res.trajectory] == [0, 1, 2]
    ts = [f.t for f in res.trajectory]
    assert ts == sorted(ts, reverse=True) and ts[0] == 1999
    for f in res.trajectory:
        assert f.x_t.device.type == "cpu" and f.x0.device.type == "cpu"
        assert max(f.x0.shape[-2:]) <= TRAJECTORY_MAX_SIDE and f.x0.shape[-1] == TRAJECTORY_MAX_SIDE
        assert f.x_t.shape == f.x0.shape == (1, 3, 14, 256)  # 16 x 300 scaled by 256/300 (area)
        assert float(f.x0.min()) >= 0 and float(f.x0.max()) <= 1
    assert pipe(_rand_image(16, 16), steps=2, progress=False).trajectory is None


def test_trajectory_is_bounded(counting_pipe):
    res = counting_pipe(_rand_image(16, 16), steps=400, seed=0, progress=False, trajectory_every=1)
    assert counting_pipe.denoiser.calls == 400
    assert 2 <= len(res.trajectory) <= TRAJECTORY_MAX_FRAMES
    assert res.trajectory[-1].step == 399


def test_fusion_function():
    J = torch.rand(1, 3, 4, 5)
    D = torch.rand(1, 3, 4, 5)
    assert torch.equal(fuse_transmission(J, torch.ones(1, 1, 4, 5), D), J)
    assert torch.equal(fuse_transmission(J, torch.zeros(1, 1, 4, 5), D), D)
    mid = fuse_transmission(J, torch.full((1, 1, 4, 5), 0.7), D)
    assert torch.allclose(mid, 0.5 * J + 0.5 * D)  # 0.7 is halfway between the default 0.5 and 0.9


def test_fusion_in_pipeline(pipe):
    x = _rand_image(16, 16)
    plain = pipe(x, steps=2, seed=0, progress=False)
    fused = pipe(x, steps=2, seed=0, progress=False, fusion="transmission")
    expect = fuse_transmission(plain.J, plain.T, torch.from_numpy(np.array(plain.image)).permute(2, 0, 1)[None] / 255)
    got = torch.from_numpy(np.array(fused.image)).permute(2, 0, 1)[None] / 255
    assert (got - expect).abs().max() <= 1.01 / 255  # one 8-bit rounding step
    with pytest.raises(ValueError):
        pipe(x, fusion="nope")


def test_tiled_pipeline_runs_and_keeps_size(pipe):
    res = pipe(_rand_image(40, 70), steps=1, seed=0, tile_size=32, tile_overlap=8, progress=False)
    assert res.image.size == (70, 40) and res.tile_size == 32


def test_pad_to_multiple():
    x = torch.arange(12.0).reshape(1, 1, 3, 4)
    y, hw = pad_to_multiple(x, 16)
    assert hw == (3, 4) and y.shape == (1, 1, 16, 16)
    assert torch.equal(y[..., :3, :4], x) and torch.equal(y[0, 0, 3:, 0], torch.full((13,), 8.0))  # replicate
    z, _ = pad_to_multiple(torch.rand(1, 3, 20, 30), 16)
    assert z.shape == (1, 3, 32, 32) and torch.equal(z[..., 20, :30], z[..., 18, :30])  # reflect
    assert pad_to_multiple(x, 1)[0] is x


def test_choose_tile_cpu(pipe):
    assert choose_tile(1024, 1024, torch.device("cpu"), 64) is None
    assert choose_tile(1040, 1024, torch.device("cpu"), 64) == 512
    assert pipe.size_multiple == 16


def test_from_pretrained_uses_entry_config(tmp_path, pipe):
    """A registry entry's unet_config, schedule and defaults are what the pipeline is built with."""
    from dehazeddpm import hub
    cfg = {"in_channel": 7, "out_channel": 3, "inner_channel": 16, "norm_groups": 8,
           "channel_mults": [1, 2], "attn_res": [8], "res_blocks": 1, "dropout": 0.1, "image_size": 16}
    p1, p2 = tmp_path / "s1.pth", tmp_path / "den.pth"
    save_stage1(pipe.stage1, p1)
    save_denoiser(pipe.denoiser, p2)
    released = hub.get_entry("nh-haze")
    entry = hub.WeightsEntry(name="tiny", description="", stage1=released.stage1, denoiser=released.denoiser,
                             unet_config=cfg, schedule={**SCHEDULE, "n_timestep": 100}, dataset="", citation="",
                             defaults=SamplingOptions(eta=0.5))
    loaded = DehazePipeline.from_pretrained(entry, device="cpu", stage1=p1, denoiser=p2)
    assert loaded.denoiser.config.dropout == 0.1 and loaded.denoiser.config.inner_channel == 16
    assert len(loaded.schedule) == 100 and loaded.defaults.eta == 0.5
    x = _rand_image(5, 7)
    assert np.array_equal(np.asarray(loaded(x, steps=2, seed=1, progress=False).image),
                          np.asarray(DehazePipeline(pipe.stage1, pipe.denoiser, loaded.schedule, "cpu")(
                              x, steps=2, eta=0.5, seed=1, progress=False).image))


def test_lazy_import():
    import dehazeddpm as dd
    assert dd.DehazePipeline is DehazePipeline


def test_from_files_recognises_the_bundled_weights_by_hash(tmp_path):
    """--stage1/--denoiser with the demo's own files run with the demo's config and defaults
    (norm_groups 16, stage 1 at 128 px, DDIM from J at 0.3) and give what --weights demo gives."""
    from dehazeddpm import hub
    res = hub.resolve("demo")
    by_files = DehazePipeline.from_files(res.stage1, res.denoiser, device="cpu")
    named = DehazePipeline.from_pretrained("demo", device="cpu", progress=False)
    assert by_files.denoiser.config.norm_groups == 16 and by_files.defaults == named.defaults
    assert "'demo'" in by_files.config_source
    x = _rand_image(24, 40)
    assert np.array_equal(np.asarray(by_files(x, seed=0, progress=False).image),
                          np.asarray(named(x, seed=0, progress=False).image))


def test_the_demo_denoiser_is_recognised_alone(tmp_path):
    """With the demo's stage-1 weights re-saved in fp32 (another file, another hash), the demo
    denoiser file is still recognised by its own sha256: same config, defaults and output."""
    import dehazeddpm as dd
    from dehazeddpm import hub
    res = hub.resolve("demo")
    save_stage1(dd.load_stage1(res.stage1).float(), tmp_path / "s1_fp32.pth")
    assert hub.entry_for_files(tmp_path / "s1_fp32.pth", res.denoiser) is None  # the pair is not the entry's
    by_files = DehazePipeline.from_files(tmp_path / "s1_fp32.pth", res.denoiser, device="cpu")
    named = DehazePipeline.from_pretrained("demo", device="cpu", progress=False)
    assert by_files.denoiser.config == named.denoiser.config and by_files.defaults == named.defaults
    x = _rand_image(24, 40)
    assert np.array_equal(np.asarray(by_files(x, seed=0, progress=False).image),
                          np.asarray(named(x, seed=0, progress=False).image))
    assert dd.load_denoiser(res.denoiser).config.norm_groups == 16  # the public loader knows it too


def test_from_files_uses_the_saved_config_and_refuses_to_guess(tmp_path, pipe):
    import warnings
    torch.manual_seed(0)
    unet = UNet(in_channel=7, out_channel=3, inner_channel=32, norm_groups=8, channel_mults=(1, 2), attn_res=(8,),
                res_blocks=1, image_size=16).eval()
    save_stage1(pipe.stage1, tmp_path / "s1.pth")
    save_denoiser(unet, tmp_path / "den.pth", defaults={"eta": 0.7})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the file says everything: no warning
        p = DehazePipeline.from_files(tmp_path / "s1.pth", tmp_path / "den.pth", device="cpu")
    assert p.denoiser.config.norm_groups == 8 and p.defaults == SamplingOptions(eta=0.7)
    assert "saved in the file" in p.config_source
    # the same tensors without the metadata: shapes allow 32 groups, but a guess would be a wrong model
    bare = {k: v for k, v in torch.load(tmp_path / "den.pth", weights_only=True).items() if k != "dehazeddpm"}
    torch.save(bare, tmp_path / "bare.pth")
    with pytest.raises(CheckpointError, match="norm_groups cannot be read off its tensors.*--unet-config"):
        DehazePipeline.from_files(tmp_path / "s1.pth", tmp_path / "bare.pth", device="cpu")
    with pytest.warns(UserWarning, match="norm_groups=32 .*assumed"):  # the low-level loader says so too
        load_denoiser(tmp_path / "bare.pth")
    ok = DehazePipeline.from_files(tmp_path / "s1.pth", tmp_path / "bare.pth", device="cpu",
                                   unet_config={"norm_groups": 8})
    assert ok.denoiser.config.norm_groups == 8


def test_broken_weights_are_errors_at_both_stages(tmp_path):
    """All-zero stage-1 weights (a black J), an overflowing denoiser (saturated noise) and an integer
    tensor in a checkpoint are errors, not pictures."""
    import dehazeddpm as dd
    from dehazeddpm import hub
    from dehazeddpm.inference.pipeline import BrokenModelError
    res = hub.resolve("demo")
    named = DehazePipeline.from_pretrained("demo", device="cpu", progress=False)
    x = _rand_image(32, 48)
    zero = dd.load_stage1(res.stage1)
    with torch.no_grad():
        for p in zero.parameters():
            p.zero_()
    with pytest.raises(BrokenModelError, match="stage 1's J produced a constant image"):
        DehazePipeline(zero, named.denoiser, named.schedule, "cpu", defaults=named.defaults)(x, progress=False)
    huge = dd.load_denoiser(res.denoiser)
    with torch.no_grad():
        for p in huge.parameters():
            p.mul_(1e38)
    with pytest.raises(BrokenModelError, match="saturated|NaN or inf"):
        DehazePipeline(named.stage1, huge, named.schedule, "cpu", defaults=named.defaults)(x, seed=0, progress=False)
    sd = named.stage1.state_dict()
    key = next(k for k, v in sd.items() if v.is_floating_point())
    torch.save({"params": {**sd, key: sd[key].long()}}, tmp_path / "int.pth")
    with pytest.raises(CheckpointError, match=f"{key}: checkpoint torch.int64 vs model torch.float32"):
        dd.load_stage1(tmp_path / "int.pth")


def test_threads_follow_the_free_cores_and_are_described(monkeypatch):
    import subprocess
    import sys

    from dehazeddpm.inference import device as dev

    cpu = torch.device("cpu")
    monkeypatch.delenv("DEHAZEDDPM_THREADS", raising=False)
    monkeypatch.setattr(dev.os, "cpu_count", lambda: 4)
    for busy, most, expected in ((0.0, 4, 4), (1.0, 4, 3), (3.0, 4, 1), (9.0, 4, 1), (0.0, 2, 2)):
        monkeypatch.setattr(dev, "busy_elsewhere", lambda busy=busy: busy)
        assert dev.choose_threads(cpu, most) == expected
    assert dev.choose_threads(torch.device("meta")) is None
    monkeypatch.setenv("DEHAZEDDPM_THREADS", "3")
    assert dev.choose_threads(cpu, 1) == 3
    monkeypatch.setenv("DEHAZEDDPM_THREADS", "many")
    with pytest.raises(ValueError, match="DEHAZEDDPM_THREADS must be a positive integer"):
        dev.choose_threads(cpu)
    monkeypatch.undo()
    # a real busy process is seen (Linux: /proc/stat), and the call says what it chose
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        deadline, seen = time.time() + 10, 0.0
        while seen < 1 and time.time() < deadline:  # an instant count: the spinner may be between slices
            seen = dev.busy_elsewhere()
            time.sleep(0.05)
        assert seen >= 1
    finally:
        spin.kill()
        spin.wait()
    before = torch.get_num_threads()
    with dev.cpu_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_a_call_reports_its_threads(tiny_stage1, tiny_unet):
    pipe = DehazePipeline(tiny_stage1(), tiny_unet(), NoiseSchedule.from_config(
        {"schedule": "linear", "n_timestep": 100, "linear_start": 1e-4, "linear_end": 2e-2}), "cpu")
    res = pipe(torch.rand(1, 3, 16, 16), seed=0, steps=2, progress=False)
    assert res.threads >= 1 and f"{res.threads} CPU thread" in res.describe()


def test_pinned_threads_hold_beside_a_busy_process(monkeypatch, tiny_stage1, tiny_unet):
    """Measurements pin the count: a busy neighbour must not change the threads of a call (bf16
    results differ in the last bit between 1 and 2 threads)."""
    from dehazeddpm.inference import device as dev
    from dehazeddpm.inference import pin_threads

    monkeypatch.setenv("DEHAZEDDPM_THREADS", "1")  # recorded, so the pin below is undone after the test
    monkeypatch.delenv("DEHAZEDDPM_THREADS")
    before = torch.get_num_threads()
    monkeypatch.setattr(dev, "busy_elsewhere", lambda: 8.0)  # every core busy elsewhere
    pipe = DehazePipeline(tiny_stage1(), tiny_unet(), NoiseSchedule.from_config(
        {"schedule": "linear", "n_timestep": 100, "linear_start": 1e-4, "linear_end": 2e-2}), "cpu")
    assert pipe(torch.rand(1, 3, 16, 16), seed=0, steps=2, progress=False).threads == 1
    try:
        pin_threads(2)
        assert torch.get_num_threads() == 2
        assert pipe(torch.rand(1, 3, 16, 16), seed=0, steps=2, progress=False).threads == 2
        for bad in (0, -1, 1.5, True, "2"):
            with pytest.raises(ValueError, match="threads must be a positive integer"):
                pin_threads(bad)
    finally:
        torch.set_num_threads(before)


def test_stage1_runs_channels_last_and_gives_back_contiguous_outputs(tiny_stage1, tiny_unet):
    """Stage 1 runs in channels_last on a CPU too (measured 1.4-1.6x faster in fp32): J, T and A
    agree with the plain network to 1e-5 and come back in the usual contiguous layout."""
    plain = tiny_stage1()
    pipe = DehazePipeline(tiny_stage1(), tiny_unet(), NoiseSchedule.from_config(SCHEDULE), device="cpu")
    conv = next(m for m in pipe.stage1.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    x = _rand_image(40, 56)
    out = pipe.stage1_outputs(x)
    with torch.no_grad():
        ref = plain(x)
    for name in ("J", "T", "A", "I"):
        got = getattr(out, name)
        assert got.is_contiguous(), name
        torch.testing.assert_close(got, getattr(ref, name), atol=1e-5, rtol=0)
