"""Stage 1 at a working size (dehazeddpm.working_size) and the pipeline/registry plumbing."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from test_pipeline import SCHEDULE, Pointwise

from dehazeddpm import NoiseSchedule, Stage1Net, Stage1Output
from dehazeddpm.data import make_eval_set
from dehazeddpm.hub import resolve
from dehazeddpm.inference.pipeline import DehazePipeline
from dehazeddpm.inference.working_size import (
    MAX_WORKING_SIDE,
    from_working_size,
    mirror_averaged,
    stage1_at_size,
    to_working_size,
    with_input_detail,
    working_shape,
)
from dehazeddpm.io import images as imageio
from dehazeddpm.io.checkpoints import load_stage1
from dehazeddpm.metrics import psnr


class Oracle:
    """A stage 1 that knows the haze: uniform transmission ``t`` and airlight ``a``, so
    ``J = (I - a (1 - t)) / t`` exactly. Records the sizes it is run at."""

    def __init__(self, t: float, a: float):
        self.t, self.a, self.sizes = t, a, []

    def __call__(self, hazy: torch.Tensor) -> Stage1Output:
        self.sizes.append(tuple(hazy.shape[-2:]))
        b, _, h, w = hazy.shape
        J = ((hazy - self.a * (1 - self.t)) / self.t).clamp(0, 1)
        T = torch.full((b, 1, h, w), self.t)
        A = torch.full((b, 3, 1, 1), self.a)
        return Stage1Output(J=J, coarse=J, T=T, A=A, I=T * J + (1 - T) * A)


def _scene(h: int, w: int, seed: int = 0) -> torch.Tensor:
    """Fine texture (pixel noise) over smooth shading, in [0.1, 0.9]."""
    g = torch.Generator().manual_seed(seed)
    smooth = torch.nn.functional.interpolate(torch.rand(1, 3, 4, 4, generator=g), size=(h, w), mode="bilinear",
                                             align_corners=False)
    return (0.1 + 0.5 * smooth + 0.3 * torch.rand(1, 3, h, w, generator=g)).clamp(0.1, 0.9)


def test_working_shape_keeps_aspect_and_bounds_strips():
    assert working_shape(500, 741, 128) == (128, 190)
    assert working_shape(64, 96, 128) == (128, 192)
    assert working_shape(128, 300, 128) == (128, 300)
    # enlarging a strip stops at MAX_WORKING_SIDE on the longer side
    assert working_shape(2, 4000, 128) == (2, 4000)
    h, w = working_shape(4, 1000, 128)
    assert max(h, w) == MAX_WORKING_SIDE and h == 8
    with pytest.raises(ValueError, match="positive"):
        working_shape(10, 10, 0)


def test_detail_transfer_recovers_fine_detail_exactly_under_uniform_haze():
    """Under uniform T and A the high frequencies of I are T times J's: the working-size path
    must give back the full-resolution J (fine texture included), which a plain upsampling of
    the 128 px J cannot."""
    t, a = 0.45, 0.8
    clear = _scene(300, 420)
    hazy = clear * t + a * (1 - t)
    oracle = Oracle(t, a)
    out = stage1_at_size(oracle, hazy, 128)
    assert oracle.sizes == [(128, 179)]
    assert out.J.shape == clear.shape and out.T.shape == (1, 1, 300, 420) and out.A.shape == (1, 3, 1, 1)
    torch.testing.assert_close(out.J, clear, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.I, hazy, atol=1e-5, rtol=0)
    # without the detail term (the working J upsampled) the texture is lost
    small_j = ((torch.nn.functional.interpolate(hazy, size=(128, 179), mode="bilinear", antialias=True,
                                                 align_corners=False) - a * (1 - t)) / t)
    upsampled = torch.nn.functional.interpolate(small_j, size=(300, 420), mode="bilinear", align_corners=False)
    assert psnr(upsampled.clamp(0, 1), clear) < 30 < psnr(out.J, clear)


def test_small_images_run_enlarged_and_come_back_at_their_size():
    t, a = 0.6, 0.7
    clear = _scene(20, 30, seed=1)
    hazy = clear * t + a * (1 - t)
    oracle = Oracle(t, a)
    out = stage1_at_size(oracle, hazy, 128)
    assert oracle.sizes == [(128, 192)]
    assert out.J.shape == (1, 3, 20, 30) and out.T.shape == (1, 1, 20, 30)
    torch.testing.assert_close(out.T, torch.full_like(out.T, t))
    torch.testing.assert_close(out.I, out.T * out.J + (1 - out.T) * out.A)
    assert psnr(out.J, clear) > 20  # bicubic up, area down: close to the input's own J
    assert float(out.J.min()) >= 0 and float(out.J.max()) <= 1


def test_at_the_working_size_it_is_the_plain_call(tiny_stage1):
    net = tiny_stage1()
    x = torch.rand(1, 3, 128, 160)
    with torch.no_grad():
        direct, sized = net(x), stage1_at_size(net, x, 128)
    for d, s in zip(direct, sized):
        assert torch.equal(d, s)
    with pytest.raises(ValueError, match="min_transmission"):
        stage1_at_size(net, x, 64, min_transmission=0)


@pytest.fixture(scope="module")
def stage1(tiny_stage1) -> Stage1Net:
    return tiny_stage1()


def test_pipeline_stage1_size_argument_and_default(stage1):
    sched = NoiseSchedule.from_config({**SCHEDULE, "n_timestep": 40})
    sized = DehazePipeline(stage1, Pointwise(), sched, device="cpu", defaults={"stage1_size": 32})
    plain = DehazePipeline(stage1, sized.denoiser, sched, device="cpu")
    x = torch.rand(1, 3, 48, 80)

    def run(p, **kw):
        r = p(x, steps=4, seed=0, progress=False, **kw)
        return np.asarray(r.image), r

    a, ra = run(sized)
    b, rb = run(plain)
    assert not np.array_equal(a, b)  # the pipeline default applies
    assert np.array_equal(a, run(plain, stage1_size=32)[0])
    assert np.array_equal(b, run(sized, stage1_size=0)[0])  # 0: full resolution
    with torch.no_grad():
        ref = stage1_at_size(stage1, x, 32)
    torch.testing.assert_close(ra.J, ref.J)
    torch.testing.assert_close(ra.T, ref.T)
    assert ra.J.shape == (1, 3, 48, 80) and ra.image.size == (80, 48)
    # J alone (steps=0) is the working-size J, saved as 8 bits
    j_img = np.asarray(sized(x, steps=0, progress=False).image)
    assert np.array_equal(j_img, np.asarray(imageio.to_pil(ref.J)))
    # an image already at the working size runs as it is
    x32 = torch.rand(1, 3, 32, 48)
    assert np.array_equal(np.asarray(sized(x32, steps=2, seed=1, progress=False).image),
                          np.asarray(plain(x32, steps=2, seed=1, progress=False).image))
    with pytest.raises(ValueError, match="stage1_size"):
        sized(x, steps=2, stage1_size=-1, progress=False)
    with pytest.raises(ValueError, match="stage1_size"):
        DehazePipeline(stage1, Pointwise(), sched, device="cpu", defaults={"stage1_size": -1})
    assert ra.options.stage1_size == 32 and rb.options.stage1_size == 0


def test_demo_pipeline_takes_its_stage1_size_from_the_registry():
    assert resolve("demo", download=False).defaults.stage1_size == 128
    assert DehazePipeline.from_pretrained("demo", device="cpu", progress=False).defaults.stage1_size == 128


@pytest.mark.parametrize("size", [64, None])
def test_demo_stage1_is_better_at_its_working_size(tmp_path, size):
    """On the held-out eval photos the demo stage 1 (trained on 128 px crops) gives a better J
    through the 128 px working size than at full resolution, both for small and for original-size
    images (docs/benchmarks.md, Findings 10)."""
    net = load_stage1(resolve("demo", download=False).stage1)
    direct, sized = [], []
    for hazy_path, gt_path in make_eval_set(tmp_path, size=size):
        hazy, gt = imageio.load_image(hazy_path), imageio.load_image(gt_path)
        with torch.no_grad():
            direct.append(psnr(net(hazy).J, gt))
            sized.append(psnr(stage1_at_size(net, hazy, 128).J, gt))
    # measured (round-8 weights): 64 px 19.00 -> 19.83 dB; original size 17.59 -> 20.21 dB (means
    # of 3 photos; round 5: 19.10 -> 20.57 and 18.26 -> 20.64)
    assert np.mean(sized) > np.mean(direct) + 0.5 and np.mean(sized) > 19.5, (direct, sized)


def test_to_working_size_shapes_and_identity():
    x = _scene(48, 80)
    assert to_working_size(x, 48) is x
    small, big = to_working_size(x, 24), to_working_size(x, 96)
    assert small.shape == (1, 3, 24, 40) and big.shape == (1, 3, 96, 160)
    assert 0 <= float(small.min()) and float(big.max()) <= 1


def test_from_working_size_keeps_j_detail_and_carries_the_change():
    J = _scene(48, 80)
    J_working = to_working_size(J, 24)
    # no change at the working size: J comes back exactly, fine texture included
    assert torch.equal(from_working_size(J_working, J, J_working), J)
    # a uniform change made at the working size lands uniformly on J; K samples keep their batch
    two = torch.cat([J_working + 0.05, J_working - 0.05])
    back = from_working_size(two, J, J_working)
    assert back.shape == (2, 3, 48, 80)
    torch.testing.assert_close(back, torch.cat([J + 0.05, J - 0.05]).clamp(0, 1))
    # an image smaller than the working size: the same, the change averaged down to its size
    J_big = to_working_size(J, 96)
    assert torch.equal(from_working_size(J_big, J, J_big), J)
    torch.testing.assert_close(from_working_size(J_big + 0.05, J, J_big), (J + 0.05).clamp(0, 1))
    # the same shape: the result itself
    assert from_working_size(J, J, J) is J


def test_pipeline_denoise_size(tiny_unet, stage1):
    sched = NoiseSchedule.from_config({**SCHEDULE, "n_timestep": 40})
    pipe = DehazePipeline(stage1, tiny_unet(), sched, device="cpu")
    x = torch.rand(1, 3, 48, 80)
    seen = []

    def run(**kw):
        seen.clear()
        return pipe(x, steps=4, seed=0, progress=False, trajectory_every=1,
                    callback=lambda step, t, x_t, x0: seen.append(tuple(x_t.shape[-2:])), **kw)

    full = run()
    assert set(seen) == {(48, 80)}
    # a working size equal to the image's shorter side is the full-resolution run, bit for bit
    assert np.array_equal(np.asarray(run(denoise_size=48).image), np.asarray(full.image))
    half = run(denoise_size=24)
    assert set(seen) == {(32, 48)}  # 24 x 40, padded to the networks' multiple (16)
    assert half.image.size == (80, 48) and half.J.shape == full.J.shape
    assert half.trajectory[-1].x0.shape == (1, 3, 24, 40)
    assert half.options.denoise_size == 24 and "denoised at 24 px" in half.describe()
    # the result is J plus the denoiser's change at 24 x 40, upsampled (DDIM's last step is its x0)
    expected = from_working_size(half.trajectory[-1].x0, half.J, to_working_size(half.J, 24))
    assert np.array_equal(np.asarray(half.image), np.asarray(imageio.to_pil(expected)))
    assert not np.array_equal(np.asarray(half.image), np.asarray(full.image))
    with pytest.raises(ValueError, match="denoise_size"):
        pipe(x, steps=2, denoise_size=-1, progress=False)


class Blurry(Oracle):
    """The oracle's J with its fine detail smoothed away (a 3x3 box blur): what W2 found stage 1's
    own J lacks."""

    def __call__(self, hazy: torch.Tensor) -> Stage1Output:
        out = super().__call__(hazy)
        J = torch.nn.functional.avg_pool2d(torch.nn.functional.pad(out.J, (1, 1, 1, 1), mode="replicate"), 3, 1)
        return out._replace(J=J, coarse=J, I=out.T * J + (1 - out.T) * out.A)


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_input_detail_gives_the_exact_j_back_and_sharpens_a_blurry_one_under_uniform_haze(factor):
    t, a = 0.35, 0.85
    clear = _scene(96, 130)
    hazy = clear * t + a * (1 - t)
    exact = with_input_detail(Oracle(t, a)(hazy), hazy, factor)
    torch.testing.assert_close(exact.J, clear, atol=1e-5, rtol=0)  # I's detail is T times J's
    torch.testing.assert_close(exact.I, hazy, atol=1e-5, rtol=0)
    blurry = Blurry(t, a)(hazy)
    sharpened = with_input_detail(blurry, hazy, factor)
    assert psnr(blurry.J, clear) + 5 < psnr(sharpened.J, clear)
    assert torch.equal(sharpened.T, blurry.T) and torch.equal(sharpened.A, blurry.A)
    assert with_input_detail(blurry, hazy, 1) is blurry
    with pytest.raises(ValueError, match="at least 1"):
        with_input_detail(blurry, hazy, 0.5)


def test_pipeline_stage1_detail_option(stage1):
    sched = NoiseSchedule.from_config(SCHEDULE)
    x = torch.rand(1, 3, 48, 64, generator=torch.Generator().manual_seed(1))  # a multiple of 16: no padding
    pipe = DehazePipeline(stage1, Pointwise(), sched, device="cpu")
    own = pipe(x, steps=0, progress=False)
    sharp = pipe(x, steps=0, stage1_detail=3, progress=False)
    expected = with_input_detail(pipe.stage1_outputs(x), x, 3).J
    torch.testing.assert_close(sharp.J, expected, atol=1e-6, rtol=0)
    assert not torch.equal(sharp.J, own.J) and torch.equal(sharp.T, own.T)
    called = pipe(x, steps=2, stage1_detail=3, seed=0, progress=False)
    assert called.options.stage1_detail == 3 and "input detail below 3 px" in called.describe()
    assert torch.equal(called.J, sharp.J)
    assert "input detail" not in pipe(x, steps=2, seed=0, progress=False).describe()
    for bad in (-1, 1.5, "2", True):
        with pytest.raises(ValueError, match="stage1_detail"):
            pipe(x, steps=0, stage1_detail=bad, progress=False)


def test_stage1_detail_is_taken_at_the_smaller_of_the_image_and_the_working_size():
    """Rule W4: when stage 1 enlarges the image, the input's detail is the image's own, not the
    interpolation's; when it shrinks it, at the working size as before (then the finer band)."""
    t, a = 0.4, 0.8
    net = Blurry(t, a)
    small_clear = _scene(48, 64, seed=3)
    small = small_clear * t + a * (1 - t)
    out = stage1_at_size(net, small, 128, detail=3)
    torch.testing.assert_close(out.J, with_input_detail(stage1_at_size(net, small, 128), small, 3).J, atol=1e-6, rtol=0)
    before = stage1_at_size(lambda x: with_input_detail(net(x), x, 3), small, 128)  # at the enlarged size
    assert psnr(before.J, small_clear) + 3 < psnr(out.J, small_clear)
    assert torch.equal(out.T, before.T) and torch.equal(out.A, before.A)
    torch.testing.assert_close(out.I, out.T * out.J + (1 - out.T) * out.A, atol=1e-6, rtol=0)
    for h, w in ((128, 170), (200, 264)):  # as large or larger: the detail at the working size, as before W4
        x = _scene(h, w, seed=4) * t + a * (1 - t)
        torch.testing.assert_close(stage1_at_size(net, x, 128, detail=3).J,
                                   stage1_at_size(lambda i: with_input_detail(net(i), i, 3), x, 128).J,
                                   atol=1e-6, rtol=0)
    # size 0: stage 1 on the image as it is, its detail there
    torch.testing.assert_close(stage1_at_size(net, small, 0, detail=3).J, with_input_detail(net(small), small, 3).J,
                               atol=1e-6, rtol=0)
    assert torch.equal(stage1_at_size(net, small, 0).J, net(small).J)


