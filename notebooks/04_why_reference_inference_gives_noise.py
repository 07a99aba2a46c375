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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/dehazeddpm/dehazeddpm/blob/main/notebooks/04_why_reference_inference_gives_noise.ipynb)
#
# # Why the reference inference gives noise
#
# People running the reference DehazeDDPM test script with the released weights report outputs that
# are pure noise. The cause is in how the diffusion weights are loaded: the reference deletes the
# input layer's weight `denoise_fn.downs.0.weight` from the state dict (a leftover from adapting
# an SR3 checkpoint with a different number of input channels) and then loads with
# `load_state_dict(strict=False)`, which silently accepts the missing key. The denoiser then runs
# with a **randomly initialised first convolution**: every prediction is garbage and sampling never
# leaves the noise. We replay that load on the released checkpoint when it is here (a GPU runtime
# downloads it; any machine with it in the cache uses it), on the bundled demo weights otherwise
# (same file layout, same failure), then show how `dehazeddpm` catches it and how to tell which
# stage failed.

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
from dehazeddpm.viz import plotting

# %% [markdown]
# ## Weights
#
# The same rule as every notebook (`dd.notebook_session`); here the released weights are the point.

# %%
WEIGHTS = 'auto'     # @param ["auto", "demo", "nh-haze", "dense-haze"]
STAGE1_FILE = ''     # @param {type:"string"}
DENOISER_FILE = ''   # @param {type:"string"}
session = dd.notebook_session(WEIGHTS, STAGE1_FILE, DENOISER_FILE)   # prints the device and the choice
choice, pipe, SMOKE = session.choice, session.pipe, session.smoke
print('stage-1 file: ', choice.stage1_file.name)
print('denoiser file:', choice.denoiser_file.name)
if not choice.released:
    print('No released checkpoint here, so the reference load is replayed on these weights: the '
          'mechanism (and the noise) is the same.')

# %%
SIZE = 64 if SMOKE else 256
STEPS = 4 if SMOKE else 20
workdir = session.scratch('pairs')
hazy_path, gt_path = make_eval_set(workdir, size=SIZE, seed=0)[0]
hazy, gt = load_image(hazy_path), load_image(gt_path)

# %% [markdown]
# ## 1. What the reference does
#
# The reference's `load_network` reads the `*_gen.pth` file, deletes `denoise_fn.downs.0.weight` and
# calls `load_state_dict(..., strict=False)`. The same three steps on the file chosen above:

# %%
ckpt = dd.read_checkpoint(choice.denoiser_file)     # the *_gen.pth layout: denoise_fn.* + schedule buffers
ckpt.pop('denoise_fn.downs.0.weight')               # the reference drops the input layer ...
state = {k[len('denoise_fn.'):]: v for k, v in ckpt.items() if k.startswith('denoise_fn.')}
torch.manual_seed(0)
reference_unet = dd.UNet.from_config(pipe.denoiser.config)   # a plain, randomly initialised UNet
report = reference_unet.load_state_dict(state, strict=False)  # ... and loads non-strictly
_ = reference_unet.eval()

# %%
# NBVAL_CHECK_OUTPUT
# strict=False only *reports* the problem, in a return value nobody reads:
print(f'missing keys: {report.missing_keys}\nunexpected keys: {report.unexpected_keys}')

# %% [markdown]
# Both denoisers below sample from pure noise (as the reference does, though with DDIM instead of
# its 2000 ancestral steps) with the same stage 1, seed and steps; only the loading differs.

# %%
broken = dd.DehazePipeline(pipe.stage1, reference_unet.to(pipe.device), pipe.schedule, device=pipe.device)
res_bad = broken(hazy, sampler='ddim', steps=STEPS, start_strength=1.0, eta=0.0, seed=0, progress=False)
res_good = pipe(hazy, sampler='ddim', steps=STEPS, start_strength=1.0, eta=0.0, seed=0, progress=False)
p_bad = metrics.psnr(load_image(res_bad.image), gt)
p_good = metrics.psnr(load_image(res_good.image), gt)
print('both ran:', res_good.describe())
plotting.show(plotting.plot_side_by_side(
    [hazy, res_bad.image, res_good.image, gt],
    [f'hazy input\n{metrics.psnr(hazy, gt):.1f} dB', f'reference loading\n{p_bad:.1f} dB',
     f'strict loading\n{p_good:.1f} dB', 'ground truth\n']))

# %% [markdown]
# ## 2. What `dehazeddpm` does instead
#
# Every load is strict. Handing the same state dict to `load_denoiser` raises a `CheckpointError`
# that names the missing key, instead of sampling noise.

# %%
try:
    dd.load_denoiser(ckpt)
    err = None
except dd.CheckpointError as exc:
    err = exc
    print('CheckpointError:', exc)

# %%
# NBVAL_CHECK_OUTPUT
print(type(err).__name__, '| names the missing key:', 'downs.0.weight' in str(err))

# %% [markdown]
# ## 3. Which stage failed?
#
# Users of the reference code had to save J and T by hand to find out. Here every result carries
# stage 1's J, T and A, so one look tells: if J and T look sensible (they do below: stage 1 loaded
# fine) and only the final image is noise, the denoiser is at fault; if J is already wrong, stage 1
# is. `widgets.Stage1Inspector` (notebook 02) shows the same for any image.

# %%
plotting.show(plotting.plot_side_by_side(
    [res_bad.J, res_bad.T, res_bad.image],
    [f'stage 1: J ({metrics.psnr(res_bad.J, gt):.1f} dB)', f'stage 1: T (mean {float(res_bad.T.mean()):.2f})',
     f'stage 2, reference load ({p_bad:.1f} dB)'], max_columns=3))

# %% [markdown]
# ## 4. netG vs netH: which file is which
#
# The reference code and its files use confusing names. In DehazeDDPM's own code **netG** is the
# diffusion model and **netH** is stage 1, but the stage-1 *file* is called `..._net_g_...` because it
# was trained with BasicSR, where `net_g` means "generator". Loading one as the other is the second
# common way to get noise or a crash.
#
# | reference name | what it is | released file | in `dehazeddpm` |
# |---|---|---|---|
# | `netH` | stage 1, `MPRfusion`: predicts J, T, A | `NH_net_g_80000.pth`, `DENSE_net_g_120000.pth` (note: *net_g*) | `Stage1Net`, `load_stage1` |
# | `netG` | the diffusion model, `GaussianDiffusion` wrapping the SR3 UNet `denoise_fn` | `NH_I230000_E4600_gen.pth`, `DENSE_I130000_E2600_gen.pth` | `UNet` + `NoiseSchedule`, `load_denoiser`, `load_schedule` |
#
# `dehazeddpm` recognises each layout and says so when they are swapped:

# %%
for loader, path in ((dd.load_denoiser, choice.stage1_file), (dd.load_stage1, choice.denoiser_file)):
    try:
        loader(path)
    except dd.CheckpointError as exc:
        print(f'{loader.__name__}({path.name}): {exc}')
