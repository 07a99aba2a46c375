"""SamplingOptions: one place that validates, the defaults rule, and the resolution per sampler."""
from __future__ import annotations

import dataclasses

import pytest

from dehazeddpm.options import DEFAULT_STEPS, SamplingOptions


@pytest.mark.parametrize("field,bad,message", [
    ("sampler", "euler", "sampler must be one of ddpm, ddim"),
    ("steps", -1, "steps must be >= 0"), ("steps", 2.5, "steps must be an integer"), ("steps", True, "integer"),
    ("eta", 1.5, r"eta must be in \[0, 1\]"), ("eta", float("nan"), "eta must be a number"), ("eta", "1", "number"),
    ("start_strength", 0, r"start_strength must be in \(0, 1\]"), ("stage1_size", -1, "stage1_size must be >= 0"),
    ("tile_size", 0, "tile_size must be >= 1"), ("tile_overlap", -2, "tile_overlap must be >= 0"),
    ("attention_window", -1, "attention_window must be >= 0"), ("fusion", "alpha", "fusion must be one of transmission"), ("precision", "fp8", "precision must be one of"),
    ("zero_mean_noise", 1, "zero_mean_noise must be one of True, False"),
])
def test_every_field_is_checked_with_one_line(field, bad, message):
    with pytest.raises(ValueError, match=message) as err:
        SamplingOptions(**{field: bad})
    assert "\n" not in str(err.value)


def test_combinations_and_unknown_keys():
    with pytest.raises(ValueError, match="zero_mean_noise is a DDIM option"):
        SamplingOptions(sampler="ddpm", zero_mean_noise=True)
    with pytest.raises(ValueError, match="tile_overlap must be smaller than tile_size"):
        SamplingOptions(tile_size=32, tile_overlap=32)
    with pytest.raises(ValueError, match=r"unknown keys \['colour'\]"):
        SamplingOptions.from_mapping({"colour": 1})
    assert SamplingOptions.from_mapping({"eta": 0.5}).to_dict() == {"eta": 0.5}


def test_weights_defaults_fill_only_what_a_call_leaves_open():
    demo = SamplingOptions(sampler="ddim", start_strength=0.3, eta=1.0, stage1_size=128)
    assert SamplingOptions().with_defaults(demo) == demo
    assert SamplingOptions(eta=0.0).with_defaults(demo).eta == 0.0
    assert SamplingOptions(stage1_size=0).with_defaults(demo).stage1_size == 0
    # DDIM's defaults never leak into an ancestral run; stage1_size is not sampler-specific
    ddpm = SamplingOptions(sampler="ddpm").with_defaults(demo)
    assert (ddpm.eta, ddpm.start_strength, ddpm.stage1_size) == (None, None, 128)


def test_resolved_options_are_concrete():
    assert SamplingOptions().resolved(2000) == SamplingOptions(
        sampler="ddim", steps=DEFAULT_STEPS, eta=0.0, start_strength=1.0, zero_mean_noise=True, stage1_size=0,
        attention_window=0, precision="auto")
    ddpm = SamplingOptions(sampler="ddpm", eta=0.7).resolved(40)
    assert (ddpm.steps, ddpm.eta, ddpm.zero_mean_noise) == (40, 0.0, False)  # every step; no eta in ancestral
    assert SamplingOptions(steps=5000).resolved(2000).steps == 2000
    assert SamplingOptions(steps=0).resolved(2000).steps == 0
    frozen = SamplingOptions()
    with pytest.raises(dataclasses.FrozenInstanceError):
        frozen.eta = 1.0  # type: ignore[misc]


def test_describe_says_what_ran():
    text = SamplingOptions(sampler="ddim", start_strength=0.3, eta=1.0, stage1_size=128).resolved(2000).describe()
    assert text.startswith("ddim 20 steps") and "eta 1" in text and "from J at 0.3" in text and "128 px" in text
    opts = SamplingOptions(sampler="ddim", start_strength=0.3).resolved(2000)
    assert opts.describe(6).startswith("ddim, 6 evaluations of a 20-step chain")
    assert opts.describe(1).startswith("ddim, 1 evaluation of a 20-step chain")
