"""Strict loading, safe unpickling, config inference and round trips in the released layouts."""
from __future__ import annotations

import json

import pytest
import torch

import dehazeddpm as dd
from dehazeddpm.io.checkpoints import METADATA_KEY, denoiser_config, denoiser_state_dict, split_denoiser_state_dict


@pytest.fixture(scope="module")
def gen_sd(parity_dir):
    return torch.load(parity_dir / "stage2_gen.pth", weights_only=True)


@pytest.fixture(scope="module")
def stage1_ckpt(parity_dir):
    return torch.load(parity_dir / "stage1_net_g.pth", weights_only=True)


def test_missing_first_conv_is_an_error_naming_it(gen_sd):
    broken = dict(gen_sd)
    broken.pop("denoise_fn.downs.0.weight")  # what the reference loader does before strict=False
    with pytest.raises(dd.CheckpointError, match=r"denoise_fn\.downs\.0\.weight|downs\.0\.weight") as err:
        dd.load_denoiser(broken)
    assert "missing" in str(err.value)


@pytest.mark.parametrize("edit", ["missing", "extra", "shape"])
def test_any_mismatch_is_an_error_listing_keys(gen_sd, edit):
    sd = dict(gen_sd)
    key = "denoise_fn.ups.0.res_block.block2.block.3.bias"
    if edit == "missing":
        sd.pop(key)
    elif edit == "extra":
        sd["denoise_fn.ups.0.res_block.extra.weight"] = torch.zeros(3)
    else:
        sd[key] = torch.zeros(sd[key].numel() + 1)
    with pytest.raises(dd.CheckpointError) as err:
        dd.load_denoiser(sd)
    msg = str(err.value)
    assert {"missing": "missing keys", "extra": "unexpected keys", "shape": "wrong shapes"}[edit] in msg
    assert ("extra.weight" if edit == "extra" else "ups.0.res_block.block2.block.3.bias") in msg


def test_stage1_mismatches_are_errors(stage1_ckpt):
    sd = dict(stage1_ckpt["params"])
    sd.pop("fusion_0_.up_convs.3.act.weight")
    with pytest.raises(dd.CheckpointError, match=r"fusion_0_\.up_convs\.3\.act\.weight"):
        dd.load_stage1({"params": sd})
    sd = dict(stage1_ckpt["params"])
    sd["ANet.dconv.weight"] = torch.zeros(1)
    with pytest.raises(dd.CheckpointError, match="ANet.dconv.weight"):
        dd.load_stage1(sd)


def test_stage1_layouts_and_module_prefix(stage1_ckpt, parity_dir):
    io1 = torch.load(parity_dir / "stage1_io.pt", weights_only=True)
    bare = dict(stage1_ckpt["params"])
    prefixed = {"params": {"module." + k: v for k, v in bare.items()}}
    for src in (bare, prefixed, parity_dir / "stage1_net_g.pth", str(parity_dir / "stage1_net_g.pth")):
        net = dd.load_stage1(src)
        assert not net.training
        with torch.no_grad():
            torch.testing.assert_close(net(io1["hazy01"]).J, io1["J"], atol=1e-4, rtol=0)


def test_wrong_stage_is_named(parity_dir):
    with pytest.raises(dd.CheckpointError, match="load_denoiser"):
        dd.load_stage1(parity_dir / "stage2_gen.pth")
    with pytest.raises(dd.CheckpointError, match="load_stage1"):
        dd.load_denoiser(parity_dir / "stage1_net_g.pth")


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_code_executing_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save({"denoise_fn.downs.0.weight": _RunsCode(marker)}, evil)
    with pytest.raises(dd.CheckpointError, match="weights_only"):
        dd.load_denoiser(evil)
    with pytest.raises(dd.CheckpointError):
        dd.load_stage1(evil)
    assert not marker.exists()


