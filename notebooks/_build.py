"""Generate the tutorial notebooks, so they stay consistent (badge, setup cell, smoke flag).

    python notebooks/_build.py            # write clean notebooks (no outputs), keeping the
                                          # stored outputs of NBVAL_CHECK_OUTPUT cells
    python notebooks/_build.py --store    # also execute them (CI=1) and store the outputs of
                                          # the NBVAL_CHECK_OUTPUT cells only

Committed notebooks carry no outputs and no execution counts, except the cells marked
``# NBVAL_CHECK_OUTPUT``: nbval compares those against their stored (deterministic) outputs,
and needs an execution count on them (1, 2, ... in order) to accept stored outputs.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
BADGE = ("[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
         "(https://colab.research.google.com/github/dehazeddpm/dehazeddpm/blob/main/notebooks/{name})")
CHECK = "# NBVAL_CHECK_OUTPUT"

CLONE = """# NBVAL_SKIP
# On Colab: fetch the repository first (locally the notebook already sits inside it).
import os, sys
if 'google.colab' in sys.modules:
    if not os.path.isdir('/content/dehazeddpm'):
        !git clone -q https://github.com/dehazeddpm/dehazeddpm /content/dehazeddpm
    %cd /content/dehazeddpm/notebooks"""

SETUP = """import os, sys
# The repository root holds colab_setup.py and the package; make it importable from notebooks/.
if os.path.isfile(os.path.join('..', 'colab_setup.py')) and os.path.abspath('..') not in sys.path:
    sys.path.insert(0, os.path.abspath('..'))
# Smoke mode (CI, or DEHAZEDDPM_SMOKE=1): tiny images and few steps so the notebook runs on a CPU in seconds.
SMOKE = bool('CI' in os.environ or os.environ.get('DEHAZEDDPM_SMOKE'))
import colab_setup
info = colab_setup.setup(weights='demo', install=True)"""

IMPORTS = """import tempfile
import time

import torch
from PIL import Image

import dehazeddpm as dd
from dehazeddpm import haze, imageio, metrics, plotting, widgets

DEVICE = 'cuda' if info['device'] == 'cuda' else 'cpu'
torch.set_grad_enabled(False)"""

PIPE_DEMO = """pipe = dd.DehazePipeline.from_pretrained('demo', device=DEVICE)
print(pipe.schedule)"""


def md(text: str) -> nbformat.NotebookNode:
    return new_markdown_cell(text.strip("\n"))


def code(text: str) -> nbformat.NotebookNode:
    return new_code_cell(text.strip("\n"))


def header(name: str, title: str, intro: str) -> List[nbformat.NotebookNode]:
    return [md(BADGE.format(name=name) + f"\n\n# {title}\n\n" + intro.strip()), code(CLONE), code(SETUP)]


# --------------------------------------------------------------------------------------------
# 01 quickstart
# --------------------------------------------------------------------------------------------
def nb01() -> List[nbformat.NotebookNode]:
    name = "01_quickstart.ipynb"
    return header(name, "Quickstart: dehaze one image", """
