from __future__ import annotations

import pytest

import dehazeddpm as dd
from dehazeddpm.io.reference_config import strip_json_comments

REFERENCE_STYLE = """{
    "name": "Dehaze_test",
    "phase": "train", // train or val
    "path": { //set the path
        "resume_state": "/mnt/workspace/x/NH_I230000_E4600",
        "resume_stateH": "/mnt/workspace/x/NH_net_g_80000.pth",
        "url": "https://example.org/a//b"
    },
    "model": {
        "which_model_G": "sr3", // use the ddpm or sr3 network structure
        "unet": {
            "in_channel": 7, "out_channel": 3, "inner_channel": 64,
            "channel_multiplier": [1, 2, 4, 8, 8],
            "attn_res": [16], "res_blocks": 2, "dropout": 0.2
        },
        "beta_schedule": { // use munual beta_schedule for acceleration
            "train": {"schedule": "linear", "n_timestep": 2000, "linear_start": 1e-6, "linear_end": 1e-2},
            "val": {"schedule": "linear", "n_timestep": 1000, "linear_start": 1e-6, "linear_end": 1e-2}
        },
        "diffusion": {"image_size": 512, "channels": 3, "conditional": true}
    },
    "train": {"optimizer": {"type": "adam", "lr": 1e-4}}
}"""


def test_comments_stripped_but_not_inside_strings():
    assert strip_json_comments('{"a": "x//y"} // c') == '{"a": "x//y"} '
    assert strip_json_comments('{"a": 1 /* b */}') == '{"a": 1 }'
    assert strip_json_comments('{"a": "q\\"//"}//z') == '{"a": "q\\"//"}'


def test_reference_config(tmp_path):
    path = tmp_path / "test_NH.json"
    path.write_text(REFERENCE_STYLE)
    cfg = dd.DehazeConfig.from_reference(path)
    assert cfg.unet.channel_mults == (1, 2, 4, 8, 8) and cfg.unet.image_size == 512
    assert cfg.unet.norm_groups == 32 and cfg.unet.dropout == 0.2
    assert cfg.sample_schedule.n_timestep == 1000 and cfg.train_schedule.n_timestep == 2000
    assert cfg.denoiser_checkpoint == "/mnt/workspace/x/NH_I230000_E4600_gen.pth"
    assert cfg.stage1_checkpoint.endswith("NH_net_g_80000.pth")
    unet = dd.UNet.from_config(cfg.unet)
    assert sum(p.numel() for p in unet.parameters()) == 92_557_507
    assert len(dd.NoiseSchedule.from_config(cfg.sample_schedule)) == 1000


def test_bad_configs(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"model": {')
    with pytest.raises(ValueError, match="bad.json"):
        dd.DehazeConfig.from_reference(bad)
    with pytest.raises(ValueError, match="UNet config: unknown keys"):
        dd.UNetConfig.from_dict({"inner_channels": 3})
    with pytest.raises(ValueError, match="schedule: unknown keys"):
        dd.NoiseSchedule.from_config({"schedule": "linear", "steps": 3})


def test_train_config_is_split_into_the_parts_each_stage_reads(tmp_path):
    from dataclasses import fields

    from dehazeddpm.training import DenoiserSettings, RunSettings, Stage1Settings, TrainConfig

    s1, den = TrainConfig.stage_fields("stage1"), TrainConfig.stage_fields("denoiser")
    assert "loss_weights" in s1 and "loss_weights" not in den
    assert {"unet", "condition_pool", "stage1_checkpoint"} <= set(den) - set(s1)
    parts = [{f.name for f in fields(p)} for p in (RunSettings, Stage1Settings, DenoiserSettings)]
    assert set.union(*parts) == {f.name for f in fields(TrainConfig)} and sum(map(len, parts)) == 49  # precision, accumulate, checkpoint_blocks, dataset, root, airlight_cast, scene_tint, dense_share, stage1_detail, stage1_flip, denoise_size since 0.4
    # a flat JSON file of 0.3 (keys of both stages, // comments) still loads
    path = tmp_path / "c.json"
    path.write_text('{"stage": "stage1", "crop": 48, // a comment\n "loss_weights": {"A": 0.5}, "unet": {}}')
    cfg = TrainConfig.from_json(path)
    assert (cfg.crop, cfg.loss_weights["A"], cfg.loss_weights["J"]) == (48, 0.5, 1.0)
    with pytest.raises(ValueError, match=r"training config: unknown keys \['crops'\]"):
        TrainConfig.from_dict({"crops": 3})