def test_corrupt_and_missing_files(tmp_path, parity_dir):
    truncated = tmp_path / "cut.pth"
    truncated.write_bytes((parity_dir / "stage2_gen.pth").read_bytes()[:5000])
    with pytest.raises(dd.CheckpointError, match="corrupt or truncated"):
        dd.load_denoiser(truncated)
    with pytest.raises(dd.CheckpointError, match="not found"):
        dd.load_stage1(tmp_path / "nope.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(dd.CheckpointError):
        dd.load_denoiser(junk)
    plain = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), plain)
    with pytest.raises(dd.CheckpointError, match="state dict"):
        dd.load_denoiser(plain)


def test_inferred_config_matches_fixture(parity_dir):
    io2 = torch.load(parity_dir / "stage2_io.pt", weights_only=True)
    unet = dd.load_denoiser(parity_dir / "stage2_gen.pth")
    want = dict(io2["unet_config"])
    got = unet.config.to_dict()
    for k in ("in_channel", "out_channel", "inner_channel", "norm_groups", "channel_mults", "attn_res",
              "res_blocks", "image_size"):
        assert got[k] == want[k], k
    assert unet.condition == "J+T" and unet.condition_channels == 4


@pytest.mark.parametrize("cfg", [
    dict(in_channel=6, inner_channel=16, norm_groups=8, channel_mults=(1, 2), attn_res=(8,), res_blocks=1, image_size=16),
    dict(in_channel=7, inner_channel=24, norm_groups=8, channel_mults=(1, 1, 2, 3), attn_res=(32, 8),
         res_blocks=3, image_size=64),
    dict(in_channel=7, inner_channel=8, norm_groups=4, channel_mults=(2, 4, 4), attn_res=(), res_blocks=2,
         image_size=32),
])
def test_infer_config_round_trip_on_unseen_shapes(cfg, tmp_path):
    torch.manual_seed(0)
    unet = dd.UNet(**cfg).eval()
    path = dd.save_denoiser(unet, tmp_path / "x_gen.pth")
    loaded = dd.load_denoiser(path, norm_groups=cfg["norm_groups"])
    assert loaded.config.attention_levels() == unet.config.attention_levels()
    assert loaded.config.channel_mults == tuple(cfg["channel_mults"])
    assert loaded.condition == ("J" if cfg["in_channel"] == 6 else "J+T")
    x = torch.randn(2, cfg["in_channel"], 16, 24 if len(cfg["channel_mults"]) < 4 else 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, torch.tensor([0.3, 0.9])), unet(x, torch.tensor([0.3, 0.9])))


def test_overrides_win(parity_dir):
    with pytest.raises(dd.CheckpointError, match="wrong shapes|unexpected|missing"):
        dd.load_denoiser(parity_dir / "stage2_gen.pth", inner_channel=64)
    unet = dd.load_denoiser(parity_dir / "stage2_gen.pth", dropout=0.2, image_size=64)
    assert unet.config.dropout == 0.2


def test_released_layout_full_size(parity_dir):
    layout = json.loads((parity_dir / "released_checkpoint_layout.json").read_text())
    unet = dd.UNet(**layout["unet_config"])
    sched = dd.NoiseSchedule.from_config({"schedule": "linear", "n_timestep": 2000,
                                          "linear_start": 1e-6, "linear_end": 1e-2})
    sd = denoiser_state_dict(unet, sched)
    assert {k: list(v.shape) for k, v in sd.items()} == layout["stage2_gen"]
    assert sum(p.numel() for p in unet.parameters()) == layout["stage2_param_count"]
    stage1 = dd.Stage1Net()
    assert {k: list(v.shape) for k, v in stage1.state_dict().items()} == layout["stage1_params"]
    assert sum(p.numel() for p in stage1.parameters()) == layout["stage1_param_count"]
    # A state dict of exactly that layout loads, and the config is read back from the shapes.
    loaded = dd.load_denoiser(sd)
    assert loaded.config.channel_mults == (1, 2, 4, 8, 8) and loaded.config.res_blocks == 2
    assert loaded.config.attention_levels() == unet.config.attention_levels()
    del sd["denoise_fn.downs.0.weight"]
    with pytest.raises(dd.CheckpointError, match=r"downs\.0\.weight"):
        dd.load_denoiser(sd)


