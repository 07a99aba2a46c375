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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/dehazeddpm/dehazeddpm/blob/main/notebooks/03_denoising_trajectory.ipynb)
#
# # Stage 2: watching the diffusion denoise
#
# Stage 2 is an SR3 diffusion model conditioned on stage 1's [J, T]. Sampling starts from pure noise
# $x_T$ and, step by step, predicts the clean image $x_0$ and moves $x_t$ towards it. Here we record
# that trajectory, compare the DDPM (ancestral) and DDIM (deterministic) samplers at several step
# counts, and try starting from a noised J instead of pure noise.

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
import time

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
print(pipe.schedule)

# %%
SIZE = 64 if SMOKE else 256
STEPS = 6 if SMOKE else 50
workdir = session.scratch('pairs')
hazy_path, gt_path = make_eval_set(workdir, size=SIZE, seed=0)[0]
hazy, gt = load_image(hazy_path), load_image(gt_path)

# %%
# NBVAL_CHECK_OUTPUT
# Respacing keeps a subset of the training noise levels: these are the timesteps visited.
kept = pipe.schedule.respace(8).timesteps.tolist()
print(f'8 steps kept: {len(kept) == 8} | first sampled step is the noisiest (t = T-1): '
      f'{kept[-1] == len(pipe.schedule) - 1} | last step is t = 0: {kept[0] == 0}')

# %% [markdown]
# ## The trajectory

# %%
# start_strength=1.0, eta=0.0: from pure noise, deterministic (the demo entry's default starts
# from J noised to 0.3 and samples 20 steps with eta 1, of which it runs the 6 below 0.3, and
# averages 2 samples; a call that sets its own steps draws one unless it asks for more)
res = pipe(hazy, sampler='ddim', steps=STEPS, start_strength=1.0, eta=0.0, seed=0, trajectory_every=1, progress=False)
print(f'{res.describe()}; {len(res.trajectory)} snapshots')
plotting.show(plotting.plot_trajectory(res.trajectory))

# %% [markdown]
# Move the slider through the snapshots: left the noisy $x_t$, right the model's current guess of $x_0$.
# (The picture is an ordinary output: it stays when the notebook is saved and reopened.)

# %%
viewer = widgets.TrajectoryViewer(res.trajectory)
viewer.show()

# %% [markdown]
# ## DDPM vs DDIM
#
# Same condition, same seed, different samplers and step counts; DDIM at $\eta = 0$ (deterministic).
# PSNR is against the ground truth of the synthetic hazy image; time is wall clock on this machine
# (in smoke mode the images are tiny and the times are mostly overhead: they say nothing there).

# %%
STEP_COUNTS = [1, 2, 4] if SMOKE else [10, 25, 50, 100]
records = []
for sampler, extra in (('ddpm', {}), ('ddim', {'eta': 0.0})):   # eta is DDIM's own option
    for steps in STEP_COUNTS:
        t0 = time.perf_counter()
        r = pipe(hazy, sampler=sampler, steps=steps, start_strength=1.0, seed=0, progress=False, **extra)
        records.append({'sampler': sampler, 'steps': r.options.steps, 'evaluations': r.evaluations,
                        'seconds': time.perf_counter() - t0, 'psnr': metrics.psnr(load_image(r.image), gt)})
plotting.show(plotting.plot_sampler_comparison(records))

# %%
from IPython.display import Markdown, display
display(Markdown(plotting.metrics_table_markdown(records, columns=['sampler', 'steps', 'evaluations', 'seconds', 'psnr'],
                                                 digits=2)))

# %% [markdown]
# ## Starting from J instead of noise
#
# `start_strength < 1` noises stage 1's J part of the way up the chain and samples only from there
# (SDEdit-style): fewer steps, and the result stays closer to J.

# %%
strengths = [1.0, 0.5, 0.2]
outs = [pipe(hazy, sampler='ddim', steps=STEPS, seed=0, start_strength=s, progress=False) for s in strengths]
plotting.show(plotting.plot_side_by_side(
    [outs[0].J] + [o.image for o in outs] + [gt],
    [f'stage-1 J\n{metrics.psnr(outs[0].J, gt):.1f} dB']
    + [f'start {s} ({o.evaluations} evals)\n{metrics.psnr(load_image(o.image), gt):.1f} dB' for s, o in zip(strengths, outs)]
    + ['ground truth\n']))

# %%
from IPython.display import Markdown, display
best = max(outs, key=lambda o: metrics.psnr(load_image(o.image), gt))
display(Markdown(plotting.stage2_verdict(choice.name, metrics.psnr(best.J, gt), metrics.psnr(load_image(best.image), gt),
                                         metrics.ssim(best.J, gt), metrics.ssim(load_image(best.image), gt))
                 + f' (The best of the three starts: {best.describe()}.)'))

# %% [markdown]
# ## The mean of several samples, and where they disagree
#
# Each run above is one sample. `samples=K` draws K in one batch (about K times one sample's time on
# a CPU): their mean estimates the posterior mean, which is what PSNR rewards, and their spread shows
# where the model is unsure. The table says whether averaging pays for these weights.

# %%
mean_runs = {k: pipe(hazy, seed=0, samples=k, progress=False) for k in (1, 2, 4)}
display(Markdown(plotting.metrics_table_markdown(
    [{'samples': k, 'seconds': r.timings['total'], 'psnr': metrics.psnr(load_image(r.image), gt),
      'ssim': metrics.ssim(load_image(r.image), gt)} for k, r in mean_runs.items()]
    + [{'samples': 'J', 'seconds': None, 'psnr': metrics.psnr(best.J, gt), 'ssim': metrics.ssim(best.J, gt)}],
    columns=['samples', 'seconds', 'psnr', 'ssim'], digits=3)))
plotting.show(plotting.plot_spread(mean_runs[4]))

# %% [markdown]
# ## Why DDIM starts from mean-free noise
#
# The UNet normalises its features with GroupNorm, which removes their spatial mean, so the network
# hardly sees the per-channel mean of $x_t$. At the top of the chain $x_t$ is almost all noise, and
# the noise's own mean (about $1/\sqrt{HW}$) becomes a colour offset of that size divided by the
# signal scale $\gamma \approx 0.007$ in the predicted $x_0$. DDIM with $\eta = 0$ never forgets it;
# ancestral sampling washes it out. So by default DDIM draws its start noise without its per-channel
# mean (`zero_mean_noise`, `dehazeddpm.diffusion.zero_mean`). Below: three seeds with and without it.

# %%
SEEDS = [0, 1, 2]
runs = [(zm, s, pipe(hazy, sampler='ddim', steps=STEPS, start_strength=1.0, eta=0.0, seed=s,
                     zero_mean_noise=zm, progress=False))
        for zm in (True, False) for s in SEEDS]
plotting.show(plotting.plot_side_by_side(
    [r.image for _, _, r in runs],
    [f"{'mean-free' if zm else 'plain'}, seed {s}\n{metrics.psnr(load_image(r.image), gt):.1f} dB"
     for zm, s, r in runs], max_columns=3))
