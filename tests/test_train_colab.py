"""Training within a free Colab GPU, checked on the CPU: mixed precision (bf16 against fp32, fp16
overflow steps counted), gradient accumulation, activation checkpointing, the memory estimate,
the latest pointer, and a run killed with SIGKILL that the same command finishes bit for bit."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dehazeddpm.cli import main
from dehazeddpm.inference.device import cpu_has_fast_bf16
from dehazeddpm.models import UNet, UNetConfig
from dehazeddpm.training import TrainConfig, train
from dehazeddpm.training.memory import activation_bytes, estimate_memory
from dehazeddpm.training.state import latest_path, resume_path
from dehazeddpm.training.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]
TINY_UNET = {"in_channel": 7, "out_channel": 3, "inner_channel": 8, "norm_groups": 4, "channel_mults": [1, 2],
             "attn_res": [16], "res_blocks": 1, "dropout": 0.0, "image_size": 32}


def _cfg(tmp: Path, **kw) -> TrainConfig:
    base = dict(stage="stage1", out_dir=str(tmp), crop=32, batch_size=2, steps=4, lr=1e-3, seed=1, num_val=1,
                progress=False, precision="fp32")
    base.update(kw)
    return TrainConfig(**base)


def _weights(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


@pytest.mark.skipif(not cpu_has_fast_bf16(), reason="this CPU has no native bf16")
def test_bf16_and_fp32_runs_reach_the_same_losses(tmp_path):
    runs = {p: train(_cfg(tmp_path / p, precision=p, steps=12, batch_size=4)) for p in ("fp32", "bf16")}
    a, b = runs["fp32"].losses, runs["bf16"].losses
    # the same data and the same steps: bf16's rounding moves each loss by well under 5%
    assert all(abs(x - y) <= 0.05 * x for x, y in zip(a, b)), (a, b)
    assert b[-1] < b[0] and a[-1] < a[0]
    side = json.loads(runs["bf16"].sidecar.read_text())
    assert side["precision"] == "bf16" and side["skipped_steps"] == 0


def _three_steps(cfg: TrainConfig):
    """Losses of three optimiser steps and the gradients of the first (a run seeds the global RNG
    that stage 1's airlight dropout draws from, so runs go one after the other)."""
    trainer = Trainer(cfg)
    losses = [trainer.train_step(trainer.batches)]
    grads = [p.grad.clone() for p in trainer.model.parameters() if p.grad is not None]
    losses += [trainer.train_step(trainer.batches) for _ in range(2)]
    return losses, grads


def test_accumulated_batches_match_one_large_batch(tmp_path):
    plain_losses, plain_grads = _three_steps(_cfg(tmp_path / "plain", batch_size=8, steps=3))
    acc_losses, acc_grads = _three_steps(_cfg(tmp_path / "acc", batch_size=2, accumulate=4, steps=3))
    # the same 8 samples and dropout masks per step: the mean of four means of two is the mean of eight
    assert acc_losses == pytest.approx(plain_losses, rel=1e-5)
    # the summed gradients are the large batch's (Adam's later steps amplify rounding of tiny ones)
    assert len(plain_grads) == len(acc_grads) > 0
    for p, q in zip(plain_grads, acc_grads):
        assert torch.allclose(p, q, rtol=1e-4, atol=1e-8)


def test_an_overflowing_fp16_step_is_skipped_counted_and_logged(tmp_path, capsys):
    trainer = Trainer(_cfg(tmp_path, steps=3))
    trainer.scaler = torch.amp.GradScaler("cpu")  # what an fp16 run steps through
    # an fp16 overflow, as the scaler sees it: one gradient becomes inf on the first backward pass
    first = next(trainer.model.parameters())
    handle = first.register_hook(lambda g: g * float("inf"))
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    scale = trainer.scaler.get_scale()
    trainer.train_step(trainer.batches)
    handle.remove()
    assert trainer.skipped_steps == 1 and trainer.step == 1 and trainer.scaler.get_scale() == scale / 2
    assert all(torch.equal(v, trainer.model.state_dict()[k]) for k, v in before.items())  # nothing applied
    assert "step 0: fp16 gradients overflowed, optimiser step skipped" in capsys.readouterr().out
    trainer.train_step(trainer.batches)
    assert trainer.skipped_steps == 1 and trainer.step == 2
    assert not all(torch.equal(v, trainer.model.state_dict()[k]) for k, v in before.items())
    trainer.save_resume()
    assert torch.load(resume_path(trainer.cfg), weights_only=True)["skipped_steps"] == trainer.skipped_steps


def test_checkpointed_blocks_give_the_same_gradients_with_less_saved(tmp_path):
    torch.manual_seed(0)
    net = UNet.from_config(UNetConfig.from_dict(TINY_UNET)).train()
    x, level = torch.randn(2, 7, 32, 32), torch.full((2,), 0.4)

    def grads(checkpointed: bool):
        net.zero_grad()
        net.checkpoint_blocks = checkpointed
        saved = activation_bytes(lambda: net(x, level).square().mean().backward())
        return saved, [p.grad.clone() for p in net.parameters()]

    full, g_full = grads(False)
    less, g_less = grads(True)
    assert less < 0.6 * full
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(g_full, g_less))


