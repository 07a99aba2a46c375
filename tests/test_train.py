"""Training: losses go down, resume is exact, checkpoints load strictly; the bundled demo weights
load strictly, match weights.json, and reproduce the reference's lenient-load failure."""
from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch

from dehazeddpm.data import builtin_photos, make_eval_set
from dehazeddpm.data.datasets import SyntheticHazeDataset
from dehazeddpm.diffusion import RELEASED_SCHEDULE as DEFAULT_SCHEDULE
from dehazeddpm.diffusion import sample
from dehazeddpm.diffusion.schedule import NoiseSchedule
from dehazeddpm.io import images as imageio
from dehazeddpm.io.checkpoints import load_denoiser, load_stage1, read_checkpoint, save_stage1
from dehazeddpm.metrics import psnr
from dehazeddpm.models.stage1 import Stage1Net
from dehazeddpm.models.unet import UNet, UNetConfig
from dehazeddpm.training import (
    ConditionPool,
    TrainConfig,
    denoiser_loss,
    learning_rate,
    resume_path,
    stage1_condition,
    stage1_loss,
    train_denoiser,
    train_stage1,
)

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "dehazeddpm" / "assets"
TINY_UNET = {"in_channel": 7, "out_channel": 3, "inner_channel": 8, "norm_groups": 4, "channel_mults": [1, 2],
             "attn_res": [16], "res_blocks": 1, "dropout": 0.0, "image_size": 32}


@pytest.fixture(scope="module")
def tiny_batch() -> dict:
    ds = SyntheticHazeDataset(builtin_photos("train"), crop=32, length=2, seed=3, fixed=True)
    items = [ds[i] for i in range(2)]
    return {k: torch.stack([it[k] for it in items]) for k in ("hazy", "gt", "transmission", "airlight")}


