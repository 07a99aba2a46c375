"""The one rule every notebook uses to pick its weights, and the line that says why."""
from __future__ import annotations

import pytest

from dehazeddpm.inference.choice import choose_weights


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("DEHAZEDDPM_OFFLINE", "1")
    monkeypatch.setenv("DEHAZEDDPM_CACHE", str(tmp_path / "empty_cache"))
    for var in ("DEHAZEDDPM_WEIGHTS", "DEHAZEDDPM_STAGE1", "DEHAZEDDPM_DENOISER"):
        monkeypatch.delenv(var, raising=False)


def test_offline_cpu_picks_the_demo_and_says_why(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("DEHAZEDDPM_SMOKE", raising=False)
    choice = choose_weights(device="cpu")
    assert choice.name == "demo" and not choice.released
    assert "bundled demo" in choice.reason and "not the paper's model" in choice.reason
    assert "no GPU here" in choice.reason or "offline" in choice.reason
    monkeypatch.setenv("DEHAZEDDPM_SMOKE", "1")
    assert "smoke mode" in choose_weights(device="cpu").reason


def test_released_weights_in_the_cache_are_used_even_on_a_cpu(monkeypatch, released_cache):
    monkeypatch.setenv("DEHAZEDDPM_CACHE", str(released_cache))
    choice = choose_weights(device="cpu")
    assert choice.name == "nh-haze" and choice.released and "found in the cache" in choice.reason
    assert choice.pipe.denoiser.config.inner_channel == 64 and choice.pipe.defaults.stage1_size is None
    assert str(choice).startswith("weights: nh-haze (")
    assert choice.denoiser_file.parent == released_cache / "nh-haze" and choice.stage1_file.is_file()


def test_named_weights_and_user_files_win(monkeypatch, tmp_path):
    from dehazeddpm import hub
    monkeypatch.setenv("DEHAZEDDPM_WEIGHTS", "demo")
    assert choose_weights(device="cpu").reason == "the weights you named"
    files = hub.resolve("demo")
    monkeypatch.setenv("DEHAZEDDPM_STAGE1", str(files.stage1))
    monkeypatch.setenv("DEHAZEDDPM_DENOISER", str(files.denoiser))
    choice = choose_weights(device="cpu")
    assert choice.name == "files" and "'demo'" in choice.reason  # recognised by sha256
    assert choice.denoiser_file == files.denoiser
    monkeypatch.delenv("DEHAZEDDPM_DENOISER")
    with pytest.raises(ValueError, match="both checkpoint files"):
        choose_weights(device="cpu")
    monkeypatch.delenv("DEHAZEDDPM_STAGE1")
    monkeypatch.setenv("DEHAZEDDPM_WEIGHTS", "nh-haze")  # named, but offline and not cached
    choice = choose_weights(device="cpu")
    assert choice.name == "demo" and "the nh-haze weights you named could not be had" in choice.reason
    monkeypatch.setenv("DEHAZEDDPM_WEIGHTS", "auto")
    assert choose_weights(device="cpu").name == "demo"  # "auto" names nothing: the rule decides


def test_a_typo_is_an_error_and_the_environment_is_read_under_auto(monkeypatch):
    from dehazeddpm.hub import UnknownWeightsError
    with pytest.raises(UnknownWeightsError, match="unknown weights 'nh_hze'; known names: .*nh-haze"):
        choose_weights("nh_hze", device="cpu")
    monkeypatch.setenv("DEHAZEDDPM_WEIGHTS", "bogus")
    with pytest.raises(UnknownWeightsError, match="'bogus'"):
        choose_weights("auto", device="cpu")  # a notebook's form left at auto defers to the variable
    monkeypatch.setenv("DEHAZEDDPM_WEIGHTS", "demo")
    assert choose_weights("auto", device="cpu").name == "demo"
    assert "the weights you named" in choose_weights("auto", device="cpu").reason


@pytest.mark.parametrize("env,smoke", [({"DEHAZEDDPM_SMOKE": "1"}, True), ({"DEHAZEDDPM_SMOKE": "0", "CI": "true"}, False),
                                       ({"CI": "true"}, True), ({"CI": "false"}, False), ({}, False)])
def test_the_notebook_session_and_its_one_smoke_flag(monkeypatch, capsys, env, smoke):
    import torch

    import dehazeddpm as dd
    for name in ("DEHAZEDDPM_SMOKE", "CI"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    session = dd.notebook_session("auto", "", "", device="cpu")  # what a Colab form leaves
    printed = capsys.readouterr().out
    assert session.smoke is smoke and session.pipe is session.choice.pipe and session.device.type == "cpu"
    assert printed.startswith("device: cpu") and "weights: demo" in printed and ("smoke mode" in printed) is smoke
    assert not torch.is_grad_enabled()
    torch.set_grad_enabled(True)
