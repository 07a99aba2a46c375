"""The stage-1 colour fix: cast airlight and tinted scenes in the training data, the mean-colour
loss term, and the rules that judge demo weights per haze kind (benchmarks/stage1_rule.py)."""
from __future__ import annotations

import importlib.util
import sys
import tempfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from dehazeddpm import data
from dehazeddpm.data import nonhomogeneous as nh
from dehazeddpm.models.stage1 import Stage1Net
from dehazeddpm.training import TrainConfig
from dehazeddpm.training.objectives import stage1_loss

ROOT = Path(__file__).resolve().parents[1]


def _g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_cast_airlight_leans_warm_or_cool_within_the_tint():
    casts = [nh.cast_airlight(0.8, 0.08, _g(s)) for s in range(200)]
    assert all(0 <= c <= 1 for rgb in casts for c in rgb)
    # the cast moves red and blue in opposite directions: their difference spans both signs
    rb = [r - b for r, _, b in casts]
    assert min(rb) < -0.1 and max(rb) > 0.1 and max(abs(v) for v in rb) <= 2 * 0.08 + 0.6 * 0.08 + 1e-9
    # depth haze recast: the "nh" kind's tint around the grey airlight's level
    assert data.smog_or_mist((0.8, 0.8, 0.8), _g(3)) == pytest.approx(nh.cast_airlight(0.8, nh.HAZE_KINDS["nh"].tint, _g(3)))
    grey = [data.random_haze_params(_g(s))[1] for s in range(200)]
    assert max(abs(r - b) for r, _, b in grey) <= 2 * data.AIRLIGHT_TINT + 1e-9  # today's depth haze: near-grey


def test_haze_kind_draws_are_unchanged_by_the_cast_helper():
    """The eval pairs of the nh and dense kinds are drawn from these: they must not move."""
    p = nh.random_haze_kind_params("nh", _g(0))
    assert p["airlight"] == (1.0, 1.0, 0.9632285300942203)
    assert (p["beta"], p["floor"], p["plumes"]) == (2.2658366274884862, 0.03572123504015019, 0)


def test_dataset_casts_depth_haze_airlight_only_when_asked():
    photos = {"a": (torch.rand(3, 80, 80, generator=_g(0)), None)}
    cast = data.SyntheticHazeDataset(photos, crop=32, length=60, seed=1, airlight_cast=1.0)
    plain = data.SyntheticHazeDataset(photos, crop=32, length=60, seed=1)

    def spread(ds):
        return sum(float(ds[i]["airlight"].max() - ds[i]["airlight"].min()) for i in range(60)) / 60

    assert spread(cast) > 1.5 * spread(plain)
    # the scattering model holds with the cast airlight
    it = cast[0]
    t, a = it["transmission"], it["airlight"]
    assert torch.allclose(it["hazy"], (it["gt"] * t + a * (1 - t)).clamp(0, 1), atol=1e-5)
    with pytest.raises(ValueError, match="airlight_cast"):
        data.SyntheticHazeDataset(photos, crop=32, length=4, airlight_cast=1.5)
    with pytest.raises(ValueError, match="airlight_cast"):
        TrainConfig(airlight_cast=-0.1)


def test_tint_scene_turns_a_grey_scene_coloured_without_clipping():
    grey = torch.linspace(0, 1, 64).view(1, 8, 8).expand(3, 8, 8).contiguous()
    tinted = [data.tint_scene(grey, _g(s)) for s in range(50)]
    gains = [t[:, -1, -1] for t in tinted]  # the white pixel: each channel's gain
    assert all(float(g.max()) == pytest.approx(1.0) for g in gains)  # the largest gain is 1: nothing clips
    lo, hi = data.SCENE_TINT_RANGE
    # the smallest gain is (1 - s * c) / (1 + s * c') for the drawn strength s: never below (1-hi)/(1+hi)
    assert min(float(g.min()) for g in gains) >= (1 - hi) / (1 + hi) - 1e-6
    assert max(float(g.min()) for g in gains) <= 1 - lo / 2
    # the hue goes every way: each channel is the weakest for some draws
    assert {int(g.argmin()) for g in gains} == {0, 1, 2}
    # a pixel keeps its channel ratios across the image (a white balance, not a per-pixel change)
    t = tinted[0]
    assert torch.allclose(t[:, 4, 4] / grey[:, 4, 4], t[:, -1, -1], atol=1e-6)