@pytest.fixture(scope="module")
def stage1_file(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return save_stage1(Stage1Net(), tmp_path_factory.mktemp("s1") / "stage1.pth")


def _cfg(tmp: Path, stage: str, **kw) -> TrainConfig:
    base = dict(stage=stage, out_dir=str(tmp), crop=32, batch_size=2, steps=4, lr=1e-3, seed=1, num_val=1,
                progress=False, val_sampler_steps=2, unet=TINY_UNET)
    base.update(kw)
    return TrainConfig(**base)


def test_stage1_loss_decreases(tiny_batch):
    torch.manual_seed(0)
    net = Stage1Net()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    losses = []
    for _ in range(8):
        loss = stage1_loss(net, tiny_batch, {})
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


def test_denoiser_loss_decreases(tiny_batch, stage1_file):
    torch.manual_seed(0)
    unet = UNet.from_config(UNetConfig.from_dict(TINY_UNET))
    stage1 = load_stage1(stage1_file)
    sched = NoiseSchedule.from_config(DEFAULT_SCHEDULE)
    opt = torch.optim.Adam(unet.parameters(), lr=2e-3)
    losses = []
    for _ in range(15):
        # the same noise level and noise every step: a fixed objective, so the decrease is not luck
        loss = denoiser_loss(unet, stage1, tiny_batch, sched, torch.Generator().manual_seed(5))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


def _assert_same_state(a: Path, b: Path) -> None:
    sa, sb = torch.load(a, weights_only=False), torch.load(b, weights_only=False)
    assert sa["step"] == sb["step"]
    for k, v in sa["model"].items():
        assert torch.equal(v, sb["model"][k]), k
    oa, ob = sa["optimizer"]["state"], sb["optimizer"]["state"]
    assert oa.keys() == ob.keys() and oa
    for i in oa:
        for k, v in oa[i].items():
            assert torch.equal(v, ob[i][k]), (i, k)
    assert torch.equal(sa["rng"]["loss_gen"], sb["rng"]["loss_gen"])


@pytest.mark.parametrize("stage", ["stage1", "denoiser"])
def test_resume_is_exact(tmp_path, stage, stage1_file):
    extra = {"stage1_checkpoint": str(stage1_file)} if stage == "denoiser" else {}
    straight = _cfg(tmp_path / "a", stage, ema_decay=0.5, **extra)
    train_stage1(straight) if stage == "stage1" else train_denoiser(straight)
    half = _cfg(tmp_path / "b", stage, ema_decay=0.5, steps=2, **extra)
    (train_stage1 if stage == "stage1" else train_denoiser)(half)
    rest = _cfg(tmp_path / "b", stage, ema_decay=0.5, **extra)
    res = (train_stage1 if stage == "stage1" else train_denoiser)(rest, resume=True)
    assert res.step == 4 and len(res.losses) == 2  # continued at step 2, did not restart
    _assert_same_state(resume_path(straight), resume_path(rest))
    ea = torch.load(resume_path(straight), weights_only=False)["ema"]
    eb = torch.load(resume_path(rest), weights_only=False)["ema"]
    assert all(torch.equal(v, eb[k]) for k, v in ea.items())


def test_resume_is_exact_with_condition_pool(tmp_path, stage1_file):
    kw = dict(stage1_checkpoint=str(stage1_file), condition_pool=6)
    straight = _cfg(tmp_path / "a", "denoiser", **kw)
    train_denoiser(straight)
    train_denoiser(_cfg(tmp_path / "b", "denoiser", steps=2, **kw))
    rest = _cfg(tmp_path / "b", "denoiser", **kw)
    assert train_denoiser(rest, resume=True).step == 4
    _assert_same_state(resume_path(straight), resume_path(rest))


def test_interrupted_cosine_run_resumes_exactly(tmp_path, monkeypatch):
    """A crash after the step-2 save, then --resume: same weights, optimiser and schedule."""
    import dehazeddpm.training.trainer as train_mod
    kw = dict(lr_schedule="cosine", save_every=2)
    straight = _cfg(tmp_path / "a", "stage1", **kw)
    train_stage1(straight)
    calls = {"n": 0}
    real_loss = train_mod.stage1_loss

    def crash_on_third(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("simulated disconnect")
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(train_mod, "stage1_loss", crash_on_third)
    crashed = _cfg(tmp_path / "b", "stage1", **kw)
    with pytest.raises(KeyboardInterrupt):
        train_stage1(crashed)
    monkeypatch.setattr(train_mod, "stage1_loss", real_loss)
    res = train_stage1(crashed, resume=True)
    assert res.step == 4 and len(res.losses) == 2
    _assert_same_state(resume_path(straight), resume_path(crashed))


def test_condition_pool_holds_the_frozen_stage1_condition(stage1_file):
    base = SyntheticHazeDataset(builtin_photos("train"), crop=16, length=5, seed=2)
    stage1 = load_stage1(stage1_file)
    pool = ConditionPool(base, stage1, size=3, seed=4, batch=2)
    assert len(pool) == 3
    flipped = 0
    for epoch in range(4):
        pool.set_epoch(epoch)
        for i in range(3):
            item, ref = pool[i], base[i]
            want = stage1_condition(stage1, ref["hazy"][None])[0]

            def matches(it: dict) -> bool:
                return torch.equal(it["gt"], ref["gt"]) and bool((it["condition"] - want).abs().max() < 1e-5)

            mirrored = {k: v.flip(-1) for k, v in item.items()}
            assert matches(item) or matches(mirrored)  # mirrored: gt and condition together
            flipped += not matches(item)
    assert 0 < flipped < 12
    with pytest.raises(ValueError, match="size"):
        ConditionPool(base, stage1, size=0, seed=0)


def test_cosine_learning_rate():
    cfg = TrainConfig(stage="stage1", steps=101, lr=1e-3, lr_schedule="cosine")
    lrs = [learning_rate(cfg, s) for s in range(101)]
    assert lrs[0] == pytest.approx(1e-3) and lrs[-1] == pytest.approx(5e-5) and lrs[50] == pytest.approx(5.25e-4)
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    assert learning_rate(TrainConfig(stage="stage1", steps=10, lr=1e-3), 7) == 1e-3
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainConfig(stage="stage1", lr_schedule="step")


def test_checkpoints_load_strictly_with_sidecar(tmp_path, stage1_file):
    r1 = train_stage1(_cfg(tmp_path / "s1", "stage1", steps=2, save_every=1))
    assert load_stage1(r1.checkpoint).training is False
    assert (tmp_path / "s1" / "stage1_000001.pth").is_file() and (tmp_path / "s1" / "val_stage1_000002.png").is_file()
    side = json.loads(r1.sidecar.read_text())
    assert side["step"] == 2 and side["config"]["stage"] == "stage1" and "torch" in side["provenance"]
    r2 = train_denoiser(_cfg(tmp_path / "d", "denoiser", steps=2, stage1_checkpoint=str(r1.checkpoint)))
    unet = load_denoiser(r2.checkpoint, **TINY_UNET)
    assert unet.config.to_dict() == UNetConfig.from_dict(TINY_UNET).to_dict()
    assert json.loads(r2.sidecar.read_text())["config"]["unet"] == TINY_UNET


@pytest.mark.parametrize("stage", ["stage1", "denoiser"])
def test_init_checkpoint_starts_from_those_weights(tmp_path, stage, stage1_file):
    """Fine-tuning: the run starts from init_checkpoint (strictly), not from a random init."""
    extra = {"stage1_checkpoint": str(stage1_file)} if stage == "denoiser" else {}
    train = train_stage1 if stage == "stage1" else train_denoiser
    load = load_stage1 if stage == "stage1" else (lambda p: load_denoiser(p, **TINY_UNET))
    first = train(_cfg(tmp_path / "a", stage, steps=2, seed=3, **extra))
    # lr 0: Adam moves nothing, so the result is exactly the init (another seed would differ)
    tuned = train(_cfg(tmp_path / "b", stage, steps=1, lr=0.0, seed=9, init_checkpoint=str(first.checkpoint), **extra))
    a, b = load(first.checkpoint).state_dict(), load(tuned.checkpoint).state_dict()
    assert all(torch.equal(v, b[k]) for k, v in a.items())
    fresh = train(_cfg(tmp_path / "c", stage, steps=1, lr=0.0, seed=9, **extra))
    assert not all(torch.equal(v, load(fresh.checkpoint).state_dict()[k]) for k, v in a.items())
    if stage == "denoiser":  # another architecture is an error, not a partial load
        other = dict(TINY_UNET, inner_channel=16)
        with pytest.raises(Exception, match="size mismatch|Missing|Unexpected|shape"):
            train(_cfg(tmp_path / "d", stage, steps=1, unet=other, init_checkpoint=str(first.checkpoint), **extra))


def test_random_depth_reaches_the_training_dataset():
    from dehazeddpm.training import build_datasets
    cfg = TrainConfig(stage="stage1", crop=16, batch_size=2, num_val=2, random_depth=0.25)
    train, _ = build_datasets(cfg)
    assert train.random_depth == 0.25
    with pytest.raises(ValueError, match="random_depth"):
        TrainConfig(stage="stage1", random_depth=-0.1)


def test_config_from_json_with_comments(tmp_path):
    p = tmp_path / "c.json"
    p.write_text('{\n  // a comment\n  "stage": "stage1", "crop": 48, "steps": 7\n}\n')
    cfg = TrainConfig.from_json(p, steps=9)
    assert (cfg.crop, cfg.steps) == (48, 9)
    with pytest.raises(ValueError, match="unknown"):
        TrainConfig.from_dict({"stage": "stage1", "bogus": 1})
    with pytest.raises(ValueError, match="stage1_checkpoint"):
        TrainConfig(stage="denoiser")


# -- the bundled demo weights -----------------------------------------------------------------------

def _demo_entry() -> dict:
    return json.loads((REPO / "dehazeddpm" / "hub" / "weights.json").read_text())["entries"]["demo"]


@pytest.fixture(scope="module")
def demo_files() -> tuple[Path, Path]:
    s1, den = ASSETS / "demo_stage1.pth", ASSETS / "demo_denoiser.pth"
    if not (s1.is_file() and den.is_file()):
        pytest.fail("demo weights missing: run scripts/train_demo.py")
    return s1, den


def test_demo_sha256_matches_registry(demo_files):
    from dehazeddpm.hub import sha256_file
    e = _demo_entry()
    for role, f in zip(("stage1", "denoiser"), demo_files):
        assert e[role]["sha256"] == sha256_file(f), role
        assert e[role]["size"] == f.stat().st_size, role


def test_demo_stage1_dehazes_held_out_photos(demo_files, tmp_path):
    """Stage 1 of the demo weights on the eval photos (never trained on): J well above the input."""
    stage1 = load_stage1(demo_files[0])
    gains = []
    for hazy_path, gt_path in make_eval_set(tmp_path, size=64):
        hazy, gt = imageio.load_image(hazy_path), imageio.load_image(gt_path)
        with torch.no_grad():
            j = stage1(hazy).J.clamp(0, 1)
        gains.append(psnr(j, gt) - psnr(hazy, gt))
    # measured: +7.2 dB mean (motorcycle +5.2, rocket +7.0, camera +9.4 at size 64)
    assert min(gains) > 2.0 and sum(gains) / len(gains) > 5.0, gains


def test_demo_lenient_load_samples_noise(demo_files, tmp_path):
    """The reference pops ``denoise_fn.downs.0.weight`` and loads with strict=False: the first
    conv stays random and the sample is noise. Strict loading must not do that."""
    s1_file, den_file = demo_files
    cfg = _demo_entry()["unet_config"]
    stage1 = load_stage1(s1_file)
    strict = load_denoiser(den_file, **cfg)
    assert strict.config.to_dict() == UNetConfig.from_dict(cfg).to_dict()
    sd = {k[len("denoise_fn."):]: v for k, v in read_checkpoint(den_file).items() if k.startswith("denoise_fn.")}
    del sd["downs.0.weight"]
    torch.manual_seed(123)  # the random first layer of the lenient model
    lenient = UNet.from_config(UNetConfig.from_dict(cfg))
    missing, unexpected = lenient.load_state_dict(sd, strict=False)
    assert missing == ["downs.0.weight"] and not unexpected
    lenient.eval()

    hazy_path, gt_path = make_eval_set(tmp_path, size=64)[0]
    hazy, gt = imageio.load_image(hazy_path), imageio.load_image(gt_path)
    h, w = (s // 16 * 16 for s in hazy.shape[-2:])
    hazy, gt = hazy[..., :h, :w], gt[..., :h, :w]
    cond = stage1_condition(stage1, hazy)
    sched = NoiseSchedule.from_config(_demo_entry()["schedule"])

    def run(model: UNet) -> float:
        x = sample(model, cond, sched, sampler="ddim", steps=10, generator=torch.Generator().manual_seed(0),
                   zero_mean_noise=True)  # from pure noise, as the reference samples
        return psnr(imageio.to_unit(x).clamp(0, 1), gt)

    good, bad = run(strict), run(lenient)
    # measured with the bundled demo weights: strict 17.0 dB, lenient 5.1 dB (noise)
    assert bad < 8.0 and bad < good - 6.0, (good, bad)


def test_scene_condition_pool_builds_the_pipelines_condition(stage1_file):
    """Crops of whole hazy scenes whose condition is stage 1 run on the scene at the working size,
    exactly as :func:`stage1_at_size` (what the pipeline calls) gives it; seeded; mirrored pairs."""
    from dehazeddpm.io.images import to_signed
    from dehazeddpm.training import SceneConditionPool

    photos = {"a": (torch.rand(3, 90, 120, generator=torch.Generator().manual_seed(0)), None)}
    stage1 = load_stage1(stage1_file)
    kw = dict(crop=16, scene_sizes=(32, 48), working_size=24, seed=5, nonhomogeneous=0.5, crops_per_scene=2)
    pool = SceneConditionPool(photos, stage1, 5, **kw)
    assert len(pool) == 5 and pool.condition.shape == (5, 4, 16, 16) and pool.gt.shape == (5, 3, 16, 16)
    assert float(pool.condition.abs().max()) <= 1 and 0 <= float(pool.gt.min()) and float(pool.gt.max()) <= 1
    again = SceneConditionPool(photos, stage1, 5, **kw)
    assert torch.equal(pool.condition, again.condition) and torch.equal(pool.gt, again.gt)
    # the same scenes and crops (same gt), but stage 1 at the scene's own size: another condition
    full = SceneConditionPool(photos, stage1, 5, **{**kw, "working_size": None})
    assert torch.equal(full.gt, pool.gt) and not torch.allclose(full.condition, pool.condition, atol=1e-3)
    # J in the condition is stage 1 of the scene brought to the crop, as stage1_at_size gives it
    assert float((pool.condition[:, :3] - to_signed(pool.gt)).abs().mean()) < 1.0
    with pytest.raises(ValueError, match="scene_sizes"):
        SceneConditionPool(photos, stage1, 5, **{**kw, "scene_sizes": (8, 48)})
    # denoise_size: crops of the whole scene brought to the denoiser's working size, gt with it
    ramp = {"r": (torch.linspace(0, 1, 120).expand(3, 90, 120).contiguous(), None)}  # a horizontal ramp
    step = lambda p: float(p.gt.diff(dim=-1).mean())  # noqa: E731
    at_scene = SceneConditionPool(ramp, stage1, 8, **kw)
    at_working = SceneConditionPool(ramp, stage1, 8, **kw, denoise_size=16)
    assert at_working.condition.shape == (8, 4, 16, 16) and at_working.gt.shape == (8, 3, 16, 16)
    assert abs(step(at_working) - 1 / round(120 * 16 / 90)) < 0.002  # the ramp over 21 columns
    assert step(at_scene) < 0.8 * step(at_working)  # scenes of 32-48 rows: 43-64 columns
    assert float((at_working.condition[:, :3] - to_signed(at_working.gt)).abs().mean()) < 1.0
    with pytest.raises(ValueError, match="denoise_size"):
        SceneConditionPool(photos, stage1, 5, **kw, denoise_size=8)
    # tinted scenes: the ground truth itself changes colour (a grey photo gains chroma)
    grey = {"g": (photos["a"][0][:1].expand(3, 90, 120).contiguous(), None)}
    chroma = lambda p: float((p.gt - p.gt.mean(1, keepdim=True)).abs().mean())  # noqa: E731
    assert chroma(SceneConditionPool(grey, stage1, 5, **kw)) < 1e-6
    assert chroma(SceneConditionPool(grey, stage1, 5, **kw, scene_tint=1.0)) > 0.02
    # stage1_flip: the condition of stage 1 averaged with its mirror, as the pipeline's option builds it
    from dehazeddpm.inference.working_size import mirror_averaged
    flipped = SceneConditionPool(photos, stage1, 5, **kw, stage1_flip=True)
    by_hand = SceneConditionPool(photos, mirror_averaged(stage1), 5, **kw)
    assert torch.equal(flipped.gt, pool.gt) and torch.equal(flipped.condition, by_hand.condition)
    assert float((flipped.condition - pool.condition).abs().max()) > 0.01


def test_noise_focus_and_scene_options_are_checked(tmp_path, stage1_file):
    from dehazeddpm.training import Trainer

    with pytest.raises(ValueError, match="noise_focus"):
        _cfg(tmp_path, "denoiser", stage1_checkpoint=str(stage1_file), noise_focus=0.0)
    with pytest.raises(ValueError, match="noise_focus_share"):
        _cfg(tmp_path, "denoiser", stage1_checkpoint=str(stage1_file), noise_focus_share=2.0)
    with pytest.raises(ValueError, match="condition_pool"):
        _cfg(tmp_path, "denoiser", stage1_checkpoint=str(stage1_file), scene_sizes=[32, 64])
    with pytest.raises(ValueError, match="nonhomogeneous"):
        _cfg(tmp_path, "stage1", nonhomogeneous=-0.1)
    with pytest.raises(ValueError, match="denoise_size must be at least crop"):
        _cfg(tmp_path, "denoiser", stage1_checkpoint=str(stage1_file), condition_pool=4, scene_sizes=[32, 40],
             denoise_size=16)
    with pytest.raises(ValueError, match="denoise_size builds"):
        _cfg(tmp_path, "denoiser", stage1_checkpoint=str(stage1_file), condition_pool=4, denoise_size=32)
    with pytest.raises(ValueError, match="stage1_flip builds the denoiser's condition pool"):
        _cfg(tmp_path, "denoiser", stage1_checkpoint=str(stage1_file), condition_pool=4, stage1_flip=True)
    cfg = _cfg(tmp_path / "f", "denoiser", stage1_checkpoint=str(stage1_file), noise_focus=0.3,
               noise_focus_share=1.0, condition_pool=4, scene_sizes=[32, 40], working_size=32, nonhomogeneous=0.5,
               denoise_size=32, stage1_flip=True)
    tr = Trainer(cfg)
    # the focused batches draw from the lowest 30% of the chain: the default call's levels
    assert len(tr.focus_schedule) == round(0.3 * len(tr.schedule))
    assert torch.equal(tr.focus_schedule.noise_levels, tr.schedule.noise_levels[:len(tr.focus_schedule)])
    assert train_denoiser(cfg).step == 4


def _train_cli(tmp_path, config: dict, *extra: str):
    from dehazeddpm.cli import main
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(config))
    stage = config.get("stage", "stage1") if isinstance(config, dict) else "stage1"
    return main(["train", stage, "--config", str(path), *extra])


def _one_line(err: str, *needles: str) -> None:
    lines = [ln for ln in err.strip().splitlines() if "error:" in ln]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert all(n in lines[0] for n in needles), (needles, err)


def test_a_rerun_never_destroys_a_finished_run(tmp_path, capsys):
    cfg = dict(stage="stage1", out_dir=str(tmp_path / "run"), crop=32, batch_size=1, steps=1, num_val=1,
               progress=False)
    assert _train_cli(tmp_path, cfg) == 0
    final = tmp_path / "run" / "stage1_final.pth"
    before = final.read_bytes()
    capsys.readouterr()
    assert _train_cli(tmp_path, {**cfg, "seed": 5}) == 2  # the same folder, no --resume
    _one_line(capsys.readouterr().err, "already holds a stage1 run", "--resume", "--overwrite")
    assert final.read_bytes() == before
    assert _train_cli(tmp_path, {**cfg, "seed": 5}, "--overwrite") == 0
    assert final.read_bytes() != before


@pytest.mark.parametrize("config,needle", [
    ([1, 2], "expected a mapping"), ({"batch_size": "four"}, "batch_size must be int"),
    ({"batch_size": 0}, "batch_size must be in"), ({"crop": 0}, "crop must be in"), ({"num_val": 0}, "num_val"),
    ({"lr": "nan"}, "lr must be a finite number"), ({"lr": -1}, "lr must be in"), ({"steps": -5}, "steps must be in"),
    ({"photos": "holiday"}, "holiday"), ({"data": "folder", "hazy_dir": "/no/such", "gt_dir": "/no/such"}, "/no/such"),
    ({"stage": "denoiser", "stage1_checkpoint": "/no/such.pth"}, "/no/such.pth"),
    ({"init_checkpoint": "/no/such.pth"}, "/no/such.pth"),
])
def test_bad_training_configs_are_one_line(tmp_path, capsys, config, needle):
    base = dict(stage="stage1", out_dir=str(tmp_path / "run"), crop=32, batch_size=1, steps=1, num_val=1,
                progress=False)
    cfg = config if isinstance(config, list) else {**base, **config}
    if isinstance(cfg, dict) and cfg.get("lr") == "nan":
        cfg["lr"] = float("nan")
    assert _train_cli(tmp_path, cfg) == 2
    _one_line(capsys.readouterr().err, needle)
    assert not (tmp_path / "run").exists()  # no run folder, not even an empty one


def test_an_out_dir_that_is_a_file_and_bad_resume_files_are_one_line(tmp_path, capsys):
    base = dict(stage="stage1", crop=32, batch_size=1, steps=1, num_val=1, progress=False)
    (tmp_path / "afile").write_text("x")
    assert _train_cli(tmp_path, {**base, "out_dir": str(tmp_path / "afile")}) == 2
    _one_line(capsys.readouterr().err, "is a file")
    run = tmp_path / "run"
    assert _train_cli(tmp_path, {**base, "out_dir": str(run)}) == 0
    good = (run / "resume_stage1.pt").read_bytes()
    capsys.readouterr()
    for bad in (b"garbage", good[: len(good) // 2]):
        (run / "resume_stage1.pt").write_bytes(bad)
        assert _train_cli(tmp_path, {**base, "out_dir": str(run), "steps": 2}, "--resume") == 2
        _one_line(capsys.readouterr().err, "resume_stage1.pt")
    st = torch.load(io.BytesIO(good), weights_only=True)
    torch.save({**st, "stage": "denoiser"}, run / "resume_stage1.pt")
    assert _train_cli(tmp_path, {**base, "out_dir": str(run), "steps": 2}, "--resume") == 2
    _one_line(capsys.readouterr().err, "not a stage1 resume file")
    torch.save({k: v for k, v in st.items() if k != "optimizer"}, run / "resume_stage1.pt")
    assert _train_cli(tmp_path, {**base, "out_dir": str(run), "steps": 2}, "--resume") == 2
    _one_line(capsys.readouterr().err, "not a resume file of this run", "optimizer")
    # a resume file further on than the config's steps: refused, the finished run left as it was
    final = (run / "stage1_final.pth").read_bytes()
    torch.save({**st, "step": 5}, run / "resume_stage1.pt")
    assert _train_cli(tmp_path, {**base, "out_dir": str(run), "steps": 2}, "--resume") == 2
    _one_line(capsys.readouterr().err, "at step 5, past this config's steps=2")
    assert (run / "stage1_final.pth").read_bytes() == final
    # a resume with another recipe (lr, crop) is refused and names what changed; the run is kept
    torch.save(st, run / "resume_stage1.pt")
    saved = (run / "resume_stage1.pt").read_bytes()
    assert _train_cli(tmp_path, {**base, "out_dir": str(run), "steps": 2, "lr": 1e-3, "crop": 48}, "--resume") == 2
    _one_line(capsys.readouterr().err, "other settings", "crop: 32 -> 48", "lr: 0.0002 -> 0.001", "init_checkpoint")
    assert (run / "stage1_final.pth").read_bytes() == final and (run / "resume_stage1.pt").read_bytes() == saved
    # how long it goes on and how it reports may change: it continues from step 1 to 2
    assert _train_cli(tmp_path, {**base, "out_dir": str(run), "steps": 2, "log_every": 1, "max_minutes": 5},
                      "--resume") == 0
    assert torch.load(run / "resume_stage1.pt", weights_only=True)["step"] == 2


def test_a_missing_photo_package_is_one_line_and_leaves_no_run(tmp_path, capsys, monkeypatch):
    """``photos="train_all"`` without glymur installed: one line naming what to install, exit 2, no
    run folder left behind."""
    import importlib.util

    from dehazeddpm.data import load_photo

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "glymur" else real(n, *a))
    load_photo.cache_clear()  # nemo may be decoded already by another test
    try:
        cfg = dict(stage="stage1", out_dir=str(tmp_path / "run"), crop=32, batch_size=1, steps=1, num_val=1,
                   progress=False, photos="train_all")
        assert _train_cli(tmp_path, cfg) == 2
        _one_line(capsys.readouterr().err, "pip install glymur")
        assert not (tmp_path / "run").exists()
    finally:
        load_photo.cache_clear()
