"""Non-homogeneous haze: statistics of the fields, the scattering model, seeds, the eval kinds."""
from __future__ import annotations

import pytest
import torch

from dehazeddpm import data
from dehazeddpm.data import nonhomogeneous as nh
from dehazeddpm.io import load_image
from dehazeddpm.metrics import psnr


def _g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _spectrum_share_low(f: torch.Tensor, cutoff: int = 4) -> float:
    """Fraction of the (mean-removed) power in the lowest ``cutoff`` frequencies."""
    p = torch.fft.fft2(f - f.mean()).abs() ** 2
    low = p[:cutoff, :cutoff].sum() + p[-cutoff:, :cutoff].sum() + p[:cutoff, -cutoff:].sum() + p[-cutoff:, -cutoff:].sum()
    return float(low / p.sum())


def test_fbm_field_range_smoothness_and_scale_invariance():
    f = nh.fbm_field(96, 128, generator=_g(0))
    assert f.shape == (96, 128) and float(f.min()) == 0.0 and float(f.max()) == 1.0
    # fractal: most power at low frequencies, yet finer octaves add detail
    assert _spectrum_share_low(f) > 0.6
    coarse = nh.fbm_field(96, 128, octaves=1, generator=_g(0))
    assert float((f - coarse).abs().mean()) > 0.02
    # neighbouring pixels are strongly correlated (soft patches, not noise)
    assert torch.corrcoef(torch.stack([f[:, :-1].flatten(), f[:, 1:].flatten()]))[0, 1] > 0.95
    # seeds reproduce and differ; the layout is the same at another resolution
    assert torch.equal(f, nh.fbm_field(96, 128, generator=_g(0)))
    assert not torch.equal(f, nh.fbm_field(96, 128, generator=_g(1)))
    small = nh.fbm_field(48, 64, generator=_g(0))
    down = torch.nn.functional.interpolate(f[None, None], size=(48, 64), mode="area")[0, 0]
    assert torch.corrcoef(torch.stack([small.flatten(), down.flatten()]))[0, 1] > 0.9
    with pytest.raises(ValueError):
        nh.fbm_field(0, 4)


def test_plume_field_is_concentrated_along_rising_plumes():
    assert float(nh.plume_field(32, 32, count=0).abs().max()) == 0.0
    f = nh.plume_field(128, 128, count=1, generator=_g(3))
    assert 0 <= float(f.min()) and float(f.max()) < 1
    # a plume covers part of the frame, not all of it: dense core, clear elsewhere
    assert float((f > 0.5).float().mean()) < 0.5 and float(f.max()) > 0.5
    assert torch.equal(f, nh.plume_field(128, 128, count=1, generator=_g(3)))
    with pytest.raises(ValueError):
        nh.plume_field(8, 8, count=-1)


def test_airlight_field_is_smooth_coloured_and_bounded():
    base = torch.tensor([0.9, 0.8, 0.7])
    a = nh.airlight_field(64, 80, base, variation=0.06, generator=_g(1))
    assert a.shape == (3, 64, 80) and float(a.min()) >= 0 and float(a.max()) <= 1
    assert torch.allclose(a.mean(dim=(1, 2)), base, atol=0.06)
    assert float(a.std(dim=(1, 2)).min()) > 0.005  # it varies in space
    with pytest.raises(ValueError):
        nh.airlight_field(4, 4, torch.tensor([0.5, 0.5]))


@pytest.mark.parametrize("kind", sorted(nh.HAZE_KINDS))
def test_nonhomogeneous_haze_keeps_the_scattering_model(kind):
    j = torch.rand(3, 64, 96, generator=_g(5))
    depth = torch.linspace(0, 1, 64).view(64, 1).expand(64, 96)
    s = nh.synthesize_nonhomogeneous(j, kind, depth, generator=_g(7))
    assert s.airlight_map is not None and s.airlight_map.shape == (3, 64, 96)
    assert torch.allclose(s.hazy, (j * s.transmission + s.airlight_map * (1 - s.transmission)).clamp(0, 1))
    assert torch.allclose(s.airlight, s.airlight_map.mean(dim=(1, 2), keepdim=True))
    assert torch.allclose(s.transmission, torch.exp(-s.beta * s.depth)[None])
    k = nh.HAZE_KINDS[kind]
    assert k.beta[0] <= s.beta <= k.beta[1]
    # density varies in space on its own: the thickness is not a function of depth alone
    assert float(s.depth.std(dim=1).mean()) > 0.02
    again = nh.synthesize_nonhomogeneous(j, kind, depth, generator=_g(7))
    assert torch.equal(s.hazy, again.hazy)
    with pytest.raises(ValueError, match="kind"):
        nh.synthesize_nonhomogeneous(j, "fog", generator=_g(0))
    with pytest.raises(ValueError, match="depth"):
        nh.synthesize_nonhomogeneous(j, kind, depth * 2, generator=_g(0))


