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
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/dehazeddpm/dehazeddpm/blob/main/notebooks/06_finetune.ipynb)
#
# # Fine-tune on your own haze
#
# Continue both stages from the weights you pick, on a public dataset's training split (`DATASET`
# unpacked at `ROOT`: every image but the test split notebook 05 scores), on your pairs (`HAZY_DIR`
# and `GT_DIR`) or on synthetic haze over your clear photos (`CLEAR_DIR`; by default the built-in
# training photos), within a time budget that fits a free Colab
# T4, then compare before and after with the evaluation harness. The run folder can live on Google
# Drive: a disconnect loses at most 50 steps, and running the training cells again continues where
# the run stopped (the same data order and random numbers, bit for bit).
#
# **Stage 1's recipe** (the reference author's description, `dehazeddpm.training.stage1_loss`): L1 of
# J, of the first sub-network's coarse J and of the re-hazed $I = J\,T + A\,(1 - T)$ against the hazy
# input, plus L1 of T and A where the data knows them (synthetic haze), all with weight 1. The
# denoiser then learns the diffusion loss on the condition the fine-tuned stage 1 gives.

# %%
# NBVAL_SKIP
# On Colab: fetch the repository, install it and mount Drive (where the run folder goes).
import os, subprocess, sys
if 'google.colab' in sys.modules:
    if not os.path.isdir('/content/dehazeddpm'):
        subprocess.run(['git', 'clone', '-q', 'https://github.com/dehazeddpm/dehazeddpm', '/content/dehazeddpm'],
                       check=True)
    os.chdir('/content/dehazeddpm/notebooks')
    sys.path.insert(0, '/content/dehazeddpm')
    import colab_setup   # installs the package (never torch) and turns on Colab's widget manager
    colab_setup.setup()
    from google.colab import drive
    drive.mount('/content/drive')   # the run folder goes on Drive: a disconnect loses nothing

# %%
import os

from IPython.display import Image as ShowImage, Markdown, display

import dehazeddpm as dd
from dehazeddpm import evaluation, training
from dehazeddpm.data import make_eval_set
from dehazeddpm.viz import plotting

# %% [markdown]
# ## Weights, data and budget

# %%
WEIGHTS = 'auto'     # @param ["auto", "demo", "nh-haze", "dense-haze"]
STAGE1_FILE = ''     # @param {type:"string"}
DENOISER_FILE = ''   # @param {type:"string"}
DATASET = ''         # @param ["", "nh-haze", "dense-haze", "o-haze", "i-haze"]
ROOT = ''            # @param {type:"string"}
HAZY_DIR = ''        # @param {type:"string"}
GT_DIR = ''          # @param {type:"string"}
CLEAR_DIR = ''       # @param {type:"string"}
MINUTES = 30         # @param {type:"number"}
CROP = 128           # @param [64, 128, 256]
BATCH = 4            # @param {type:"integer"}
ACCUMULATE = 1       # @param {type:"integer"}
RUN_DIR = ''         # @param {type:"string"}
session = dd.notebook_session(WEIGHTS, STAGE1_FILE, DENOISER_FILE)   # prints the device and the choice
choice, SMOKE = session.choice, session.smoke
RUN_DIR = RUN_DIR or session.keep('dehazeddpm_finetune')   # on Drive when mounted, else in the current folder
cfg1, cfg2 = training.finetune_configs(
    choice.stage1_file, choice.denoiser_file, choice.pipe.denoiser.config.to_dict(), RUN_DIR,
    dataset=DATASET or None, root=ROOT or None, hazy_dir=HAZY_DIR or None, gt_dir=GT_DIR or None,
    photos=CLEAR_DIR or 'train',
    minutes=MINUTES, crop=CROP, batch_size=BATCH, accumulate=ACCUMULATE, smoke=SMOKE)
print('run folder:', RUN_DIR)

# %%
# NBVAL_CHECK_OUTPUT
# What each stage will run (in smoke mode: three tiny steps each)
for cfg in (cfg1, cfg2):
    print(f'{cfg.stage}: {cfg.steps} steps of {cfg.batch_size} x {cfg.accumulate} crops of {cfg.crop} px, '
          f'precision {cfg.precision}, from {os.path.basename(cfg.init_checkpoint)}')

# %% [markdown]
# ## Will it fit?
#
# Weights, gradients and Adam's state are counted; one step's activations are measured on this
# device (at half the crop and the crop, then scaled). A T4 has 15 GB: when the batch does not fit,
# lower `BATCH` and raise `ACCUMULATE` (the same samples per optimiser step).

# %%
estimate = training.estimate_memory(cfg2, measure_crop=None if SMOKE else 64)
print(estimate.describe(cfg2.batch_size, cfg2.accumulate, budget=15 * 2**30))

# %% [markdown]
# ## Train stage 1, then the denoiser
#
# Each stage gets half of `MINUTES` and saves every 50 steps; running a cell again continues its run
# from `latest_<stage>.json` in the run folder.

# %%
res1 = training.train(cfg1, resume=True)
res2 = training.train(cfg2, resume=True)
plotting.show(plotting.plot_losses({'stage 1': res1, 'denoiser': res2}))

# %%
# The validation preview the denoiser's run saved last: hazy | J | sample | ground truth, per row
preview = sorted(os.listdir(cfg2.out_dir))
preview = [p for p in preview if p.startswith('val_denoiser_')][-1]
display(ShowImage(filename=os.path.join(cfg2.out_dir, preview)))

# %% [markdown]
# ## Before and after
#
# The same harness as notebook 05 and `dehazeddpm eval`, on the held-out evaluation photos (never
# trained on), both kinds of haze. The fine-tuned files load with `DehazePipeline.from_files`.

# %%
after = dd.DehazePipeline.from_files(res1.checkpoint, res2.checkpoint, defaults=choice.pipe.defaults)
data = session.scratch('eval')
pairs = []
for kind in ('depth', 'nh'):
    make_eval_set(os.path.join(data, kind), size=64 if SMOKE else 256, seed=0, kind=kind)
    pairs += [evaluation.Pair(f'{kind}/{p.name}', p.input, p.gt)
              for p in evaluation.load_pairs('folder', os.path.join(data, kind))]
runs = {'stage1': evaluation.STAGE1, 'dehazed': evaluation.DEFAULT_CALL}
rows = []
for label, pipe in (('before', choice.pipe), ('after', after)):
    for s in evaluation.summarize(evaluation.evaluate(pipe, pairs, runs)):
        rows.append({'weights': label, 'run': s['run'], 'psnr': s['psnr'], 'ssim': s['ssim'],
                     'ciede2000': s['ciede2000']})
display(Markdown(plotting.metrics_table_markdown(rows, digits=3)))
print('fine-tuned files:', res1.checkpoint, res2.checkpoint, sep='\n  ')
