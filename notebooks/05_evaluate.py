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
# # Evaluate: PSNR and SSIM over a folder
#
# Dehaze every image of a folder with `hazy/` and `gt/` subfolders (names paired by the package's
# one rule, e.g. `01_hazy.png` with `01_GT.png`) and score the results against the ground truth. By
# default the folder is the bundled synthetic evaluation set; set `DATA_DIR` to your own (e.g.
# NH-HAZE or Dense-Haze on Google Drive) to evaluate on it.

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
import tempfile

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
DATA_DIR = ''        # @param {type:"string"}
session = dd.notebook_session(WEIGHTS, STAGE1_FILE, DENOISER_FILE)   # prints the device and the choice
choice, pipe, SMOKE = session.choice, session.pipe, session.smoke
SIZE = 64 if SMOKE else 256
DATA_DIR = DATA_DIR or None   # a folder with hazy/ and gt/ subfolders; None: the bundled set

# %%
if DATA_DIR is None:
    DATA_DIR = tempfile.mkdtemp(prefix='dehazeddpm_eval_')
    make_eval_set(DATA_DIR, size=SIZE, seed=0, kind=HAZE)
# the one pairing rule (the CLI's `dehazeddpm eval` uses it too): 01_hazy.png pairs with 01_GT.png
pairs, lonely = evaluation.pairs_in(DATA_DIR)
print(len(pairs), 'pairs in', DATA_DIR, f'({len(lonely)} without a partner)' if lonely else '')

# %%
# NBVAL_CHECK_OUTPUT
# The bundled set is deterministic: same files, sizes and haze every run.
lines = []
for pair in pairs:
    h, g = load_image(pair.input), load_image(pair.gt)
    lines.append(f'{pair.input.name:16s} {Image.open(pair.input).size}  hazy PSNR {metrics.psnr(h, g):.2f} dB')
print('\n'.join(lines))

# %%
# The package's evaluation harness: the input itself, stage 1's J and the weights' default call,
# each scored as the 8-bit image a user gets (PSNR, SSIM, colour cast), one row per image and run.
results = {}
def keep(pair, run, seed, res):
    results[pair.name, run] = res
runs = {'hazy': evaluation.HAZY, 'stage1': evaluation.STAGE1, 'dehazed': evaluation.DEFAULT_CALL}
rows = evaluation.by_image(evaluation.evaluate(pipe, pairs, runs, seeds=[0], on_result=keep))
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
plotting.show(plotting.plot_metrics_bar(rows, groups=('hazy', 'stage1', 'dehazed')))

# %%
display(Markdown(plotting.stage2_verdict(choice.name, mean['psnr_stage1'], mean['psnr_dehazed'],
                                         mean['ssim_stage1'], mean['ssim_dehazed']) + ' (Means over the images above.)'))

# %% [markdown]
# ## Per image

# %%
viewer = widgets.PairViewer(items, titles={'stage1': 'stage 1: J'})
viewer.show()