def test_dataset_tints_scenes_only_when_asked():
    photos = {"grey": (torch.rand(1, 80, 80, generator=_g(0)).expand(3, 80, 80).contiguous(), None)}
    tinted = data.SyntheticHazeDataset(photos, crop=32, length=40, seed=1, scene_tint=1.0)
    plain = data.SyntheticHazeDataset(photos, crop=32, length=40, seed=1)

    def chroma(ds):
        return sum(float((ds[i]["gt"] - ds[i]["gt"].mean(0)).abs().mean()) for i in range(40)) / 40

    assert chroma(plain) < 1e-6 and chroma(tinted) > 0.02
    it = tinted[3]  # the haze is laid over the tinted scene, which is the ground truth
    t, a = it["transmission"], it["airlight"]
    assert torch.allclose(it["hazy"], (it["gt"] * t + a * (1 - t)).clamp(0, 1), atol=1e-5)
    # 0 draws nothing extra: recipes before scene_tint reproduce
    assert torch.equal(data.SyntheticHazeDataset(photos, crop=32, length=40, seed=1, scene_tint=0.0)[5]["hazy"],
                       plain[5]["hazy"])
    with pytest.raises(ValueError, match="scene_tint"):
        data.SyntheticHazeDataset(photos, crop=32, length=4, scene_tint=2.0)
    with pytest.raises(ValueError, match="scene_tint"):
        TrainConfig(scene_tint=-0.5)


def test_colour_term_adds_the_l1_of_mean_colours():
    torch.manual_seed(0)
    net = Stage1Net().eval()
    batch = {"hazy": torch.rand(2, 3, 32, 32), "gt": torch.rand(2, 3, 32, 32)}
    with torch.no_grad():
        base = stage1_loss(net, batch, {})
        with_colour = stage1_loss(net, batch, {"colour": 2.0})
        J = net(batch["hazy"]).J
    expected = 2.0 * F.l1_loss(J.mean(dim=(2, 3)), batch["gt"].mean(dim=(2, 3)))
    assert float(expected) > 0
    assert torch.allclose(with_colour - base, expected, atol=1e-6)
    assert TrainConfig(loss_weights={"colour": 1.0}).loss_weights["colour"] == 1.0
    assert TrainConfig().loss_weights["colour"] == 0.0  # the reference's loss by default
    for bad in ("much", -1.0, float("nan"), True):  # caught before a run starts, not mid-step
        with pytest.raises(ValueError, match="loss weights must be finite numbers"):
            TrainConfig(loss_weights={"colour": bad})