def test_save_round_trip_reference_layout(parity_dir, tmp_path, gen_sd):
    unet = dd.load_denoiser(parity_dir / "stage2_gen.pth")
    sched = dd.load_schedule(parity_dir / "stage2_gen.pth")
    out = dd.save_denoiser(unet, tmp_path / "I1_E1_gen.pth", sched, defaults={"eta": 0.5})
    again = torch.load(out, weights_only=True)
    meta = again.pop(METADATA_KEY)  # what the reference loaders pass over
    assert meta == {"format": 1, "unet_config": unet.config.to_dict(), "defaults": {"eta": 0.5}}
    assert list(again) == list(gen_sd)
    for k in gen_sd:
        torch.testing.assert_close(again[k], gen_sd[k], atol=1e-6, rtol=1e-6, msg=k)
    net = dd.load_stage1(parity_dir / "stage1_net_g.pth")
    p = dd.save_stage1(net, tmp_path / "net_g.pth")
    assert set(torch.load(p, weights_only=True)) == {"params"}
    assert not list(tmp_path.glob(".*tmp*"))


def test_partial_schedule_buffers_rejected(gen_sd):
    sd = dict(gen_sd)
    sd.pop("posterior_variance")
    with pytest.raises(dd.CheckpointError, match="posterior_variance"):
        split_denoiser_state_dict(sd)


def test_saved_files_carry_the_config_shapes_cannot_show(tmp_path):
    """A UNet with 4 GroupNorm groups loads as itself from a file this package saved; a bare state
    dict of the same tensors is read as the released 32 groups, and says so."""
    torch.manual_seed(0)
    unet = dd.UNet(in_channel=7, inner_channel=32, norm_groups=4, channel_mults=(1, 2), attn_res=(8,),
                   res_blocks=1, image_size=16).eval()
    path = dd.save_denoiser(unet, tmp_path / "x_gen.pth")
    cfg, how = denoiser_config(path)
    assert cfg.norm_groups == 4 and how == "the UNet config saved in the file"
    assert dd.load_denoiser(path).config.to_dict() == unet.config.to_dict()
    bare = {k: v for k, v in torch.load(path, weights_only=True).items() if k != METADATA_KEY}
    cfg, how = denoiser_config(bare)
    assert cfg.norm_groups == 32 and "norm_groups=32" in how and "assumed" in how
    assert denoiser_config(bare, norm_groups=4)[0].norm_groups == 4


@pytest.mark.parametrize("which", ["denoiser weight", "schedule buffer", "stage 1"])
def test_non_finite_tensors_are_errors_naming_them(gen_sd, stage1_ckpt, which):
    if which == "stage 1":
        sd = dict(stage1_ckpt["params"])
        sd["sam.conv1.weight"] = sd["sam.conv1.weight"].clone().fill_(float("nan"))
        with pytest.raises(dd.CheckpointError, match=r"NaN or inf.*sam\.conv1\.weight"):
            dd.load_stage1({"params": sd})
        return
    sd = dict(gen_sd)
    key = "denoise_fn.final_conv.block.3.bias" if which == "denoiser weight" else "betas"
    sd[key] = sd[key].clone()
    sd[key][0] = float("inf")
    with pytest.raises(dd.CheckpointError, match=f"NaN or inf.*{key.split('.')[-1]}"):
        dd.load_denoiser(sd) if which == "denoiser weight" else dd.load_schedule(sd)


def test_a_saved_config_that_cannot_be_built_names_the_file_and_the_setting(tmp_path):
    from dehazeddpm import UNet, save_denoiser
    torch.manual_seed(0)
    unet = UNet(in_channel=7, out_channel=3, inner_channel=16, norm_groups=8, channel_mults=(1, 2), attn_res=(8,),
                res_blocks=1, image_size=16)
    path = save_denoiser(unet, tmp_path / "den.pth")
    sd = torch.load(path, weights_only=True)
    sd["dehazeddpm"]["unet_config"]["norm_groups"] = 7
    torch.save(sd, path)
    with pytest.raises(dd.CheckpointError, match=r"den\.pth: the UNet config saved in the file cannot be built.*norm_groups 7"):
        dd.load_denoiser(path)
