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
# Dehaze every image of a folder with `hazy/` and `gt/` subfolders (matching file names) and score
# the results against the ground truth. By default the folder is the bundled synthetic evaluation set;
# set `DATA_DIR` to your own (e.g. NH-HAZE or Dense-Haze on Google Drive) to evaluate on it.

# %%
# NBVAL_SKIP
# On Colab: fetch the repository first (locally the notebook already sits inside it).
import os, subprocess, sys
if 'google.colab' in sys.modules:
    if not os.path.isdir('/content/dehazeddpm'):
        subprocess.run(['git', 'clone', '-q', 'https://github.com/dehazeddpm/dehazeddpm', '/content/dehazeddpm'],
                       check=True)
    os.chdir('/content/dehazeddpm/notebooks')

# %%
import os, sys
# The repository root holds colab_setup.py and the package; make it importable from notebooks/.
if os.path.isfile(os.path.join('..', 'colab_setup.py')) and os.path.abspath('..') not in sys.path:
    sys.path.insert(0, os.path.abspath('..'))
# Smoke mode (CI, or DEHAZEDDPM_SMOKE=1): tiny images and few steps so the notebook runs on a CPU in seconds.
SMOKE = bool('CI' in os.environ or os.environ.get('DEHAZEDDPM_SMOKE'))
import colab_setup
info = colab_setup.setup(weights=None, install=True)

# %%
import tempfile
import time

import torch
from PIL import Image

import dehazeddpm as dd
from dehazeddpm import metrics
from dehazeddpm.data import make_eval_set
from dehazeddpm.io import is_image_file, load_image
from dehazeddpm.viz import plotting, widgets

DEVICE = 'cuda' if info['device'] == 'cuda' else 'cpu'
_ = torch.set_grad_enabled(False)

# %% [markdown]
# ## Weights and data
#
# The same rule as every notebook (`dd.choose_weights`): your files, else the weights you name, else
# the released weights when they are cached or downloadable on a GPU, else the bundled demo. The
# bundled eval set comes in two kinds of haze: `depth` (thickening with distance) and `nh`
# (non-homogeneous patches and plumes with an uneven, tinted airlight, like NH-HAZE).

# %%
WEIGHTS = 'auto'     # @param ["auto", "demo", "nh-haze", "dense-haze"]
STAGE1_FILE = ''     # @param {type:"string"}
DENOISER_FILE = ''   # @param {type:"string"}
HAZE = 'depth'       # @param ["depth", "nh", "dense"]
DATA_DIR = ''        # @param {type:"string"}
choice = dd.choose_weights(WEIGHTS, stage1=STAGE1_FILE, denoiser=DENOISER_FILE, device=DEVICE)
pipe = choice.pipe
print(choice)
SIZE = 64 if SMOKE else 256
DATA_DIR = DATA_DIR or None   # a folder with hazy/ and gt/ subfolders; None: the bundled set

# %%
from pathlib import Path
if DATA_DIR is None:
    DATA_DIR = tempfile.mkdtemp(prefix='dehazeddpm_eval_')
    make_eval_set(DATA_DIR, size=SIZE, seed=0, kind=HAZE)
gt_by_stem = {p.stem: p for p in sorted(Path(DATA_DIR, 'gt').iterdir()) if is_image_file(p)}
pairs = [(p, gt_by_stem[p.stem]) for p in sorted(Path(DATA_DIR, 'hazy').iterdir())
         if is_image_file(p) and p.stem in gt_by_stem]
print(len(pairs), 'pairs in', DATA_DIR)

# %%
# NBVAL_CHECK_OUTPUT
# The bundled set is deterministic: same files, sizes and haze every run.
lines = []
for hazy_path, gt_path in pairs:
    h, g = load_image(hazy_path), load_image(gt_path)
    lines.append(f'{hazy_path.name:16s} {Image.open(hazy_path).size}  hazy PSNR {metrics.psnr(h, g):.2f} dB')
print('\n'.join(lines))

# %%
rows, items = [], {}
for hazy_path, gt_path in pairs:
    hazy, gt = load_image(hazy_path), load_image(gt_path)
    t0 = time.perf_counter()
    res = pipe(hazy, seed=0, progress=False)   # the weights' default call
    seconds = time.perf_counter() - t0
    out = load_image(res.image)
    J = res.J.cpu()
    rows.append({'name': hazy_path.stem,
                 'psnr_hazy': metrics.psnr(hazy, gt), 'psnr_stage1': metrics.psnr(J, gt), 'psnr_dehazed': metrics.psnr(out, gt),
                 'ssim_hazy': metrics.ssim(hazy, gt), 'ssim_stage1': metrics.ssim(J, gt), 'ssim_dehazed': metrics.ssim(out, gt),
                 'seconds': seconds})
    items[hazy_path.stem] = {'hazy': hazy, 'stage1': J, 'dehazed': res.image, 'gt': gt,
                             'PSNR stage 1': rows[-1]['psnr_stage1'], 'PSNR dehazed': rows[-1]['psnr_dehazed'],
                             'SSIM stage 1': rows[-1]['ssim_stage1'], 'SSIM dehazed': rows[-1]['ssim_dehazed']}

# %% [markdown]
# ## Results

# %%
from IPython.display import Markdown, display
cols = [k for k in rows[0]]
mean = {'name': '**mean**', **{k: sum(r[k] for r in rows) / len(rows) for k in cols if k != 'name'}}
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
