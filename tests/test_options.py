"""SamplingOptions: one place that validates, the defaults rule, and the resolution per sampler."""
from __future__ import annotations

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
    with pytest.raises(ValueError, match="zero_mean_noise does not apply to the ddpm sampler"):
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
        stage1_detail=0, stage1_flip=False, denoise_size=0, attention_window=0, samples=1, precision="auto")
    ddpm = SamplingOptions(sampler="ddpm").resolved(40)
    assert (ddpm.steps, ddpm.eta, ddpm.zero_mean_noise) == (40, None, False)  # every step; no eta in ancestral
    assert ddpm.resolved(40) == ddpm  # what ran can be asked for again
    for sampler in ("ddpm", "dpmpp_2m", "dpmpp_2m_sde"):  # an option the sampler ignores is refused, not dropped
        with pytest.raises(ValueError, match=f"eta does not apply to the {sampler} sampler"):
            SamplingOptions(sampler=sampler, eta=0.7)
        with pytest.raises(ValueError, match=f"eta does not apply to the {sampler} sampler"):
            SamplingOptions(eta=0.7).with_defaults(SamplingOptions(sampler=sampler)).resolved(40)
    assert SamplingOptions(steps=5000).resolved(2000).steps == 2000
    assert SamplingOptions(steps=0).resolved(2000).steps == 0


def test_describe_says_what_ran():
    text = SamplingOptions(sampler="ddim", start_strength=0.3, eta=1.0, stage1_size=128).resolved(2000).describe()
    assert text.startswith("ddim 20 steps") and "eta 1" in text and "from J at 0.3" in text and "128 px" in text
    opts = SamplingOptions(sampler="ddim", start_strength=0.3).resolved(2000)
    assert opts.describe(6).startswith("ddim, 6 evaluations of a 20-step chain")
    assert opts.describe(1).startswith("ddim, 1 evaluation of a 20-step chain")
    assert "from J at 0.3 (began at 0.26, the chain's step below), " in opts.describe(6, 0.2635)
    assert "from J at 0.3, " in opts.describe(2, 0.3)  # began where asked: nothing to add


def _subparser(name: str):
    from dehazeddpm.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices[name]


@pytest.mark.parametrize("command", ["dehaze", "eval"])
def test_the_cli_has_a_flag_for_every_field(command):
    """The sampling flags are generated from the field declarations: a field needs no CLI edit."""
    from dehazeddpm.options import option_specs

    parser = _subparser(command)
    flags = {a.dest: a.option_strings for a in parser._actions}
    for name, spec in option_specs().items():
        assert name in flags, f"no flag for {name}"
        assert "--" + name.replace("_", "-") in flags[name] and set(spec.aliases) <= set(flags[name])
    assert "--tile" in flags["tile_size"]  # the old spelling still works
    args = parser.parse_args(["x", "-o", "y"] if command == "dehaze" else ["--gt", "g"])
    assert all(getattr(args, name) is None for name in option_specs())  # nothing chosen by default


def test_flags_parse_into_the_fields():
    from dehazeddpm.cli.common import sampling_options

    parser = _subparser("dehaze")
    args = parser.parse_args(["in", "-o", "out", "--tile", "64", "--no-zero-mean-noise", "--eta", "0.5"])
    assert sampling_options(args) == SamplingOptions(tile_size=64, zero_mean_noise=False, eta=0.5)
    with pytest.raises(SystemExit) as exc:  # an option the sampler ignores is a usage error, not dropped
        sampling_options(parser.parse_args(["in", "-o", "out", "--sampler", "dpmpp_2m", "--eta", "0.5"]))
    assert exc.value.code == 2


def test_every_field_is_a_pipeline_keyword_and_nothing_else(tiny_stage1, tiny_unet):
    from dehazeddpm.diffusion import RELEASED_SCHEDULE, NoiseSchedule
    from dehazeddpm.inference import DehazePipeline
    from dehazeddpm.inference.device import resolve_precision
    from dehazeddpm.options import option_specs

    pipe = DehazePipeline(tiny_stage1(), tiny_unet(), NoiseSchedule.from_config(RELEASED_SCHEDULE), device="cpu")
    here = resolve_precision("auto", pipe.device)  # what runs is recorded, never "auto"
    assert pipe.resolve_options(**{name: None for name in option_specs()}) == SamplingOptions(precision=here).resolved(2000)
    assert pipe.resolve_options(options={"steps": 3}, eta=0.5) == SamplingOptions(steps=3, eta=0.5,
                                                                                  precision=here).resolved(2000)
    with pytest.raises(ValueError, match="fp16.*CUDA"):
        pipe.resolve_options(precision="fp16")
    with pytest.raises(ValueError, match=r"unknown keys \['colour'\]"):
        pipe.resolve_options(colour=1)
    with pytest.raises(ValueError, match="options must be a SamplingOptions or a dict"):
        pipe.resolve_options(options=[("steps", 3)])


def test_numpy_numbers_are_numbers():
    import numpy as np

    opts = SamplingOptions(steps=np.int64(5), eta=np.float32(0.5))
    assert opts.steps == 5 and type(opts.steps) is int and type(opts.eta) is float
