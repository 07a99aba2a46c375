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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/dehazeddpm/dehazeddpm/blob/main/notebooks/05_evaluate.ipynb)
#
# # Evaluate: the papers' datasets and metrics
#
# Dehaze the standard test split of a public benchmark (`DATASET` and `ROOT`, the folder it unpacks
# to, e.g. on Google Drive: NH-HAZE and Dense-Haze images 51-55, O-HAZE 41-45, I-HAZE 31-35, RESIDE
# SOTS and HSTS), or a folder with `hazy/` and `gt/` subfolders (`DATA_DIR`), and score stage 1's J
# and the final image against the ground truth: PSNR, SSIM, CIEDE2000, LPIPS when its weights are
# installed, and a no-reference haze measure. By default the data is the bundled synthetic set.
# `dehazeddpm eval --dataset NAME --root DIR` gives the same numbers from the command line.

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

from PIL import Image

import dehazeddpm as dd
from dehazeddpm import evaluation, metrics
from dehazeddpm.data import make_eval_set
from dehazeddpm.io import load_image
from dehazeddpm.viz import plotting, widgets

# %% [markdown]
# ## Weights and data
#
# The same rule as every notebook (`dd.notebook_session`): your files, else the weights you name, else
# the released weights when they are cached or downloadable on a GPU, else the bundled demo. The
# bundled eval set comes in two kinds of haze: `depth` (thickening with distance) and `nh`
# (non-homogeneous patches and plumes with an uneven, tinted airlight, like NH-HAZE).

# %%
WEIGHTS = 'auto'     # @param ["auto", "demo", "nh-haze", "dense-haze"]
STAGE1_FILE = ''     # @param {type:"string"}
DENOISER_FILE = ''   # @param {type:"string"}
HAZE = 'depth'       # @param ["depth", "nh", "dense"]
DATASET = ''         # @param ["", "nh-haze", "dense-haze", "o-haze", "i-haze", "sots-indoor", "sots-outdoor", "hsts"]
ROOT = ''            # @param {type:"string"}
DATA_DIR = ''        # @param {type:"string"}
SAMPLES = 4          # @param {type:"integer"}
session = dd.notebook_session(WEIGHTS, STAGE1_FILE, DENOISER_FILE)   # prints the device and the choice
choice, pipe, SMOKE = session.choice, session.pipe, session.smoke
SIZE = 64 if SMOKE else 256
DATA_DIR = DATA_DIR or None   # a folder with hazy/ and gt/ subfolders; None: the bundled set

# %%
if DATASET:   # a public benchmark's test split, found by its published file names
    pairs = evaluation.load_pairs(DATASET, ROOT, 'test')
    print(len(pairs), DATASET, 'test pairs in', ROOT)
else:
    if DATA_DIR is None:
        DATA_DIR = session.scratch(f'eval_{HAZE}')
        make_eval_set(DATA_DIR, size=SIZE, seed=0, kind=HAZE)
    # the one pairing rule (the CLI's `dehazeddpm eval` uses it too): 01_hazy.png pairs with 01_GT.png
    pairs = evaluation.load_pairs('folder', DATA_DIR)
    print(len(pairs), 'pairs in', DATA_DIR)

# %%
# NBVAL_CHECK_OUTPUT
# The bundled set is deterministic: same files, sizes and haze every run.
lines = []
for pair in pairs:
    h, g = load_image(pair.input), load_image(pair.gt)
    lines.append(f'{pair.input.name:16s} {Image.open(pair.input).size}  hazy PSNR {metrics.psnr(h, g):.2f} dB')
print('\n'.join(lines))

# %%
# The package's evaluation harness: the input itself, stage 1's J, the weights' default call and the
# mean of SAMPLES samples, each scored as the 8-bit image a user gets, one row per image and run.
# LPIPS joins the metrics when its weights are installed (`pip install --no-deps lpips`, plus AlexNet's).
from dehazeddpm.perceptual import LpipsUnavailable, load_lpips
try:
    lpips = load_lpips()
except LpipsUnavailable as exc:
    lpips = None
    print(exc)
results = {}
def keep(pair, run, seed, res):
    results[pair.name, run] = res
runs = {'hazy': evaluation.HAZY, 'stage1': evaluation.STAGE1, 'dehazed': evaluation.DEFAULT_CALL,
        f'mean of {SAMPLES}': {'samples': SAMPLES}}
scored = evaluation.evaluate(pipe, pairs, runs, seeds=[0], on_result=keep, lpips=lpips)
rows = evaluation.by_image(scored)
res = results[pairs[-1].name, 'dehazed']
items = {pair.name: {'hazy': load_image(pair.input), 'stage1': results[pair.name, 'stage1'].image,
                     'dehazed': results[pair.name, 'dehazed'].image, 'gt': load_image(pair.gt),
                     'PSNR stage 1': row['psnr_stage1'], 'PSNR dehazed': row['psnr_dehazed'],
                     'SSIM stage 1': row['ssim_stage1'], 'SSIM dehazed': row['ssim_dehazed']}
         for pair, row in zip(pairs, rows)}

# %% [markdown]
# ## Results

# %%
from IPython.display import Markdown, display
cols = [k for k in rows[0]]
mean = evaluation.mean_of(rows, name='**mean**')
display(Markdown(f'Weights `{choice.name}`; what ran: {res.describe()} (the last image).\n\n'
                 + plotting.metrics_table_markdown(rows + [mean], columns=cols)))

# %%
# Every metric, each run's mean over the images (↑: higher is better, ↓: lower)
summary = evaluation.summarize(scored)
metric_names = [m for m in evaluation.METRICS if m in summary[0]]
display(Markdown(plotting.metrics_table_markdown(
    [{'run': s['run'], **{m + (' ↑' if evaluation.HIGHER_IS_BETTER[m] else ' ↓'): s[m] for m in metric_names},
      's/image': s['seconds']} for s in summary], digits=3)))

# %%
plotting.show(plotting.plot_metrics_bar(rows, groups=('hazy', 'stage1', 'dehazed', f'mean of {SAMPLES}')))

# %%
display(Markdown(plotting.stage2_verdict(choice.name, mean['psnr_stage1'], mean['psnr_dehazed'],
                                         mean['ssim_stage1'], mean['ssim_dehazed']) + ' (Means over the images above.)'))

# %% [markdown]
# ## Next to the published methods
#
# PSNR / SSIM that other methods' authors publish on this dataset's test split (with where each
# number is stated), and the rows measured here when `DATASET` is set and the weights are the
# released ones. On the bundled synthetic set there is nothing to compare with: the table shows
# NH-HAZE's published numbers for orientation only.

# %%
shown = DATASET or 'nh-haze'
ours = [s for s in summary if s['run'] != 'hazy'] if DATASET else []
display(Markdown(f'**{shown}**, test split\n\n'
                 + plotting.metrics_table_markdown(evaluation.comparison(shown, ours, label=choice.name),
                                                   columns=['method', 'psnr', 'ssim', 'source'], digits=3)))

# %% [markdown]
# ## Per image

# %%
viewer = widgets.PairViewer(items, titles={'stage1': 'stage 1: J'})
viewer.show()