class Leftward:
    """A stage 1 that is not mirror-symmetric: J is the running mean of each row from the left, T a
    left-to-right ramp, A the mean colour of the left half. Counts the images it is run on."""

    def __init__(self):
        self.images = 0

    def __call__(self, hazy: torch.Tensor) -> Stage1Output:
        self.images += hazy.shape[0]
        b, _, h, w = hazy.shape
        J = hazy.cumsum(-1) / torch.arange(1, w + 1)
        T = torch.linspace(0.2, 0.9, w).expand(b, 1, h, w)
        A = hazy[..., : w // 2].mean(dim=(2, 3), keepdim=True)
        return Stage1Output(J=J, coarse=J * 0.5, T=T, A=A, I=T * J + (1 - T) * A)


def test_mirror_averaged_is_the_mean_of_the_image_and_its_mirror_in_one_pass():
    """Rule W5's option: J, coarse, T, A are the means of the two answers (the mirror's flipped back),
    I re-composed from them; the result is mirror-equivariant; a symmetric net is unchanged."""
    x = torch.rand(2, 3, 20, 30, generator=torch.Generator().manual_seed(0))
    net = Leftward()
    out = mirror_averaged(net)(x)
    assert net.images == 4  # both images of the batch, each with its mirror, in one call
    one, mirror = Leftward()(x), Leftward()(x.flip(-1))
    for name in ("J", "coarse", "T"):
        torch.testing.assert_close(getattr(out, name), (getattr(one, name) + getattr(mirror, name).flip(-1)) / 2)
    torch.testing.assert_close(out.A, (one.A + mirror.A) / 2)
    torch.testing.assert_close(out.I, out.T * out.J + (1 - out.T) * out.A)
    torch.testing.assert_close(out.T, torch.full_like(out.T, 0.55))  # a ramp and its mirror average out
    again = mirror_averaged(Leftward())(x.flip(-1))
    for name in ("J", "coarse", "T", "I"):
        torch.testing.assert_close(getattr(again, name).flip(-1), getattr(out, name))
    symmetric = Oracle(0.5, 0.8)
    torch.testing.assert_close(mirror_averaged(symmetric)(x).J, symmetric(x).J)
    # through stage1_at_size (shrunk, enlarged): the working copy is what gets mirrored
    for img in (torch.rand(1, 3, 40, 60), torch.rand(1, 3, 10, 15)):
        torch.testing.assert_close(stage1_at_size(mirror_averaged(Leftward()), img, 20, detail=2).J.flip(-1),
                                   stage1_at_size(mirror_averaged(Leftward()), img.flip(-1), 20, detail=2).J)


def test_pipeline_stage1_flip_option(stage1):
    sched = NoiseSchedule.from_config(SCHEDULE)
    # a multiple of 16: with padding, the mirror's margin would be on the other side (still averaged,
    # but not exactly mirror-equivariant)
    x = torch.rand(1, 3, 48, 64, generator=torch.Generator().manual_seed(2))
    pipe = DehazePipeline(stage1, Pointwise(), sched, device="cpu")
    own = pipe(x, steps=0, progress=False)
    both = pipe(x, steps=0, stage1_flip=True, progress=False)
    assert float((both.J - own.J).abs().max()) > 0.01
    mirrored = pipe(x.flip(-1), steps=0, stage1_flip=True, progress=False)
    torch.testing.assert_close(mirrored.J.flip(-1), both.J, atol=1e-5, rtol=0)
    torch.testing.assert_close(mirrored.T.flip(-1), both.T, atol=1e-5, rtol=0)
    # the notebooks' "stage 1" is the call's: stage1_as_called with the same options
    torch.testing.assert_close(pipe.stage1_as_called(x, stage1_flip=True).J, both.J, atol=1e-6, rtol=0)
    torch.testing.assert_close(pipe.stage1_as_called(x).J, own.J, atol=1e-6, rtol=0)
    called = pipe(x, steps=2, stage1_flip=True, seed=0, progress=False)
    assert called.options.stage1_flip is True and "stage 1 averaged with its mirror" in called.describe()
    assert torch.equal(called.J, both.J)
    plain = pipe(x, steps=2, seed=0, progress=False)
    assert plain.options.stage1_flip is False and "mirror" not in plain.describe()
    for bad in (1, "yes", 0.5):
        with pytest.raises(ValueError, match="stage1_flip"):
            pipe(x, steps=0, stage1_flip=bad, progress=False)
