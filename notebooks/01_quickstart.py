# ---
# jupyter:
#   accelerator: GPU
#   colab:
#     provenance: []
#     toc_visible: true
#   jupytext:
#     formats: ipynb,py:percent
#     notebook_metadata_filter: accelerator,colab
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/dehazeddpm/dehazeddpm/blob/main/notebooks/01_quickstart.ipynb)
#
# # Quickstart: dehaze one image
#
# DehazeDDPM (Yu et al., [arXiv 2308.11949](https://arxiv.org/abs/2308.11949)) dehazes in two stages:
# a physics-aware network (stage 1) estimates the clear image **J**, the transmission **T** and the
# airlight **A**; a conditional diffusion model (stage 2) then refines J into a sharp, haze-free image.
#
# This notebook picks weights, loads an image (yours on Colab, or a bundled one), dehazes it and
# shows the result. Run it top to bottom.

# %%
# NBVAL_SKIP
# On Colab: fetch the repository and install it (locally the package is installed already).
import os, subprocess, sys
if 'google.colab' in sys.modules:
    if not os.path.isdir('/content/dehazeddpm'):
        subprocess.run(['git', 'clone', '-q', 'https://github.com/dehazeddpm/dehazeddpm', '/content/dehazeddpm'],
                       check=True)
    os.chdir('/content/dehazeddpm/notebooks')
    sys.path.insert(0, '/content/dehazeddpm')
    import colab_setup   # installs the package (never torch) and turns on Colab's widget manager
    colab_setup.setup()

# %% [markdown]
# ## 1. Weights
#
# `dd.notebook_session` picks the weights by one rule in every notebook (`dd.choose_weights`) and says in
# one line what it chose and why:
# your own checkpoint files if you give them, else the weights you name, else the paper's released
# weights (`nh-haze`, `dense-haze`) when they are in the cache or this is a GPU that can download
# them, else the small `demo` weights bundled with the package (offline, on a CPU, in smoke mode).
# The demo weights run in seconds on a CPU but are **not** the paper's model. On Colab the fields
# below are a form: pick the weights from the drop-down, or paste the paths of your own files.

# %%
import os
import sys

from PIL import Image

import dehazeddpm as dd
from dehazeddpm import metrics
from dehazeddpm.data import make_eval_set, real_haze_photos
from dehazeddpm.io import load_image
from dehazeddpm.viz import plotting, widgets

# %%
WEIGHTS = 'auto'     # @param ["auto", "demo", "nh-haze", "dense-haze"]
STAGE1_FILE = ''     # @param {type:"string"}
DENOISER_FILE = ''   # @param {type:"string"}
session = dd.notebook_session(WEIGHTS, STAGE1_FILE, DENOISER_FILE)   # prints the device and the choice
choice, pipe, SMOKE = session.choice, session.pipe, session.smoke
SIZE = 64 if SMOKE else 384   # shorter side of the bundled images, in pixels

# %% [markdown]
# ## 2. An image
#
# The bundled evaluation images are photos from scikit-image with synthetic haze (and their clear
# ground truth). Two photos of real distance haze come with the package too (CC BY 4.0, credited
# in `dehazeddpm/assets/real_haze/`): no ground truth exists for them, so the scores are skipped.
# On Colab the next-but-one cell lets you upload your own photo instead.

# %%
workdir = session.scratch('pairs')
pairs = {hazy.stem: (hazy, gt) for hazy, gt in make_eval_set(workdir, size=SIZE, seed=0)}
pairs.update({name: (path, None) for name, path in real_haze_photos().items()})
print('bundled images:', list(pairs))
IMAGE = 'motorcycle'   # @param ["motorcycle", "rocket", "camera", "aitzgorri", "sunset"]
hazy_path, gt_path = pairs[IMAGE]

# %%
# NBVAL_SKIP
# Colab only: upload a hazy photo of your own (cancel the dialog to keep the bundled one).
if 'google.colab' in sys.modules:
    from google.colab import files
    uploaded = files.upload()
    if uploaded:
        fname, data = next(iter(uploaded.items()))
        hazy_path, gt_path = os.path.join(workdir, fname), None
        with open(hazy_path, 'wb') as f:
            f.write(data)

# %% [markdown]
# ## 3. Dehaze
#
# One call with the weights' own defaults. `res.options` records what actually ran (sampler,
# evaluations, start, precision, tiles) and `res.describe()` says it in one line.

# %%
hazy = load_image(hazy_path)
res = pipe(hazy, seed=0, progress=False)
print(res.describe())

# %%
# NBVAL_CHECK_OUTPUT
# The result has the input's size; J and T are the stage-1 estimates the diffusion was conditioned on.
print(f'output size == input size: {res.image.size == Image.open(hazy_path).size}\n'
      f'J {tuple(res.J.shape)} | T {tuple(res.T.shape)} | A {tuple(res.A.shape)}')

# %%
images, titles = [hazy, res.J, res.image], ['hazy input', 'stage 1: J', f'{choice.name}: {res.evaluations} evaluations']
if gt_path is not None:
    gt = load_image(gt_path)
    images.append(gt)
    titles.append('ground truth')
    titles[1] += f'\n{metrics.psnr(res.J, gt):.2f} dB'
    titles[2] += f'\n{metrics.psnr(load_image(res.image), gt):.2f} dB'
    titles[0] += f'\n{metrics.psnr(hazy, gt):.2f} dB'
plotting.show(plotting.plot_side_by_side(images, titles))

# %%
if gt_path is not None:
    from IPython.display import Markdown, display
    out01 = load_image(res.image)
    display(Markdown(plotting.stage2_verdict(choice.name, metrics.psnr(res.J, gt), metrics.psnr(out01, gt),
                                             metrics.ssim(res.J, gt), metrics.ssim(out01, gt))))

# %% [markdown]
# ### How sure is the diffusion stage?
#
# A diffusion sample is one draw of the clear image given J and T. `samples=K` draws K of them in one
# batch: the image is their mean (an estimate of the posterior mean, what PSNR rewards) and
# `res.spread` their per-pixel standard deviation, high where the model is unsure (thick haze, lost
# detail). Beside T you can see whether the doubt sits where the haze was. (The demo's default
# averages 2 samples of its chain, Rule S3 in `docs/benchmarks.md`; each further sample costs about
# one more sample's time.)

# %%
res_k = pipe(hazy, seed=0, samples=4, progress=False)
print(res_k.describe())
plotting.show(plotting.plot_spread(res_k))

# %% [markdown]
# Drag the slider to wipe between the input and the result.

# %%
slider = widgets.BeforeAfterSlider(hazy, res.image, labels=('hazy', 'dehazed'))
slider.show()

# %% [markdown]
# ## 4. Save / download

# %%
out_path = session.keep('dehazeddpm_dehazed.png')
res.image.save(out_path)
print('saved', out_path)

# %%
# NBVAL_SKIP
if 'google.colab' in sys.modules:
    from google.colab import files
    files.download(out_path)