DehazeDDPM (Yu et al., [arXiv 2308.11949](https://arxiv.org/abs/2308.11949)) dehazes in two stages:
a physics-aware network (stage 1) estimates the clear image **J**, the transmission **T** and the
airlight **A**; a conditional diffusion model (stage 2) then refines J into a sharp, haze-free image.

This notebook picks weights, loads an image (yours on Colab, or a bundled one), dehazes it and
shows the result. Run it top to bottom.
""") + [
        md("""
## 1. Weights

On a GPU we use the released NH-HAZE weights (downloaded on first use). On a CPU, or offline, we use
the small `demo` weights bundled with the package: they run in seconds but are **not** the paper's model.
"""),
        code(IMPORTS),
        code("""
WEIGHTS = 'nh-haze' if (info['device'] == 'cuda' and not SMOKE and not info['offline']) else 'demo'
try:
    pipe = dd.DehazePipeline.from_pretrained(WEIGHTS, device=DEVICE)
except Exception as exc:  # e.g. no network on a GPU machine: fall back to the bundled weights
    print(f'could not load {WEIGHTS!r} ({exc}); using the bundled demo weights')
    WEIGHTS = 'demo'
    pipe = dd.DehazePipeline.from_pretrained(WEIGHTS, device=DEVICE)
SIZE = 64 if SMOKE else 384             # shorter side of the bundled images, in pixels
STEPS = 4 if SMOKE else info['steps']   # sampling steps (respaced from the training schedule)
print('weights:', WEIGHTS, '| steps:', STEPS, '| size:', SIZE)
"""),
        md("""
## 2. An image

The bundled evaluation images are photos from scikit-image with synthetic haze (and their clear
ground truth). On Colab the next-but-one cell lets you upload your own photo instead.
"""),
        code("""
workdir = tempfile.mkdtemp(prefix='dehazeddpm_')
pairs = {hazy.stem: (hazy, gt) for hazy, gt in haze.make_eval_set(workdir, size=SIZE, seed=0)}
print('bundled images:', list(pairs))
IMAGE = 'motorcycle'   # or 'rocket', 'camera'
hazy_path, gt_path = pairs[IMAGE]
"""),
        code("""
# NBVAL_SKIP
# Colab only: upload a hazy photo of your own (cancel the dialog to keep the bundled one).
if info['in_colab']:
    from google.colab import files
    uploaded = files.upload()
    if uploaded:
        fname, data = next(iter(uploaded.items()))
        hazy_path, gt_path = os.path.join(workdir, fname), None
        with open(hazy_path, 'wb') as f:
            f.write(data)
"""),
        md("## 3. Dehaze"),
        code("""
hazy = imageio.load_image(hazy_path)
res = pipe(hazy, sampler='ddim', steps=STEPS, seed=0, progress=True)
print({k: round(v, 2) for k, v in res.timings.items() if isinstance(v, (int, float))})
"""),
        code(CHECK + """
# The result has the input's size; J and T are the stage-1 estimates the diffusion was conditioned on.
print(f'output size == input size: {res.image.size == Image.open(hazy_path).size}\\n'
      f'J {tuple(res.J.shape)} | T {tuple(res.T.shape)} | A {tuple(res.A.shape)}')
"""),
        code("""
images, titles = [hazy, res.image], ['hazy input', f'dehazed ({WEIGHTS}, {STEPS} steps)']
if gt_path is not None:
    gt = imageio.load_image(gt_path)
    images.append(gt)
    titles.append('ground truth')
    print(f'PSNR vs ground truth: hazy {metrics.psnr(hazy, gt):.2f} dB -> dehazed '
          f'{metrics.psnr(imageio.load_image(res.image), gt):.2f} dB')
plotting.show(plotting.plot_side_by_side(images, titles))
"""),
        md("Drag the slider to wipe between the input and the result."),
        code("""
slider = widgets.BeforeAfterSlider(hazy, res.image, labels=('hazy', 'dehazed'))
slider.show()
"""),
        md("## 4. Save / download"),
        code("""
out_path = os.path.join(workdir, 'dehazed.png')
res.image.save(out_path)
print('saved', out_path)
"""),
        code("""
# NBVAL_SKIP
if info['in_colab']:
    from google.colab import files
    files.download(out_path)
"""),
    ]


# --------------------------------------------------------------------------------------------
# 02 stage-1 physics
# --------------------------------------------------------------------------------------------
def nb02() -> List[nbformat.NotebookNode]:
    name = "02_stage1_physics.ipynb"
    return header(name, "Stage 1: the physics of haze", r"""
Haze follows the atmospheric scattering model

$$I(x) = J(x)\,t(x) + A\,\bigl(1 - t(x)\bigr),$$

where $I$ is the hazy image, $J$ the clear scene, $t \in [0, 1]$ the transmission (the fraction of
scene light that reaches the camera; $t = e^{-\beta d}$ for scattering $\beta$ and depth $d$) and $A$
the global airlight (the colour of the haze). Stage 1 of DehazeDDPM (`Stage1Net`, the reference's
*netH*) predicts $J$, $T$ and $A$ and re-composes $I$ from them, which is how it is trained to be
physically consistent. Here we look at those outputs on the bundled demo weights.
""") + [
        code(IMPORTS),
        code(PIPE_DEMO),
        code("""
SIZE = 64 if SMOKE else 256
workdir = tempfile.mkdtemp(prefix='dehazeddpm_')
pairs = {hazy.stem: (hazy, gt) for hazy, gt in haze.make_eval_set(workdir, size=SIZE, seed=0)}
hazy = imageio.load_image(pairs['motorcycle'][0])
out = pipe.stage1(hazy.to(DEVICE))
out = type(out)(*(t.cpu() for t in out))   # Stage1Output(J, coarse, T, A, I), all in [0, 1]
"""),
        code(CHECK + """
lines = [f'{field:6s} {tuple(value.shape)}  in [0, 1]: {bool(value.min() >= 0 and value.max() <= 1)}'
         for field, value in zip(out._fields, out)]
# I is exactly the scattering model applied to the network's own J, T, A:
lines.append(f'I == J*T + A*(1-T): {torch.allclose(out.I, out.J * out.T + out.A * (1 - out.T), atol=1e-6)}')
print('\\n'.join(lines))
"""),
        md("""
## The decomposition

* **J**: the clear image stage 1 hands to the diffusion model (with T) as its condition.
* **coarse**: the first sub-network's clear image; the second sub-network refines it into J.
* **T**: transmission, 1 where the scene is clear, near 0 where haze hides it (far away).
* **A**: one RGB colour for the whole image.
* **re-hazed**: $J T + A(1-T)$; if stage 1 explains the input, it matches the input and the
  error map is dark.
"""),
        code("plotting.show(plotting.plot_stage1(hazy, out))"),
        code("""
err = plotting.rehaze_error(hazy, out.I)
print(f'A = {[round(v, 3) for v in out.A.flatten().tolist()]}, mean T = {out.T.mean():.3f}')
print(f're-hazing error: mean {err.mean():.4f}, 95th percentile {float(torch.tensor(err).quantile(0.95)):.4f}')
"""),
        md(r"""
## Inverting the model by hand

Given T and A, the model can be solved for the clear image: $J_{phys} = (I - A(1-T)) / T$.
Where T is small this divides by almost nothing and amplifies noise, which is one reason
DehazeDDPM does not stop at stage 1 but lets a diffusion model fill in what haze destroyed.
"""),
        code("""
J_phys = ((hazy - out.A * (1 - out.T)) / out.T.clamp(min=0.05)).clamp(0, 1)
gt = imageio.load_image(pairs['motorcycle'][1])
plotting.show(plotting.plot_side_by_side(
    [hazy, J_phys, out.J, gt],
    ['hazy', f'(I - A(1-T)) / T: {metrics.psnr(J_phys, gt):.1f} dB', f'stage-1 J: {metrics.psnr(out.J, gt):.1f} dB',
     'ground truth']))
"""),
        md(r"""
## Stage 1 at its working size

The network sees a fixed number of pixels around each output pixel, but haze varies over a
fraction of the *scene*, whatever the resolution. The demo stage 1 was trained on 128 px crops, so
the pipeline runs it on a copy whose shorter side is 128 px (`stage1_size`, set by the `demo`
registry entry) and brings the result back: T is smooth and is upsampled; J is the upsampled J plus
the hazy image's own fine detail divided by T (under the scattering model, I's detail is T times J's).
`pipe(img, stage1_size=0)` runs stage 1 at full resolution, as the reference does and as the
released weights do by default.

It assumes T varies slowly. Motorcycle's haze follows real depth, with sharp steps at object
edges, and there the working size can lose; rocket and camera are hazed over a smooth depth prior.
"""),
        code("""
print('working size of these weights:', pipe.stage1_size)
for name, (h, g) in pairs.items():
    x, y = imageio.load_image(h), imageio.load_image(g)
    full = pipe.run_stage1(x)[0].cpu()
    sized = pipe.run_stage1(x, size=pipe.stage1_size)[0].cpu()
    print(f'{name:10s} J at {x.shape[-2]} px: {metrics.psnr(full, y):5.2f} dB   '
          f'at {pipe.stage1_size} px, brought back: {metrics.psnr(sized, y):5.2f} dB')
"""),
        md("""
## Inspector

Pick an image and a component. (Without a live kernel, e.g. in a static HTML export, the figure
for the first image is shown instead.)
"""),
        code("""
inspector = widgets.Stage1Inspector({n: imageio.load_image(h) for n, (h, _) in pairs.items()}, pipe.stage1,
                                    device=DEVICE, max_side=SIZE)
inspector.show()
"""),
    ]


# --------------------------------------------------------------------------------------------
# 03 denoising trajectory
# --------------------------------------------------------------------------------------------
def nb03() -> List[nbformat.NotebookNode]:
    name = "03_denoising_trajectory.ipynb"
    return header(name, "Stage 2: watching the diffusion denoise", """
Stage 2 is an SR3 diffusion model conditioned on stage 1's [J, T]. Sampling starts from pure noise
$x_T$ and, step by step, predicts the clean image $x_0$ and moves $x_t$ towards it. Here we record
that trajectory, compare the DDPM (ancestral) and DDIM (deterministic) samplers at several step
counts, and try starting from a noised J instead of pure noise.
""") + [
        code(IMPORTS),
        code(PIPE_DEMO),
        code("""
SIZE = 64 if SMOKE else 256
STEPS = 6 if SMOKE else 50
workdir = tempfile.mkdtemp(prefix='dehazeddpm_')
hazy_path, gt_path = haze.make_eval_set(workdir, size=SIZE, seed=0)[0]
hazy, gt = imageio.load_image(hazy_path), imageio.load_image(gt_path)
"""),
        code(CHECK + """
# Respacing keeps a subset of the training noise levels: these are the timesteps visited.
kept = pipe.schedule.respace(8).timesteps.tolist()
print(f'8 steps kept: {len(kept) == 8} | first sampled step is the noisiest (t = T-1): '
      f'{kept[-1] == len(pipe.schedule) - 1} | last step is t = 0: {kept[0] == 0}')
"""),
        md("## The trajectory"),
        code("""
# start_strength=1.0, eta=0.0: from pure noise, deterministic (the demo entry's default starts
# from J noised to 0.3 and samples with eta 1)
res = pipe(hazy, sampler='ddim', steps=STEPS, start_strength=1.0, eta=0.0, seed=0, trajectory_every=1, progress=False)
print(len(res.trajectory), 'snapshots')
plotting.show(plotting.plot_trajectory(res.trajectory))
"""),
        md("Move the slider through the snapshots: left the noisy $x_t$, right the model's current guess of $x_0$."),
        code("""
viewer = widgets.TrajectoryViewer(res.trajectory)
viewer.show()
"""),
        md("""
## DDPM vs DDIM

Same condition, same seed, different samplers and step counts; DDIM at $\\eta = 0$ (deterministic).
PSNR is against the ground truth of the synthetic hazy image; time is wall clock on this machine.
"""),
        code("""
STEP_COUNTS = [1, 2, 4] if SMOKE else [10, 25, 50, 100]
records = []
for sampler in ('ddpm', 'ddim'):
    for steps in STEP_COUNTS:
        t0 = time.perf_counter()
        r = pipe(hazy, sampler=sampler, steps=steps, start_strength=1.0, eta=0.0, seed=0, progress=False)
        records.append({'sampler': sampler, 'steps': steps, 'seconds': time.perf_counter() - t0,
                        'psnr': metrics.psnr(imageio.load_image(r.image), gt)})
plotting.show(plotting.plot_sampler_comparison(records))
"""),
        code("""
from IPython.display import Markdown, display
display(Markdown(plotting.metrics_table_markdown(records, columns=['sampler', 'steps', 'seconds', 'psnr'], digits=2)))
"""),
        md("""
## Starting from J instead of noise

`start_strength < 1` noises stage 1's J part of the way up the chain and samples only from there
(SDEdit-style): fewer steps, and the result stays closer to J.
"""),
        code("""
strengths = [1.0, 0.5, 0.2]
outs = [pipe(hazy, sampler='ddim', steps=STEPS, seed=0, start_strength=s, progress=False) for s in strengths]
plotting.show(plotting.plot_side_by_side(
    [outs[0].J] + [o.image for o in outs] + [gt],
    ['stage-1 J'] + [f'start {s}: {metrics.psnr(imageio.load_image(o.image), gt):.1f} dB' for s, o in zip(strengths, outs)]
    + ['ground truth']))
"""),
        md("""
## Why DDIM starts from mean-free noise

The UNet normalises its features with GroupNorm, which removes their spatial mean, so the network
hardly sees the per-channel mean of $x_t$. At the top of the chain $x_t$ is almost all noise, and
the noise's own mean (about $1/\\sqrt{HW}$) becomes a colour offset of that size divided by the
signal scale $\\gamma \\approx 0.007$ in the predicted $x_0$. DDIM with $\\eta = 0$ never forgets it;
ancestral sampling washes it out. So by default DDIM draws its start noise without its per-channel
mean (`zero_mean_noise`, `dehazeddpm.samplers.zero_mean`). Below: three seeds with and without it.
"""),
        code("""
SEEDS = [0, 1, 2]
runs = [(zm, s, pipe(hazy, sampler='ddim', steps=STEPS, start_strength=1.0, eta=0.0, seed=s,
                     zero_mean_noise=zm, progress=False))
        for zm in (True, False) for s in SEEDS]
plotting.show(plotting.plot_side_by_side(
    [r.image for _, _, r in runs],
    [f"{'mean-free' if zm else 'plain'} noise, seed {s}\\n{metrics.psnr(imageio.load_image(r.image), gt):.1f} dB"
     for zm, s, r in runs]))
"""),
    ]


# --------------------------------------------------------------------------------------------
# 04 why the reference gives noise
# --------------------------------------------------------------------------------------------
def nb04() -> List[nbformat.NotebookNode]:
    name = "04_why_reference_inference_gives_noise.ipynb"
    return header(name, "Why the reference inference gives noise", """
People running the reference DehazeDDPM test script with the released weights report outputs that
are pure noise. The cause is in how the diffusion weights are loaded: the reference deletes the
input layer's weight `denoise_fn.downs.0.weight` from the state dict (a leftover from adapting
an SR3 checkpoint with a different number of input channels) and then loads with
`load_state_dict(strict=False)`, which silently accepts the missing key. The denoiser then runs
with a **randomly initialised first convolution**: every prediction is garbage and sampling never
leaves the noise. We reproduce this on the bundled demo weights, then show how `dehazeddpm` catches it.
""") + [
        code(IMPORTS),
        code(PIPE_DEMO + """
from dehazeddpm import weights as dw
resolved = dw.resolve('demo')   # local paths of the two weights files
print('denoiser file:', os.path.basename(resolved.denoiser))
"""),
        code("""
SIZE = 64 if SMOKE else 256
STEPS = 4 if SMOKE else 50
workdir = tempfile.mkdtemp(prefix='dehazeddpm_')
hazy_path, gt_path = haze.make_eval_set(workdir, size=SIZE, seed=0)[0]
hazy, gt = imageio.load_image(hazy_path), imageio.load_image(gt_path)
"""),
        md("## 1. What the reference does"),
        code("""
from dehazeddpm.checkpoints import read_checkpoint
ckpt = read_checkpoint(resolved.denoiser)           # the *_gen.pth layout: denoise_fn.* + schedule buffers
ckpt.pop('denoise_fn.downs.0.weight')               # the reference drops the input layer ...
state = {k[len('denoise_fn.'):]: v for k, v in ckpt.items() if k.startswith('denoise_fn.')}
torch.manual_seed(0)
reference_unet = dd.UNet.from_config(pipe.denoiser.config)   # a plain, randomly initialised UNet
report = reference_unet.load_state_dict(state, strict=False)  # ... and loads non-strictly
reference_unet.eval()
"""),
        code(CHECK + """
# strict=False only *reports* the problem, in a return value nobody reads:
print(f'missing keys: {report.missing_keys}\\nunexpected keys: {report.unexpected_keys}')
"""),
        code("""
broken = dd.DehazePipeline(pipe.stage1, reference_unet.to(DEVICE), pipe.schedule, device=DEVICE)
# both from pure noise, as the reference samples
res_bad = broken(hazy, sampler='ddim', steps=STEPS, start_strength=1.0, eta=0.0, seed=0, progress=False)
res_good = pipe(hazy, sampler='ddim', steps=STEPS, start_strength=1.0, eta=0.0, seed=0, progress=False)
p_bad = metrics.psnr(imageio.load_image(res_bad.image), gt)
p_good = metrics.psnr(imageio.load_image(res_good.image), gt)
plotting.show(plotting.plot_side_by_side(
    [hazy, res_bad.image, res_good.image, gt],
    ['hazy input', f'reference loading: {p_bad:.1f} dB', f'strict loading: {p_good:.1f} dB', 'ground truth']))
"""),
        md("""
## 2. What `dehazeddpm` does instead

Every load is strict. Handing the same state dict to `load_denoiser` raises a `CheckpointError`
that names the missing key, instead of sampling noise.
"""),
        code("""
try:
    dd.load_denoiser(ckpt)
    err = None
except dd.CheckpointError as exc:
    err = exc
    print('CheckpointError:', exc)
"""),
        code(CHECK + """
print(type(err).__name__, '| names the missing key:', 'downs.0.weight' in str(err))
"""),
        md("""
## 3. netG vs netH: which file is which

The reference code and its files use confusing names. In DehazeDDPM's own code **netG** is the
diffusion model and **netH** is stage 1, but the stage-1 *file* is called `..._net_g_...` because it
was trained with BasicSR, where `net_g` means "generator". Loading one as the other is the second
common way to get noise or a crash.

| reference name | what it is | released file | in `dehazeddpm` |
|---|---|---|---|
| `netH` | stage 1, `MPRfusion`: predicts J, T, A | `NH_net_g_80000.pth`, `DENSE_net_g_120000.pth` (note: *net_g*) | `Stage1Net`, `load_stage1` |
| `netG` | the diffusion model, `GaussianDiffusion` wrapping the SR3 UNet `denoise_fn` | `NH_I230000_E4600_gen.pth`, `DENSE_I130000_E2600_gen.pth` | `UNet` + `NoiseSchedule`, `load_denoiser`, `load_schedule` |

`dehazeddpm` recognises each layout and says so when they are swapped:
"""),
        code("""
for loader, path in ((dd.load_denoiser, resolved.stage1), (dd.load_stage1, resolved.denoiser)):
    try:
        loader(path)
    except dd.CheckpointError as exc:
        print(f'{loader.__name__}({os.path.basename(path)}): {exc}')
"""),
    ]


# --------------------------------------------------------------------------------------------
# 05 evaluate
# --------------------------------------------------------------------------------------------
def nb05() -> List[nbformat.NotebookNode]:
    name = "05_evaluate.ipynb"
    return header(name, "Evaluate: PSNR and SSIM over a folder", """
Dehaze every image of a folder with `hazy/` and `gt/` subfolders (matching file names) and score
the results against the ground truth. By default the folder is the bundled synthetic evaluation set;
set `DATA_DIR` to your own (e.g. NH-HAZE or Dense-Haze on Google Drive) to evaluate on it.
""") + [
        code(IMPORTS),
        code("""
WEIGHTS = 'nh-haze' if (info['device'] == 'cuda' and not SMOKE and not info['offline']) else 'demo'
try:
    pipe = dd.DehazePipeline.from_pretrained(WEIGHTS, device=DEVICE)
except Exception as exc:  # no network: fall back to the bundled weights
    print(f'could not load {WEIGHTS!r} ({exc}); using the bundled demo weights')
    WEIGHTS = 'demo'
    pipe = dd.DehazePipeline.from_pretrained(WEIGHTS, device=DEVICE)
SIZE = 64 if SMOKE else 256
STEPS = 3 if SMOKE else info['steps']
DATA_DIR = None   # a folder with hazy/ and gt/ subfolders; None: the bundled set
"""),
        code("""
from pathlib import Path
if DATA_DIR is None:
    DATA_DIR = tempfile.mkdtemp(prefix='dehazeddpm_eval_')
    haze.make_eval_set(DATA_DIR, size=SIZE, seed=0)
gt_by_stem = {p.stem: p for p in sorted(Path(DATA_DIR, 'gt').iterdir()) if imageio.is_image_file(p)}
pairs = [(p, gt_by_stem[p.stem]) for p in sorted(Path(DATA_DIR, 'hazy').iterdir())
         if imageio.is_image_file(p) and p.stem in gt_by_stem]
print(len(pairs), 'pairs in', DATA_DIR)
"""),
        code(CHECK + """
# The bundled set is deterministic: same files, sizes and haze every run.
lines = []
for hazy_path, gt_path in pairs:
    h, g = imageio.load_image(hazy_path), imageio.load_image(gt_path)
    lines.append(f'{hazy_path.name:16s} {Image.open(hazy_path).size}  hazy PSNR {metrics.psnr(h, g):.2f} dB')
print('\\n'.join(lines))
"""),
        code("""
rows, items = [], {}
for hazy_path, gt_path in pairs:
    hazy, gt = imageio.load_image(hazy_path), imageio.load_image(gt_path)
    t0 = time.perf_counter()
    res = pipe(hazy, sampler='ddim', steps=STEPS, seed=0, progress=False)
    seconds = time.perf_counter() - t0
    out = imageio.load_image(res.image)
    J = res.J.cpu()
    rows.append({'name': hazy_path.stem,
                 'psnr_hazy': metrics.psnr(hazy, gt), 'psnr_stage1': metrics.psnr(J, gt), 'psnr_dehazed': metrics.psnr(out, gt),
                 'ssim_hazy': metrics.ssim(hazy, gt), 'ssim_stage1': metrics.ssim(J, gt), 'ssim_dehazed': metrics.ssim(out, gt),
                 'seconds': seconds})
    items[hazy_path.stem] = {'hazy': hazy, 'dehazed': res.image, 'gt': gt,
                             'PSNR (dB)': rows[-1]['psnr_dehazed'], 'SSIM': rows[-1]['ssim_dehazed']}
"""),
        md("## Results"),
        code("""
from IPython.display import Markdown, display
cols = [k for k in rows[0]]
mean = {'name': '**mean**', **{k: sum(r[k] for r in rows) / len(rows) for k in cols if k != 'name'}}
display(Markdown(f'Weights `{WEIGHTS}`, {STEPS} DDIM steps.\\n\\n' + plotting.metrics_table_markdown(rows + [mean], columns=cols)))
"""),
        code("plotting.show(plotting.plot_metrics_bar(rows, groups=('hazy', 'stage1', 'dehazed')))"),
        md("## Per image"),
        code("""
viewer = widgets.PairViewer(items)
viewer.show()
"""),
    ]


NOTEBOOKS = {
    "01_quickstart.ipynb": nb01,
    "02_stage1_physics.ipynb": nb02,
    "03_denoising_trajectory.ipynb": nb03,
    "04_why_reference_inference_gives_noise.ipynb": nb04,
    "05_evaluate.ipynb": nb05,
}


def build(name: str) -> nbformat.NotebookNode:
    """The clean notebook ``name``: deterministic cell ids, no outputs, no execution counts."""
    cells = NOTEBOOKS[name]()
    stem = name.split("_")[0]
    for i, cell in enumerate(cells):
        cell["id"] = f"nb{stem}-c{i:02d}"  # stable ids so rebuilding changes nothing
    nb = new_notebook(cells=cells, metadata={
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
        "colab": {"provenance": [], "toc_visible": True},
        "accelerator": "GPU",
    })
    return nb


def _is_check(cell: nbformat.NotebookNode) -> bool:
    return cell.cell_type == "code" and cell.source.lstrip().startswith(CHECK)


def _clean_outputs(outputs: List[nbformat.NotebookNode]) -> List[nbformat.NotebookNode]:
    kept = []
    for out in outputs:
        out = nbformat.from_dict(dict(out))
        if out.output_type == "execute_result":
            out["execution_count"] = None
        if out.output_type in ("stream", "execute_result"):
            kept.append(out)
    return kept


def _execute(nb: nbformat.NotebookNode, timeout: int = 600) -> nbformat.NotebookNode:
    from nbclient import NotebookClient

    env_ci = os.environ.get("CI")
    os.environ["CI"] = "1"
    try:
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                resources={"metadata": {"path": str(HERE)}})
        return client.execute()
    finally:
        if env_ci is None:
            os.environ.pop("CI", None)
        else:
            os.environ["CI"] = env_ci


def main(argv: List[str] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", action="store_true", help="execute and store NBVAL_CHECK_OUTPUT outputs")
    ap.add_argument("names", nargs="*", help="notebooks to build (default: all)")
    args = ap.parse_args(argv)
    for name in args.names or list(NOTEBOOKS):
        path = HERE / name
        nb = build(name)
        stored: Dict[str, list] = {}
        if args.store:
            executed = _execute(build(name))
            stored = {c["id"]: _clean_outputs(c.outputs) for c in executed.cells if _is_check(c)}
        elif path.is_file():  # keep what an earlier --store recorded, if the cell is unchanged
            old = nbformat.read(path, as_version=4)
            stored = {c["id"]: c.get("outputs", []) for c in old.cells
                      if _is_check(c) and any(c.source == n.source for n in nb.cells if n["id"] == c["id"])}
        count = 0
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.outputs = stored.get(cell["id"], []) if _is_check(cell) else []
                # nbval refuses stored outputs without an execution count ("unrun reference
                # cell"), so exactly the checked cells with outputs get one.
                if cell.outputs:
                    count += 1
                cell.execution_count = count if cell.outputs else None
        nbformat.validate(nb)
        nbformat.write(nb, path)
        print(f"wrote {path.relative_to(HERE.parent)}" + (f" ({sum(map(len, stored.values()))} stored outputs)" if stored else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
