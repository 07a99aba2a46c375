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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/dehazeddpm/dehazeddpm/blob/main/notebooks/02_stage1_physics.ipynb)
#
# # Stage 1: the physics of haze
#
# Haze follows the atmospheric scattering model
#
# $$I(x) = J(x)\,t(x) + A\,\bigl(1 - t(x)\bigr),$$
#
# where $I$ is the hazy image, $J$ the clear scene, $t \in [0, 1]$ the transmission (the fraction of
# scene light that reaches the camera; $t = e^{-\beta d}$ for scattering $\beta$ and depth $d$) and $A$
# the global airlight (the colour of the haze). Stage 1 of DehazeDDPM (`Stage1Net`, the reference's
# *netH*) predicts $J$, $T$ and $A$ and re-composes $I$ from them, which is how it is trained to be
# physically consistent. Here we look at those outputs, on the weights the next cells choose.

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

# %%

import torch

import dehazeddpm as dd
from dehazeddpm import metrics
from dehazeddpm.data import make_eval_set
from dehazeddpm.io import load_image
from dehazeddpm.viz import plotting, widgets

# %% [markdown]
# ## Weights
#
# The same rule as every notebook (`dd.notebook_session`): your files, else the weights you name, else
# the released weights when they are cached or downloadable on a GPU, else the bundled demo.

# %%
WEIGHTS = 'auto'     # @param ["auto", "demo", "nh-haze", "dense-haze"]
STAGE1_FILE = ''     # @param {type:"string"}
DENOISER_FILE = ''   # @param {type:"string"}
session = dd.notebook_session(WEIGHTS, STAGE1_FILE, DENOISER_FILE)   # prints the device and the choice
choice, pipe, SMOKE = session.choice, session.pipe, session.smoke
# Stage 1 exactly as the pipeline runs it for these weights (`pipe.stage1_as_called`): at their
# working size (the demo's 128 px) or at full resolution (the released weights, as the reference
# does), and, for the demo, with J's detail finer than 3 px taken from the input divided by T
# (`stage1_detail`). `pipe.stage1_as_called(x, stage1_flip=True)` would average its answers for the
# image and its mirror image, an option the demo does not take by default (Rule W5b).
WORKING_SIZE, DETAIL = pipe.defaults.stage1_size, pipe.defaults.stage1_detail or 0
def stage1(x):
    return pipe.stage1_as_called(x)
print('stage 1 runs at', f'{WORKING_SIZE} px (shorter side)' if WORKING_SIZE else 'full resolution',
      f'| J\'s detail finer than {DETAIL} px from the input' if DETAIL else '| J as stage 1 made it',
      *(['| averaged with its mirror image'] if pipe.defaults.stage1_flip else []))

# %%
SIZE = 64 if SMOKE else 256
workdir = session.scratch('pairs')
pairs = {hazy.stem: (hazy, gt) for hazy, gt in make_eval_set(workdir, size=SIZE, seed=0)}
hazy = load_image(pairs['motorcycle'][0])
out = stage1(hazy)
out = type(out)(*(t.cpu() for t in out))   # Stage1Output(J, coarse, T, A, I), all in [0, 1]

# %%
# NBVAL_CHECK_OUTPUT
lines = [f'{field:6s} {tuple(value.shape)}  in [0, 1]: {bool(value.min() >= 0 and value.max() <= 1)}'
         for field, value in zip(out._fields, out)]
# I is exactly the scattering model applied to the network's own J, T, A:
lines.append(f'I == J*T + A*(1-T): {torch.allclose(out.I, out.J * out.T + out.A * (1 - out.T), atol=1e-6)}')
print('\n'.join(lines))

# %% [markdown]
# ## The decomposition
#
# * **J**: the clear image stage 1 hands to the diffusion model (with T) as its condition.
# * **coarse**: the first sub-network's clear image; the second sub-network refines it into J.
# * **T**: transmission, 1 where the scene is clear, near 0 where haze hides it (far away).
# * **A**: one RGB colour for the whole image.
# * **re-hazed**: $J T + A(1-T)$; if stage 1 explains the input, it matches the input and the
#   error map is dark.

# %%
plotting.show(plotting.plot_stage1(hazy, out))

# %%
err = plotting.rehaze_error(hazy, out.I)
print(f'A = {[round(v, 3) for v in out.A.flatten().tolist()]}, mean T = {out.T.mean():.3f}')
print(f're-hazing error: mean {err.mean():.4f}, 95th percentile {float(torch.tensor(err).quantile(0.95)):.4f}')

# %% [markdown]
# ## Inverting the model by hand
#
# Given T and A, the model can be solved for the clear image: $J_{phys} = (I - A(1-T)) / T$.
# Where T is small this divides by almost nothing and amplifies noise, which is one reason
# DehazeDDPM does not stop at stage 1 but lets a diffusion model fill in what haze destroyed.

# %%
J_phys = ((hazy - out.A * (1 - out.T)) / out.T.clamp(min=0.05)).clamp(0, 1)
gt = load_image(pairs['motorcycle'][1])
plotting.show(plotting.plot_side_by_side(
    [hazy, J_phys, out.J, gt],
    ['hazy', f'(I - A(1-T)) / T: {metrics.psnr(J_phys, gt):.1f} dB', f'stage-1 J: {metrics.psnr(out.J, gt):.1f} dB',
     'ground truth']))

# %% [markdown]
# ## Stage 1 at its working size
#
# The network sees a fixed number of pixels around each output pixel, but haze varies over a
# fraction of the *scene*, whatever the resolution. The demo stage 1 was trained on 128 px crops, so
# the pipeline runs it on a copy whose shorter side is 128 px (`stage1_size`, set by the `demo`
# registry entry's defaults) and brings the result back: T is smooth and is upsampled; J is the upsampled J plus
# the hazy image's own fine detail divided by T (under the scattering model, I's detail is T times J's).
# `pipe(img, stage1_size=0)` runs stage 1 at full resolution, as the reference does and as the
# released weights do by default.
#
# It assumes T varies slowly. Motorcycle's haze follows real depth, with sharp steps at object
# edges, and there the working size can lose; rocket and camera are hazed over a smooth depth prior.

# %%
if WORKING_SIZE:
    for name, (h, g) in pairs.items():
        x, y = load_image(h), load_image(g)
        full = pipe.stage1_as_called(x, stage1_size=0).J.cpu()
        sized = stage1(x).J.cpu()
        print(f'{name:10s} J at {x.shape[-2]} px: {metrics.psnr(full, y):5.2f} dB   '
              f'at {WORKING_SIZE} px, brought back: {metrics.psnr(sized, y):5.2f} dB')
else:
    print(f'{choice.name} runs stage 1 at full resolution: nothing to compare')

# %% [markdown]
# ## Inspector
#
# Pick an image and a component. It runs stage 1 the way the cells above do (same function, same
# working size), so its A and mean T for the motorcycle are the ones printed above. The picture is
# an ordinary output: it stays when the notebook is saved and reopened.

# %%
inspector = widgets.Stage1Inspector({n: load_image(h) for n, (h, _) in pairs.items()}, stage1)
inspector.show()