def test_densities_span_nh_and_dense_haze():
    """Over seeds, dense haze is thicker than nh haze, and both leave a usable image."""
    j = torch.rand(3, 48, 64, generator=_g(2)) * 0.8 + 0.1
    mean_t = {k: [] for k in nh.HAZE_KINDS}
    for seed in range(12):
        for k in nh.HAZE_KINDS:
            mean_t[k].append(float(nh.synthesize_nonhomogeneous(j, k, generator=_g(seed)).transmission.mean()))
    nh_t, dense_t = sum(mean_t["nh"]) / 12, sum(mean_t["dense"]) / 12
    assert 0.25 < nh_t < 0.6 and 0.05 < dense_t < 0.25 and max(mean_t["dense"]) < min(mean_t["nh"]) + 0.2


def test_eval_set_kinds(tmp_path):
    pytest.importorskip("skimage.data")
    scores = {}
    for kind in data.EVAL_HAZE:
        pairs = data.make_eval_set(tmp_path / kind, size=48, kind=kind)
        scores[kind] = sum(psnr(load_image(h), load_image(g)) for h, g in pairs) / len(pairs)
        again = data.make_eval_set(tmp_path / f"{kind}_again", size=48, kind=kind)
        assert all(h.read_bytes() == h2.read_bytes() for (h, _), (h2, _) in zip(pairs, again))
    assert scores["dense"] < scores["nh"] and scores["dense"] < scores["depth"]
    with pytest.raises(ValueError, match="kind"):
        data.make_eval_set(tmp_path / "x", size=48, kind="smog")


def test_eval_haze_is_the_saved_pair_with_its_true_transmission_and_airlight(tmp_path):
    pytest.importorskip("skimage.data")
    name = data.EVAL_PHOTOS[1]
    clear, depth = data.resize_photo(*data.builtin_photos("eval")[name], 40)
    for kind in data.EVAL_HAZE:
        (hazy_path, gt_path), = data.make_eval_set(tmp_path / kind, size=40, kind=kind, seed=2, names=[name])
        s = data.eval_haze(name, clear, depth, kind=kind, seed=2)
        assert torch.equal(load_image(gt_path)[0], s.clear)
        assert (load_image(hazy_path)[0] - s.hazy).abs().max() <= 0.5 / 255 + 1e-6  # the saved 8-bit image
        # the scattering model with its true T and airlight map gives the hazy image back
        a = s.airlight if s.airlight_map is None else s.airlight_map
        assert torch.allclose((s.clear * s.transmission + a * (1 - s.transmission)).clamp(0, 1), s.hazy, atol=1e-5)
        assert s.transmission.shape == (1, *clear.shape[-2:])
    with pytest.raises(ValueError, match="kind"):
        data.eval_haze(name, clear, depth, kind="smog")


def test_synthetic_dataset_mixes_nonhomogeneous_crops():
    photos = {"a": (torch.rand(3, 80, 80, generator=_g(0)), None)}
    ds = data.SyntheticHazeDataset(photos, crop=32, length=40, seed=0, nonhomogeneous=1.0)
    plain = data.SyntheticHazeDataset(photos, crop=32, length=40, seed=0)
    for i in range(10):
        it = ds[i]
        assert it["hazy"].shape == (3, 32, 32) and it["airlight"].shape == (3, 1, 1)
        assert float(it["transmission"].std()) > 0
    # the default draws no extra random numbers: earlier recipes reproduce
    assert torch.equal(plain[3]["hazy"], data.SyntheticHazeDataset(photos, crop=32, length=40, seed=0)[3]["hazy"])
    with pytest.raises(ValueError):
        data.SyntheticHazeDataset(photos, crop=32, length=4, nonhomogeneous=1.5)