def _rule():
    spec = importlib.util.spec_from_file_location("stage1_rule", ROOT / "benchmarks" / "stage1_rule.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["stage1_rule"] = mod
    spec.loader.exec_module(mod)
    return mod


def _cells(depth: float, nh_: float, dense: float, colour: float = 1.0):
    return {(k, s): {"psnr": {"depth": depth, "nh": nh_, "dense": dense}[k], "ssim": 0.8, "abs_da": colour,
                     "abs_db": colour} for k in ("depth", "nh", "dense") for s in (128, 384)}


def test_rule_r7_judges_each_kind_on_its_own():
    r = _rule()
    bundled = _cells(20.0, 17.0, 12.0)
    verdict = r.judge_r7(bundled, {
        "big gain, depth loss": _cells(19.5, 19.5, 15.0),      # round 6's shape: fails on depth
        "gain everywhere": _cells(19.9, 18.5, 13.2, colour=3.0),
        "small gain": _cells(20.1, 17.8, 13.5),                 # nh +0.8 < +1.0
        "closer, better colour": _cells(20.0, 18.2, 13.1, colour=1.0),
    })
    c = verdict["candidates"]
    assert not c["big gain, depth loss"]["passes"] and "depth" in c["big gain, depth loss"]["why_not"][0]
    assert not c["small gain"]["passes"]
    assert c["gain everywhere"]["passes"] and c["closer, better colour"]["passes"]
    # the larger smallest gain (+1.2) would win, but +1.1 is within 0.5 dB with a lower colour error
    assert verdict["winner"] == "closer, better colour"
    assert r.judge_r7(bundled, {"small gain": _cells(20.1, 17.8, 13.5)})["winner"] is None


def _with_colour(cells, **by_kind):
    """``cells`` with each named kind's colour error (|da| + |db|) set to the given value."""
    return {c: {**v, "abs_da": by_kind[c[0]] / 2, "abs_db": by_kind[c[0]] / 2} if c[0] in by_kind else v
            for c, v in cells.items()}


def test_rule_r8_asks_for_less_colour_error_in_every_hard_cell_at_no_psnr_cost():
    r = _rule()
    round5 = _cells(20.0, 17.0, 12.0)
    bundled = _with_colour(_cells(20.0, 18.5, 13.5), depth=6.0, nh=9.0, dense=12.0)
    verdict = r.judge_r8(round5, bundled, {
        "less cast": _with_colour(_cells(20.0, 18.5, 13.5), depth=6.2, nh=7.5, dense=10.0),
        "much less cast": _with_colour(_cells(19.95, 18.45, 13.5), depth=6.0, nh=7.0, dense=9.5),
        "nh cast barely down": _with_colour(_cells(20.0, 18.5, 13.5), depth=6.0, nh=8.5, dense=9.0),
        "psnr cost": _with_colour(_cells(20.0, 18.3, 13.5), depth=6.0, nh=7.0, dense=9.0),
        "depth cast up": _with_colour(_cells(20.0, 18.5, 13.5), depth=6.5, nh=7.0, dense=9.0),
        "not +1 dB over round 5": _with_colour(_cells(20.0, 17.9, 13.5), depth=6.0, nh=7.0, dense=9.0),
    })
    c = verdict["candidates"]
    assert c["less cast"]["passes"] and c["much less cast"]["passes"]
    assert c["nh cast barely down"]["why_not"] == ["nh 128 colour error -0.50 (needs <= -1.0)",
                                                   "nh 384 colour error -0.50 (needs <= -1.0)"]
    assert not c["psnr cost"]["passes"] and "loses -0.20 dB" in c["psnr cost"]["why_not"][0]
    assert not c["depth cast up"]["passes"] and "depth 128 colour error +0.50" in c["depth cast up"]["why_not"][0]
    assert c["not +1 dB over round 5"]["why_not"][0].startswith("R7 against round 5: smallest nh/dense gain +0.90")
    assert verdict["winner"] == "much less cast"  # nh/dense colour error 8.25 against 8.75
    assert r.judge_r8(round5, bundled, {"as before": bundled})["winner"] is None  # no colour gain


def _ssim(cells, ssim: float, psnr_shift: float = 0.0):
    return {c: {**v, "ssim": ssim, "psnr": v["psnr"] + psnr_shift} for c, v in cells.items()}


def test_rule_s1_ships_the_average_closest_to_j_at_no_cost_in_any_cell():
    r = _rule()
    base = _cells(20.0, 18.0, 14.0)
    j = _ssim(base, 0.85)
    today = _ssim(base, 0.82)
    two = _ssim(base, 0.835, psnr_shift=-0.04)       # within the 0.05 dB bound
    three = _ssim(base, 0.836)                       # better, but within 0.002 of two: fewer samples win
    verdict = r.judge_s1(j, {"today": today, "2 of 10 steps": two, "3 of 7 steps": three})
    assert verdict["winner"] == "2 of 10 steps"
    assert verdict["candidates"]["3 of 7 steps"]["worst_ssim_gap_to_j"] == pytest.approx(-0.014)
    three_better = _ssim(base, 0.84)
    assert r.judge_s1(j, {"today": today, "2 of 10 steps": two, "3 of 7 steps": three_better})["winner"] == "3 of 7 steps"
    # one cell worse than today is enough to keep today's default
    worse_cell = {**two, ("dense", 384): {**two[("dense", 384)], "ssim": 0.81}}
    lossy = _ssim(base, 0.84, psnr_shift=-0.1)
    verdict = r.judge_s1(j, {"today": today, "2 of 10 steps": worse_cell, "3 of 7 steps": lossy})
    assert verdict["winner"] == "today"
    assert verdict["candidates"]["2 of 10 steps"]["why_not"] == ["dense 384 SSIM -0.0100 below the baseline's"]
    assert "PSNR -0.10 dB < -0.05" in verdict["candidates"]["3 of 7 steps"]["why_not"][0]


def test_rule_s2_judges_only_calls_that_start_no_closer_to_j_than_the_filed_one():
    r = _rule()
    pipe = r._load(None, None)
    starts = {n: r._first_step(pipe, o) for n, o in r.S2_CANDIDATES.items()}
    # the filed call (20 steps from 0.3) starts at t = 526; S1's 7-step chain rounds down to 333
    assert starts == {r.S2_BASELINE: 526, "3 of 2 steps": 599, "6 of 1 step": 599, "3 of 7 steps": 333}
    base = _cells(20.0, 18.0, 14.0)
    j, filed = _ssim(base, 0.85), _ssim(base, 0.82)
    runs = {r.S2_BASELINE: filed, "3 of 2 steps": _ssim(base, 0.838), "6 of 1 step": _ssim(base, 0.839)}
    # within 0.002 of the best, the candidate with more steps per sample (listed first) wins
    assert r.judge_s1(j, runs, baseline=r.S2_BASELINE)["winner"] == "3 of 2 steps"
    runs["3 of 2 steps"] = _ssim(base, 0.83, psnr_shift=-0.06)  # loses more than 0.05 dB somewhere
    assert r.judge_s1(j, runs, baseline=r.S2_BASELINE)["winner"] == "6 of 1 step"
    runs["6 of 1 step"] = {**runs["6 of 1 step"], ("nh", 128): {**base[("nh", 128)], "ssim": 0.81}}
    assert r.judge_s1(j, runs, baseline=r.S2_BASELINE)["winner"] == r.S2_BASELINE  # none passes


def test_rule_w1_prefers_the_larger_working_size_and_its_calls_are_valid():
    r = _rule()
    pipe = r._load(None, None)
    sizes = [pipe.resolve_options(**o).denoise_size for o in r.W1_CANDIDATES.values()]
    assert sizes == [0, 256, 192, 128]  # the baseline, then larger working sizes first
    base = _cells(20.0, 18.0, 14.0)
    j, full = _ssim(base, 0.85), _ssim(base, 0.82)
    runs = {r.W1_BASELINE: full, "at 256 px": _ssim(base, 0.838), "at 192 px": _ssim(base, 0.839),
            "at 128 px": _ssim(base, 0.845)}
    assert r.judge_s1(j, runs, baseline=r.W1_BASELINE)["winner"] == "at 128 px"
    runs["at 128 px"] = _ssim(base, 0.839)  # within 0.002 of 192's: the larger working size wins
    assert r.judge_s1(j, runs, baseline=r.W1_BASELINE)["winner"] == "at 256 px"


def test_rule_s3_guards_colour_prefers_less_work_and_spells_out_the_calls_it_judged():
    r = _rule()
    pipe = r._load(None, None)
    ran = [pipe.resolve_options(**o) for o in r.S3_CANDIDATES.values()]
    # today's call as S3 judged it (one sample in 136 px tiles), whatever the demo's defaults are now
    assert [(o.samples, o.tile_size, o.tile_overlap) for o in ran] == [
        (1, 136, 8), (1, 256, None), (2, 256, None), (3, 256, None), (2, 136, 8)]
    assert {(o.steps, o.start_strength, o.denoise_size) for o in ran} == {(20, 0.3, 128)}  # same chain, start, size
    base = _cells(20.0, 18.0, 14.0)
    j, today = _ssim(base, 0.85), _ssim(base, 0.82)
    runs = {r.S3_BASELINE: today, "one tile": _ssim(base, 0.82), "2 samples, one tile": _ssim(base, 0.836),
            "3 samples, one tile": _ssim(base, 0.8375), "2 samples": _ssim(base, 0.84)}
    # 2 samples in today's tiles is best by more than 0.002; within 0.002 the least work wins
    assert r.judge_s1(j, runs, baseline=r.S3_BASELINE, colour_rise=r.R9_COLOUR)["winner"] == "2 samples"
    runs["2 samples"] = _ssim(base, 0.837)
    assert r.judge_s1(j, runs, baseline=r.S3_BASELINE, colour_rise=r.R9_COLOUR)["winner"] == "2 samples, one tile"
    # a colour error 0.31 above the baseline's in one cell fails it
    shifted = {**runs["2 samples, one tile"],
               ("dense", 128): {**runs["2 samples, one tile"][("dense", 128)], "abs_db": 1.31}}
    verdict = r.judge_s1(j, {**runs, "2 samples, one tile": shifted}, baseline=r.S3_BASELINE, colour_rise=r.R9_COLOUR)
    assert verdict["winner"] == "3 samples, one tile"
    assert verdict["candidates"]["2 samples, one tile"]["why_not"] == ["dense 128 colour error +0.31 > +0.3"]
    assert r.judge_s1(j, {**runs, "2 samples, one tile": shifted}, baseline=r.S3_BASELINE)["winner"] == \
        "2 samples, one tile"  # S1 and S2 had no colour guard


def test_rule_w2_asks_nh_and_dense_gains_and_prefers_the_smaller_working_size_when_close():
    r = _rule()
    pipe = r._load(None, None)
    assert [pipe.resolve_options(**o).stage1_size for o in r.W2_CANDIDATES.values()] == [128, 96, 160, 192, 256]
    assert r.W2_CANDIDATES[r.W2_BASELINE] == {"stage1_size": pipe.resolve_options().stage1_size}  # today's
    base = _photos(_with_colour(_cells(20.0, 18.5, 14.0), depth=6.0, nh=9.0, dense=12.0), a=-0.5, b=0.5)
    def cand(depth, nh_, dense, dense_colour=12.0, a=-0.5, b=0.5):
        return _photos(_with_colour(_cells(depth, nh_, dense), depth=6.0, nh=9.0, dense=dense_colour), a=a, b=b)
    sizes = {"at 96 px": 96, "at 160 px": 160, "at 192 px": 192, "at 256 px": 256}
    verdict = r.judge_w2(base, {"at 96 px": cand(20.0, 18.65, 14.3),        # nh +0.15 < +0.2
                                "at 160 px": cand(19.95, 18.75, 14.3),      # passes, smallest gain +0.25
                                "at 192 px": cand(19.95, 18.85, 14.35),     # passes, +0.35: within 0.1 of 256's
                                "at 256 px": cand(19.95, 18.9, 14.9)}, sizes)  # passes, +0.4
    c = verdict["candidates"]
    assert c["at 96 px"]["why_not"] == ["nh 128 gains +0.15 dB < +0.2", "nh 384 gains +0.15 dB < +0.2"]
    assert verdict["order"] == ["at 192 px", "at 256 px", "at 160 px"] and verdict["winner"] == "at 192 px"
    worse = r.judge_w2(base, {"at 160 px": cand(19.85, 18.9, 14.5),              # depth -0.15
                              "at 192 px": cand(20.0, 18.9, 14.5, dense_colour=12.5),
                              "at 256 px": cand(20.0, 18.9, 14.5, a=-1.1, b=1.1)}, sizes)
    w = worse["candidates"]
    assert w["at 160 px"]["why_not"] == ["depth 128 loses -0.15 dB < -0.1", "depth 384 loses -0.15 dB < -0.1"]
    assert "dense 128 colour error +0.50 (> +0.3)" in w["at 192 px"]["why_not"]
    assert w["at 256 px"]["why_not"][0] == "depth 128 a loses -0.60 dB (< -0.5)"
    assert worse["winner"] is None and worse["order"] == []


def test_rule_w3_asks_no_cell_of_j_or_the_default_call_to_lose_and_prefers_the_smaller_n_when_close():
    r = _rule()
    pipe = r._load(None, None)
    assert [pipe.resolve_options(**o).stage1_detail for o in r.W3_CANDIDATES.values()] == [0, 2, 3, 4]
    assert r.W3_CANDIDATES[r.W3_BASELINE] == {"stage1_detail": 0}  # stage 1's own J, the default before W3
    assert r.W3_CANDIDATES["detail below 3 px"] == {"stage1_detail": pipe.resolve_options().stage1_detail}  # W3's pick
    j = _photos(_with_colour(_cells(20.0, 18.0, 14.0), depth=6.0, nh=9.0, dense=12.0), a=-0.5, b=0.5)
    call = _cells(19.9, 17.9, 13.9)
    def cand(d, nh_, dense, ssim=0.8, a=-0.5, b=0.5, call_db=0.0, dense_colour=12.0):
        cj = _photos(_with_colour(_cells(d, nh_, dense), depth=6.0, nh=9.0, dense=dense_colour), a=a, b=b)
        cj = {c: {**v, "ssim": ssim} for c, v in cj.items()}
        return cj, _cells(19.9 + call_db, 17.9 + call_db, 13.9 + call_db)
    factors = {"detail below 2 px": 2, "detail below 3 px": 3, "detail below 4 px": 4}
    verdict = r.judge_w3(j, call, {"detail below 2 px": cand(20.5, 18.3, 14.25),   # smallest gain +0.25
                                   "detail below 3 px": cand(20.6, 18.35, 14.3),   # +0.30
                                   "detail below 4 px": cand(20.7, 18.5, 14.45)}, factors)  # +0.45
    assert all(v["passes"] for v in verdict["candidates"].values())
    assert verdict["winner"] == "detail below 4 px"  # 3's +0.30 is not within 0.1 of +0.45
    verdict = r.judge_w3(j, call, {"detail below 2 px": cand(20.5, 18.3, 14.4),
                                   "detail below 3 px": cand(20.6, 18.45, 14.5),
                                   "detail below 4 px": cand(20.7, 18.5, 14.45)}, factors)
    assert verdict["winner"] == "detail below 3 px"  # within 0.1 of 4's +0.45: the smaller N
    bad = r.judge_w3(j, call, {"detail below 2 px": cand(19.9, 18.3, 14.4),                 # J depth -0.10
                               "detail below 3 px": cand(20.5, 18.5, 14.5, ssim=0.79),     # J SSIM lower
                               "detail below 4 px": cand(20.5, 18.5, 14.5, call_db=-0.06)}, factors)
    b = bad["candidates"]
    assert b["detail below 2 px"]["why_not"][0] == "depth 128 loses -0.10 dB < -0.05"
    assert b["detail below 3 px"]["why_not"][0] == "J depth 128 SSIM -0.0100"
    assert b["detail below 4 px"]["why_not"][0] == "default call depth 128 loses -0.06 dB < -0.05"
    assert bad["winner"] is None
    photo = r.judge_w3(j, call, {"detail below 2 px": cand(20.5, 18.5, 14.5, a=-1.6, b=1.6),  # a: -0.6 dB
                                 "detail below 3 px": cand(20.5, 18.5, 14.5, dense_colour=12.5)}, factors)
    assert photo["candidates"]["detail below 2 px"]["why_not"][0] == "depth 128 a loses -0.60 dB (< -0.5)"
    assert "dense 128 colour error +0.50 (> +0.3)" in photo["candidates"]["detail below 3 px"]["why_not"]


def test_rule_w5_spells_out_both_calls_and_judges_the_mirror_by_w3s_tests():
    r = _rule()
    pipe = r._load(None, None)
    assert [pipe.resolve_options(**o).stage1_flip for o in r.W5_CANDIDATES.values()] == [False, True]
    # W5 shipped the mirror; W5b, on photos stage 1 never trained on, took it back: one pass is the default
    assert r.W5_CANDIDATES[r.W5_BASELINE] == {"stage1_flip": pipe.resolve_options().stage1_flip}
    assert r.W5_CANDIDATES[r.W5_CANDIDATE] == {"stage1_flip": True}
    assert set(r.UNSEEN_PHOTOS) == {"nemo", "goodstuff", "grace_hopper"} and not set(r.UNSEEN_PHOTOS) & set(r.NAMES)
    j = _photos(_with_colour(_cells(20.0, 18.0, 14.0), depth=6.0, nh=9.0, dense=12.0), a=-0.5, b=0.5)
    call = _cells(19.9, 17.9, 13.9)
    mirror = {c: {**v, "ssim": 0.8} for c, v in
              _photos(_with_colour(_cells(20.2, 18.1, 14.01), depth=6.0, nh=9.0, dense=12.0), a=-0.5, b=0.5).items()}
    verdict = r.judge_w3(j, call, {r.W5_CANDIDATE: (mirror, _cells(20.0, 18.0, 13.9))}, {r.W5_CANDIDATE: 0})
    assert verdict["winner"] == r.W5_CANDIDATE and abs(verdict["candidates"][r.W5_CANDIDATE]["min_gain"] - 0.01) < 1e-9
    one_photo = _photos(_with_colour(_cells(20.2, 18.1, 14.01), depth=6.0, nh=9.0, dense=12.0), a=-1.3, b=2.0)
    one_photo = {c: {**v, "ssim": 0.8} for c, v in one_photo.items()}  # photo a: -0.6 dB on depth haze
    bad = r.judge_w3(j, call, {r.W5_CANDIDATE: (one_photo, _cells(20.0, 18.0, 13.9))}, {r.W5_CANDIDATE: 0})
    assert bad["winner"] is None and bad["candidates"][r.W5_CANDIDATE]["why_not"][0] == "depth 128 a loses -0.60 dB (< -0.5)"


def test_rule_w5b_pairs_are_seeded_hazy_pairs_of_photos_stage1_never_trained_on(tmp_path):
    from dehazeddpm.io import load_image
    r = _rule()
    for kind in ("depth", "nh"):
        pairs = r.unseen_pairs(str(tmp_path / kind), 64, 1, kind)
        assert [h.stem for h, _ in pairs] == list(r.UNSEEN_PHOTOS)
        for h, g in pairs:
            hazy, gt = load_image(h), load_image(g)
            assert hazy.shape == gt.shape and min(hazy.shape[-2:]) == 64 and float((hazy - gt).abs().mean()) > 0.02
        again = r.unseen_pairs(str(tmp_path / f"{kind}_again"), 64, 1, kind)
        assert [h.read_bytes() for h, _ in again] == [h.read_bytes() for h, _ in pairs]  # seeded
        other = r.unseen_pairs(str(tmp_path / f"{kind}_seed2"), 64, 2, kind)
        assert [h.read_bytes() for h, _ in other] != [h.read_bytes() for h, _ in pairs]


def test_rule_w4s_baseline_pipeline_still_runs_every_stage1_option():
    """DetailAtNetSize (the code before W4) overrides stage1_outputs: it must take every argument the
    pipeline passes, so the rule reruns as written after later options (stage1_flip) arrived."""
    r = _rule()
    before, now = r._load(None, None, r.DetailAtNetSize), r._load(None, None)
    x = torch.rand(1, 3, 48, 64, generator=torch.Generator().manual_seed(0))
    for flip in (False, True):
        old_j = before(x, steps=0, stage1_flip=flip, progress=False).J
        assert float((old_j - now(x, steps=0, stage1_flip=flip, progress=False).J).abs().max()) > 0.01  # W4's change
        torch.testing.assert_close(before(x, steps=0, stage1_flip=flip, stage1_detail=0, progress=False).J,
                                   now(x, steps=0, stage1_flip=flip, stage1_detail=0, progress=False).J)


def test_rule_d7_ships_the_new_denoiser_only_if_not_worse():
    r = _rule()
    old = _cells(20.0, 18.0, 13.0)
    assert r.judge_d7(old, _cells(20.0, 18.1, 13.0))["ships"]
    assert not r.judge_d7(old, _cells(19.9, 18.0, 13.0))["ships"]
    worse_ssim = {k: {**v, "ssim": 0.79} for k, v in _cells(20.1, 18.1, 13.1).items()}
    assert not r.judge_d7(old, worse_ssim)["ships"]


def test_rule_d8_lets_no_cell_pay_and_ships_the_call_closest_to_j_in_ssim():
    r = _rule()
    j = {c: {**v, "ssim": 0.85} for c, v in _cells(20.0, 18.0, 13.0).items()}
    old = _cells(20.0, 18.0, 13.0)  # SSIM 0.8: 0.05 below J in every cell
    sharper = {c: {**v, "ssim": 0.83} for c, v in _cells(20.0, 18.05, 13.0).items()}  # gap -0.02
    louder = _cells(20.1, 18.2, 13.1)  # more PSNR, the same SSIM gap
    verdict = r.judge_d8(j, old, {"sharper": sharper, "louder": louder})
    assert verdict["winner"] == "sharper" and verdict["candidates"]["louder"]["passes"]
    assert abs(verdict["candidates"]["sharper"]["worst_ssim_gap_to_j"] + 0.02) < 1e-9
    assert abs(verdict["bundled_worst_ssim_gap_to_j"] + 0.05) < 1e-9
    # within S1_CLOSE_SSIM of the best gap, the higher mean PSNR wins
    close = {c: {**v, "ssim": 0.8295} for c, v in _cells(20.1, 18.1, 13.1).items()}
    assert r.judge_d8(j, old, {"sharper": sharper, "close": close})["winner"] == "close"
    # a mean gain does not buy one cell's loss
    one_cell = {**sharper, ("dense", 384): {**sharper[("dense", 384)], "psnr": 12.85}}
    v = r.judge_d8(j, old, {"one cell": one_cell})
    assert v["winner"] is None and any("dense 384 PSNR" in w for w in v["candidates"]["one cell"]["why_not"])
    ssim_cell = {**louder, ("nh", 128): {**louder[("nh", 128)], "ssim": 0.785}}
    assert r.judge_d8(j, old, {"ssim cell": ssim_cell})["winner"] is None
    assert r.judge_d8(j, old, {"worse": _cells(19.95, 18.0, 13.0)})["winner"] is None  # D7's mean


def test_real_haze_photos_ship_with_their_credit():
    """The photos of real haze are package data (setup.cfg), load as RGB, and are credited."""
    from dehazeddpm.io import load_image

    photos = data.real_haze_photos()
    assert tuple(photos) == data.REAL_HAZE_PHOTOS
    credit = (ROOT / "dehazeddpm" / "assets" / "real_haze" / "README.md").read_text()
    for name, path in photos.items():
        img = load_image(path)
        assert img.shape[-3] == 3 and min(img.shape[-2:]) >= 200
        assert f"`{name}.jpg`" in credit and "CC BY 4.0" in credit
    assert "assets/real_haze/*.jpg" in (ROOT / "setup.cfg").read_text()


def _photos(cells, **per_photo):
    """``cells`` with photos a and b, whose PSNRs differ from the cell's by the given offsets."""
    return {c: {**v, "photos": {n: v["psnr"] + d for n, d in per_photo.items()}} for c, v in cells.items()}


def test_rule_r9_lets_no_photo_pay_for_the_cell_mean():
    r = _rule()
    round5 = _photos(_cells(20.0, 17.0, 12.0), a=0.0, b=0.0)
    bundled = _photos(_with_colour(_cells(20.0, 18.5, 13.5), depth=6.0, nh=9.0, dense=12.0), a=-1.5, b=1.5)
    verdict = r.judge_r9(round5, bundled, {
        # the bundled stage 1's shape: the cell holds, photo a pays 1.5 dB for photo b
        "photo a pays": _photos(_with_colour(_cells(20.0, 18.5, 13.5), depth=6.0, nh=9.0, dense=12.0), a=-1.5, b=1.5),
        "every photo": _photos(_with_colour(_cells(20.0, 18.3, 13.3), depth=6.0, nh=9.0, dense=12.0), a=-0.5, b=0.5),
        "closer still": _photos(_with_colour(_cells(20.0, 18.3, 13.3), depth=6.2, nh=9.0, dense=12.0), a=-0.2, b=0.2),
        "hard cells lost": _photos(_with_colour(_cells(20.0, 18.1, 13.5), depth=6.0, nh=9.0, dense=12.0), a=0.0, b=0.0),
        "colour up": _photos(_with_colour(_cells(20.0, 18.5, 13.5), depth=6.0, nh=9.5, dense=12.0), a=0.0, b=0.0),
    })
    c = verdict["candidates"]
    assert verdict["bundled"]["worst_photo_gain"] == pytest.approx(-1.5)
    assert not c["photo a pays"]["passes"]
    assert c["photo a pays"]["why_not"][0] == "depth 128 a loses -1.50 dB against round 5 (< -1.0)"
    assert c["every photo"]["passes"] and c["closer still"]["passes"]
    assert c["hard cells lost"]["why_not"][0] == "nh 128 loses -0.40 dB against the bundled stage 1 (< -0.3)"
    assert c["colour up"]["why_not"] == ["nh 128 colour error +0.50 against the bundled stage 1 (> +0.3)",
                                         "nh 384 colour error +0.50 against the bundled stage 1 (> +0.3)"]
    assert verdict["winner"] == "closer still"  # its worst photo -0.2 dB against -0.5 (depth colour +0.2 is allowed)
    assert r.judge_r9(round5, bundled, {"as bundled": bundled})["winner"] is None


def test_rule_r10_asks_dense_gains_that_cost_no_cell_and_no_photo():
    r = _rule()
    bundled = _photos(_with_colour(_cells(20.0, 18.5, 13.5), depth=6.0, nh=9.0, dense=12.0), a=-0.5, b=0.5)
    verdict = r.judge_r10(bundled, {
        "dense up": _photos(_with_colour(_cells(19.95, 18.5, 13.9), depth=6.0, nh=9.0, dense=12.0), a=-0.5, b=0.5),
        "more dense": _photos(_with_colour(_cells(20.0, 18.45, 14.0), depth=6.0, nh=9.0, dense=11.0), a=-0.5, b=0.5),
        "too little": _photos(_with_colour(_cells(20.0, 18.5, 13.7), depth=6.0, nh=9.0, dense=12.0), a=-0.5, b=0.5),
        "depth pays": _photos(_with_colour(_cells(19.8, 18.5, 14.0), depth=6.0, nh=9.0, dense=12.0), a=-0.5, b=0.5),
        "one photo pays": _photos(_with_colour(_cells(20.0, 18.5, 14.0), depth=6.0, nh=9.0, dense=12.0), a=-1.2, b=1.2),
        "colour up": _photos(_with_colour(_cells(20.0, 18.5, 14.0), depth=6.0, nh=9.0, dense=12.5), a=-0.5, b=0.5),
    })
    c = verdict["candidates"]
    assert c["dense up"]["passes"] and c["more dense"]["passes"]
    assert c["too little"]["why_not"] == ["dense 128 gains +0.20 dB < +0.3", "dense 384 gains +0.20 dB < +0.3"]
    assert c["depth pays"]["why_not"][0] == "depth 128 loses -0.20 dB < -0.1"
    assert c["one photo pays"]["why_not"][0] == "depth 128 a loses -0.70 dB (< -0.5)"
    assert "dense 128 colour error +0.50 (> +0.3)" in c["colour up"]["why_not"]
    assert verdict["winner"] == "more dense"  # +0.5 dB against +0.4
    assert r.judge_r10(bundled, {"as bundled": bundled})["winner"] is None


def test_rule_r13_asks_every_cell_of_photos_neither_trained_on_to_gain_and_guards_the_rule_photos():
    r = _rule()
    # the judge photos: trained on by no shipped or candidate stage 1, none an eval photo
    assert set(r.JUDGE_SET) == {"bridge", "dragonfly", "kleiber", "free", "greentock", "grace_hopper"}
    from dehazeddpm.data import EVAL_PHOTOS, PHOTO_SPLITS
    assert not set(r.JUDGE_SET) & ({p for split in PHOTO_SPLITS.values() for p in split} | set(EVAL_PHOTOS))
    judge = _photos(_with_colour(_cells(20.0, 18.0, 14.0), depth=6.0, nh=9.0, dense=12.0), a=-0.5, b=0.5)
    seen = _cells(24.0, 21.0, 16.0)
    def cand(d, nh_, dense, a=-0.5, b=0.5, dense_colour=12.0, seen_depth=24.0):
        return (_photos(_with_colour(_cells(d, nh_, dense), depth=6.0, nh=9.0, dense=dense_colour), a=a, b=b),
                _cells(seen_depth, 21.0, 16.0))
    verdict = r.judge_r13(judge, seen, {
        "broad": cand(20.2, 18.3, 14.15),                  # smallest gain +0.15
        "broader": cand(20.3, 18.25, 14.3),                # +0.25: wins
        "depth flat": cand(20.05, 18.5, 14.5),             # depth +0.05 < +0.1
        "forgets": cand(20.3, 18.3, 14.3, seen_depth=23.8),  # rule photos' depth -0.2 dB
        "one photo pays": cand(20.3, 18.3, 14.3, a=-1.4, b=1.4),  # photo a: -0.6 dB on depth
        "colour": cand(20.3, 18.3, 14.3, dense_colour=12.4),
    })
    c = verdict["candidates"]
    assert c["broad"]["passes"] and c["broader"]["passes"] and verdict["winner"] == "broader"
    assert c["depth flat"]["why_not"] == ["depth 128 gains +0.05 dB < +0.1", "depth 384 gains +0.05 dB < +0.1"]
    assert c["forgets"]["why_not"] == ["rule photos depth 128 loses -0.20 dB < -0.1",
                                       "rule photos depth 384 loses -0.20 dB < -0.1"]
    assert c["one photo pays"]["why_not"][0] == "depth 128 a loses -0.60 dB (< -0.5)"
    assert c["colour"]["why_not"] == ["dense 128 colour error +0.40 (> +0.3)", "dense 384 colour error +0.40 (> +0.3)"]
    assert r.judge_r13(judge, seen, {"depth flat": cand(20.05, 18.5, 14.5)})["winner"] is None
    # the judge pairs are made by make_eval_set from both splits, 6 photos
    with tempfile.TemporaryDirectory() as tmp:
        pairs = r.judge_pairs(tmp, 32, 0, "nh")
    assert sorted(h.stem for h, _ in pairs) == sorted(r.JUDGE_SET)