def test_the_estimate_scales_from_a_small_crop_to_the_measured_step():
    cfg = TrainConfig(stage="denoiser", stage1_checkpoint="unused.pth", unet=TINY_UNET, crop=64, batch_size=8,
                      precision="fp32")
    small, full = estimate_memory(cfg, measure_crop=32), estimate_memory(cfg)
    assert small.measured_at == 32 and full.measured_at == 64
    assert abs(small.activations_per_sample - full.activations_per_sample) <= 0.2 * full.activations_per_sample
    assert full.fixed["Adam state"] == 2 * full.fixed["weights"] == 2 * full.fixed["gradients"]
    assert full.largest_batch(full.total(5)) == 5
    text = full.describe(8, accumulate=2, budget=full.total(3))
    assert "largest batch that fits" in text and ": 3; for 16 samples per step use batch_size 3 with accumulate 6" in text


def test_estimate_from_the_command_line(tmp_path, capsys):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"crop": 64, "batch_size": 4, "precision": "fp32"}))
    assert main(["train", "stage1", "--config", str(path), "--estimate", "--memory", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("stage1: ") and "activations of one step" in out and "largest batch that fits 2.00 GB" in out
    assert not (tmp_path / "runs").exists()  # nothing trained or written
    assert main(["train", "stage1", "--config", str(path), "--estimate", "--measure-crop", "40"]) == 2
    assert "multiple of 32" in capsys.readouterr().err


def _cli_config(tmp_path: Path) -> Path:
    cfg = {"stage": "stage1", "out_dir": str(tmp_path / "run"), "crop": 32, "batch_size": 2, "steps": 30,
           "save_every": 2, "lr": 1e-3, "seed": 3, "num_val": 1, "progress": False, "precision": "fp32"}
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(cfg))
    return path


def _run(config: Path, out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "dehazeddpm", "train", "stage1", "--config", str(config),
                             "--out", str(out), "--resume"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_a_killed_run_rerun_by_the_same_command_ends_bit_identical(tmp_path):
    config = _cli_config(tmp_path)
    straight = _run(config, tmp_path / "straight")
    assert straight.wait(timeout=600) == 0, straight.stderr.read().decode()
    killed = _run(config, tmp_path / "killed")
    latest = tmp_path / "killed" / "latest_stage1.json"
    deadline = time.time() + 300
    while time.time() < deadline and killed.poll() is None:
        if latest.is_file() and json.loads(latest.read_text())["step"] >= 6:
            break
        time.sleep(0.05)
    assert killed.poll() is None, "the run ended before it could be killed"
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    stopped_at = json.loads(latest.read_text())["step"]
    assert 6 <= stopped_at < 30
    again = _run(config, tmp_path / "killed")  # the same command
    assert again.wait(timeout=600) == 0, again.stderr.read().decode()
    a, b = torch.load(tmp_path / "straight" / "resume_stage1.pt", weights_only=True), \
        torch.load(tmp_path / "killed" / "resume_stage1.pt", weights_only=True)
    assert a["step"] == b["step"] == 30
    assert all(torch.equal(v, b["model"][k]) for k, v in a["model"].items())
    final = json.loads(latest.read_text())
    assert final == {"stage": "stage1", "step": 30, "steps": 30, "resume": "resume_stage1.pt",
                     "checkpoint": "stage1_final.pth"}
    assert latest_path(TrainConfig(stage="stage1", out_dir=str(tmp_path / "killed"))) == latest


def test_synthetic_haze_over_a_folder_of_your_own_photos(tmp_path):
    import numpy as np
    from PIL import Image

    photos = tmp_path / "mine"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for name in ("street", "field"):  # stand-ins for a user's clear photos (never sample images)
        Image.fromarray(rng.integers(0, 256, (80, 96, 3), dtype=np.uint8)).save(photos / f"{name}.png")
    res = train(_cfg(tmp_path / "run", photos=str(photos), steps=2, random_depth=0.5, nonhomogeneous=0.5))
    assert res.step == 2 and all(np.isfinite(res.losses))
    with pytest.raises(ValueError, match="evaluation photos are never trained on"):
        _cfg(tmp_path / "x", photos="eval")
    with pytest.raises(ValueError, match="a folder of your clear photos"):
        _cfg(tmp_path / "x", photos=str(tmp_path / "missing"))


def test_fine_tuning_on_a_public_datasets_training_split(tmp_path):
    import numpy as np
    from PIL import Image

    from dehazeddpm.data import DatasetError, dataset_pairs

    rng = np.random.default_rng(1)
    for i in (1, 2, 3, 51, 52, 53, 54, 55):  # NH-HAZE's names: 51-55 are its test split
        gt = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
        Image.fromarray(gt).save(tmp_path / f"{i:02d}_GT.png")
        Image.fromarray((gt * 0.5 + 100).astype(np.uint8)).save(tmp_path / f"{i:02d}_hazy.png")
    assert [p.name for p in dataset_pairs("nh-haze", tmp_path, "train")] == ["01", "02", "03"]
    with pytest.raises(DatasetError, match="no training split"):
        dataset_pairs("sots-outdoor", tmp_path, "train")
    res = train(_cfg(tmp_path / "run", data="dataset", dataset="nh-haze", root=str(tmp_path), steps=2))
    assert res.step == 2 and all(np.isfinite(res.losses))
    with pytest.raises(ValueError, match="needs dataset"):
        _cfg(tmp_path / "x", data="dataset")


def test_finetune_configs_pick_the_data_the_notebook_names(tmp_path):
    from dehazeddpm.training import finetune_configs

    unet = dict(TINY_UNET)
    s1, den = finetune_configs("s1.pth", "den.pth", unet, tmp_path, dataset="nh-haze", root=str(tmp_path), smoke=True)
    assert (s1.data, s1.dataset, den.data) == ("dataset", "nh-haze", "dataset")
    assert den.stage1_checkpoint == str(tmp_path / "stage1" / "stage1_final.pth") and den.init_checkpoint == "den.pth"
    s1, _ = finetune_configs("s1.pth", "den.pth", unet, tmp_path, hazy_dir="h", gt_dir="g", minutes=30)
    assert (s1.data, s1.max_minutes, s1.save_every) == ("folder", 15, 50)
    assert s1.loss_weights["colour"] == 0.0  # real pairs: the reference's loss
    s1, den = finetune_configs("s1.pth", "den.pth", unet, tmp_path, smoke=True)
    assert (s1.data, s1.photos, s1.steps, s1.crop) == ("synthetic", "train", 3, 32)
    # synthetic haze as the shipped demo stage 1 learned it: tinted airlight, the mean-colour term
    assert (s1.airlight_cast, den.airlight_cast, s1.loss_weights["colour"]) == (0.75, 0.75, 1.0)
