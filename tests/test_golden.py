"""Golden values of the default call on the bundled demo weights (diffusers' expected slices).

Any change of the default path's output (options, sampler, noise, attention, precision, the
weights) shows here. When a change is meant, rerun the call below and update the numbers in the
same commit, saying why.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dehazeddpm.data import make_eval_set
from dehazeddpm.inference import DehazePipeline
from dehazeddpm.inference.device import resolve_precision
from dehazeddpm.options import SamplingOptions

# pipe(make_eval_set(size=48)[0] hazy, seed=0) on one CPU thread: pixels [20:23, 30:33] and channel
# means, for each precision the default call can resolve to on a CPU ("auto": bf16 where the CPU
# has native bf16, else fp32)
EXPECTED = {  # round 15's demo weights (round 8's stage 1, its denoiser fine-tuned to J with the input's
    # detail), the mean of 2 samples of a 20-step chain from 0.3 (Rules S2 and S3), denoised at 128 px (Rule
    # W1) in one tile (Rule S3), J's detail finer than 3 px from the input (Rule W3), taken at the image's
    # 48 px rather than at the enlarged 128 px copy stage 1 ran at (Rule W4)
    "fp32": ([[[93, 86, 92], [87, 79, 85], [153, 90, 92]],
              [[93, 75, 80], [182, 89, 97], [245, 102, 110]],
              [[220, 89, 89], [225, 87, 95], [219, 79, 93]]], [147.405, 124.944, 126.648]),
    "bf16": ([[[93, 86, 92], [87, 79, 85], [152, 89, 92]],
              [[93, 75, 80], [182, 89, 98], [244, 102, 111]],
              [[219, 89, 89], [225, 87, 96], [219, 79, 94]]], [147.265, 124.842, 126.802]),
}


@pytest.fixture(scope="module")
def demo() -> DehazePipeline:
    return DehazePipeline.from_pretrained("demo", device="cpu", progress=False)


@pytest.mark.parametrize("precision", [None, "fp32"])
def test_default_call_on_the_demo_weights(tmp_path, demo, precision):
    hazy_path, _ = make_eval_set(tmp_path, size=48)[0]
    res = demo(hazy_path, seed=0, progress=False, precision=precision)
    ran = resolve_precision(precision, torch.device("cpu"))
    # tile_size: the tile that ran, None for none (the 48 px image is denoised at 128 x 189, inside one 256 px tile)
    assert res.options == SamplingOptions(sampler="ddim", steps=20, eta=1.0, start_strength=0.3, zero_mean_noise=True,
                                          stage1_size=128, stage1_detail=3, stage1_flip=False, denoise_size=128,
                                          tile_size=None,
                                          attention_window=0, samples=2,
                                          precision=ran)
    assert res.evaluations == 6  # 0.3 of 20 respaced steps, from J noised to that level (t = 526)
    out = np.asarray(res.image).astype(int)
    assert out.shape == (48, 71, 3)
    expected_slice, expected_mean = EXPECTED[ran]
    # 8-bit values: one rounding step of slack for arithmetic that differs in the last float bit
    np.testing.assert_allclose(out[20:23, 30:33], expected_slice, atol=1)
    np.testing.assert_allclose(out.mean(axis=(0, 1)), expected_mean, atol=0.05)


@pytest.mark.parametrize("steps", [1, 2, 3])
def test_short_chains_on_the_demo_weights_refine_j(demo, steps):
    """--steps 1 with the demo's start 0.3 once wrote saturated noise (one step from t = 1999);
    now every short chain starts from J at 0.3 and stays close to it."""
    from dehazeddpm.io import load_image
    from dehazeddpm.metrics import psnr

    hazy = make_eval_set_image()
    res = demo(hazy, steps=steps, seed=0, progress=False)
    assert psnr(load_image(res.image), res.J) > 22, res.describe()
    assert "from J at 0.3" in res.describe() and 1 <= res.evaluations <= steps
    # 1 to 3 steps land on 0.3 exactly (the chain is too short to keep a step below it)
    assert res.started_at == pytest.approx(0.3) and "began at" not in res.describe()


def test_a_chain_that_starts_below_the_asked_start_says_so(demo):
    """A 7-step chain asked 0.3 keeps its steps at or below 0.3: it begins at t = 333 of 2000."""
    res = demo(make_eval_set_image(), steps=7, samples=1, seed=0, progress=False)
    assert res.started_at == pytest.approx(334 / 2000) and res.evaluations == 2
    assert "from J at 0.3 (began at 0.17, the chain's step below)" in res.describe()
    assert demo(make_eval_set_image(), steps=3, start_strength=1.0, seed=0, progress=False).started_at is None


def make_eval_set_image():
    import tempfile

    from dehazeddpm.io import load_image

    with tempfile.TemporaryDirectory() as tmp:
        return load_image(make_eval_set(tmp, size=48)[0][0])
