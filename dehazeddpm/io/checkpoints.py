"""Strict loading and saving of stage-1 and denoiser checkpoints in the released layouts.

The reference loader pops ``denoise_fn.downs.0.weight`` and loads with ``strict=False``, so the
released denoiser silently runs with a random input layer and samples pure noise. Here every
load is strict: a missing, unexpected or wrongly shaped tensor is an error that lists the keys.
Checkpoints are pickles; they are always read with ``weights_only=True`` so a file can never
execute code.

Layouts accepted (the reference names are on the left):

| file                      | layout                                        | package object        |
|---------------------------|-----------------------------------------------|-----------------------|
| ``NH_net_g_80000.pth``    | ``{'params': state_dict}`` of ``MPRfusion``   | ``Stage1Net``         |
| ``*_gen.pth``             | ``denoise_fn.*`` + 12 schedule buffers        | ``UNet`` + ``NoiseSchedule`` |
| either, from DataParallel | keys prefixed ``module.``                     | prefix removed        |

Module attribute names equal the reference ones, so the only key mapping is the prefix table
below; saving writes the reference layout back, so files round-trip and load in the reference.
"""
from __future__ import annotations

import dataclasses
import os
import pickle
import warnings
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import torch
from torch import nn

from ..diffusion.schedule import BUFFER_NAMES, NoiseSchedule
from ..models.stage1 import Stage1Net
from ..models.unet import RELEASED_UNET, UNet, UNetConfig
from ..utils import atomic_write

StateDict = Dict[str, torch.Tensor]
Source = Union[str, os.PathLike, Mapping[str, Any]]

# The whole reference -> package key mapping: prefixes stripped on load, written back on save.
DENOISER_PREFIX = "denoise_fn."     # netG (GaussianDiffusion) wraps the UNet as ``denoise_fn``
PARALLEL_PREFIX = "module."         # DataParallel / DistributedDataParallel
STAGE1_CONTAINER_KEYS = ("params", "params_ema", "state_dict", "model")  # BasicSR-style wrappers
# The files this package saves carry what their tensors cannot show (the UNet's GroupNorm count,
# the sampling defaults) under this top-level key: a plain dict, which weights_only loading
# accepts and the reference's loaders pass over (unexpected keys under strict=False; a key
# other than 'params' for stage 1).
METADATA_KEY = "dehazeddpm"
METADATA_FORMAT = 1
# What infer_unet_config assumes for settings tensor shapes cannot show (the released values).
ASSUMED_UNSEEN = {"norm_groups": 32, "dropout": 0.0}


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or does not match the model exactly."""


def read_checkpoint(src: Source) -> Dict[str, Any]:
    """Load a checkpoint file safely (``weights_only=True``, on CPU); dicts pass through."""
    if isinstance(src, Mapping):
        return dict(src)
    path = Path(src)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    zipped = zipfile.is_zipfile(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        with open(path, "rb") as f:
            pickled = f.read(1) == b"\x80"  # torch's legacy format starts with a pickle protocol mark
        if not zipped and not pickled:
            raise CheckpointError(f"cannot read checkpoint {path}: it is not a torch checkpoint (not the zip "
                                  "format torch.save writes: a web page, an error message or a damaged file?)") from exc
        raise CheckpointError(
            f"refused to load {path}: it holds Python objects beyond tensors and plain containers, "
            f"which could run code when unpickled ({str(exc).splitlines()[0]}). Checkpoints are "
            "always loaded with weights_only=True; re-save the state dict alone.") from exc
    except Exception as exc:  # a damaged file can make the unpickler fail in any way
        raise CheckpointError(f"cannot read checkpoint {path}: the file is corrupt or truncated "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from exc
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} does not hold a state dict (got {type(obj).__name__})")
    return dict(obj)


def _strip_prefix(sd: Mapping[str, Any], prefix: str) -> Dict[str, Any]:
    if sd and all(k.startswith(prefix) for k in sd):
        return {k[len(prefix):]: v for k, v in sd.items()}
    return dict(sd)


def _tensors_only(sd: Mapping[str, Any], what: str) -> StateDict:
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{what}: entries that are not tensors: {bad[:10]}")
    broken = [k for k, v in sd.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if broken:
        raise CheckpointError(f"{what} holds NaN or inf in {len(broken)} tensor(s): {_fmt(broken, 5)}; the file is "
                              "damaged or came from a diverged training run")
    return dict(sd)


def checkpoint_metadata(src: Source) -> Dict[str, Any]:
    """What a file saved by this package says about itself (``unet_config``, ``defaults``), or {}."""
    meta = read_checkpoint(src).get(METADATA_KEY)
    return dict(meta) if isinstance(meta, Mapping) else {}


def _fmt(keys: List[str], limit: int = 20) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def check_state_dict(model: nn.Module, sd: Mapping[str, torch.Tensor], what: str) -> None:
    """Raise CheckpointError unless ``sd`` has exactly the model's keys and shapes."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    mismatched = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(v.shape)}"
                  for k, v in expected.items() if k in sd and tuple(sd[k].shape) != tuple(v.shape)]
    # an integer tensor where the model holds floats would be cast silently by load_state_dict
    mismatched += [f"{k}: checkpoint {sd[k].dtype} vs model {v.dtype}" for k, v in expected.items()
                   if k in sd and v.is_floating_point() != sd[k].is_floating_point()]
    if missing or unexpected or mismatched:
        lines = [f"{what} does not match the model exactly (strict loading; nothing was loaded):"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {_fmt(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {_fmt(unexpected)}")
        if mismatched:
            lines.append(f"  wrong shapes or types ({len(mismatched)}): {_fmt(mismatched)}")
        raise CheckpointError("\n".join(lines))


def _looks_like_stage1(sd: Mapping[str, Any]) -> bool:
    return any(k.startswith(("layer0", "ANet.", "sam.")) for k in sd)


def _looks_like_denoiser(sd: Mapping[str, Any]) -> bool:
    return any(k.startswith(("noise_level_mlp.", "downs.", "denoise_fn.")) for k in sd)


# -- stage 1 --------------------------------------------------------------------------------------

def stage1_state_dict(src: Source) -> StateDict:
    """The bare stage-1 state dict from a released-layout file or dict."""
    raw = read_checkpoint(src)
    raw.pop(METADATA_KEY, None)
    for key in STAGE1_CONTAINER_KEYS:
        if key in raw and isinstance(raw[key], Mapping):
            raw = dict(raw[key])
            break
    sd = _strip_prefix(raw, PARALLEL_PREFIX)
    if _looks_like_denoiser(sd) and not _looks_like_stage1(sd):
        raise CheckpointError("this is a stage-2 (denoiser, reference 'netG' *_gen.pth) checkpoint; "
                              "load it with load_denoiser")
    return _tensors_only(sd, "stage-1 checkpoint")


def load_stage1(src: Source, *, device: "torch.device | str | None" = None) -> Stage1Net:
    """Build a Stage1Net and load ``src`` strictly; returns it in eval mode.

    ``src``: a path to ``NH_net_g_80000.pth``-style file (``{'params': sd}``), or a state dict.
    """
    sd = stage1_state_dict(src)
    net = Stage1Net()
    check_state_dict(net, sd, "stage-1 checkpoint")
    net.load_state_dict(sd, strict=True)
    if device is not None:
        net.to(device)
    return net.eval()


def save_stage1(net: Stage1Net, path: "str | os.PathLike") -> Path:
    """Write ``{'params': state_dict}`` (the released layout), atomically."""
    return save_checkpoint({"params": _cpu(net.state_dict())}, path)


# -- denoiser -------------------------------------------------------------------------------------

def split_denoiser_state_dict(src: Source) -> Tuple[StateDict, StateDict]:
    """(UNet weights without the ``denoise_fn.`` prefix, schedule buffers) from a ``*_gen.pth``."""
    raw = read_checkpoint(src)
    raw.pop(METADATA_KEY, None)
    raw = _strip_prefix(raw, PARALLEL_PREFIX)
    if _looks_like_stage1(raw) and not _looks_like_denoiser(raw) or "params" in raw:
        raise CheckpointError("this is a stage-1 (reference 'netH', MPRfusion) checkpoint; load it with load_stage1")
    buffers = {k: v for k, v in raw.items() if k in BUFFER_NAMES}
    weights = {k: v for k, v in raw.items() if k not in BUFFER_NAMES}
    weights = _strip_prefix(weights, DENOISER_PREFIX)
    stray = [k for k in weights if k.startswith(DENOISER_PREFIX)]
    if stray:  # a mix of prefixed and bare keys: report them rather than guess
        raise CheckpointError(f"denoiser checkpoint mixes '{DENOISER_PREFIX}' keys with others: {_fmt(stray)}")
    if buffers and set(buffers) != set(BUFFER_NAMES):
        missing = sorted(set(BUFFER_NAMES) - set(buffers))
        raise CheckpointError(f"denoiser checkpoint has only some schedule buffers; missing: {missing}")
    return _tensors_only(weights, "denoiser checkpoint"), _tensors_only(buffers, "denoiser checkpoint")


def infer_unet_config(sd: Mapping[str, torch.Tensor], **overrides: Any) -> UNetConfig:
    """Read the UNet architecture off tensor shapes; keyword overrides win.

    Inferred: in/out channels, inner channels, channel multipliers, res blocks per level and the
    levels that carry attention. Not visible in shapes: ``norm_groups`` (default 32), ``dropout``
    (default 0.0; it only matters in training) and the absolute ``image_size``: attention levels are
    expressed as ``attn_res`` relative to ``image_size`` (given; else chosen so ``attn_res`` is the
    released ``[16]``, which reproduces both the released and the parity configs).
    """
    try:
        first = sd["downs.0.weight"]
        final = sd["final_conv.block.3.weight"]
    except KeyError as exc:
        raise CheckpointError(f"cannot infer the UNet config: key {exc.args[0]!r} is missing") from exc
    inner = int(first.shape[0])
    idx, levels, attn_levels = 1, [], []
    while True:
        blocks = 0
        level = len(levels)
        while f"downs.{idx}.res_block.block1.block.3.weight" in sd:
            out_ch = int(sd[f"downs.{idx}.res_block.block1.block.3.weight"].shape[0])
            if f"downs.{idx}.attn.qkv.weight" in sd and level not in attn_levels:
                attn_levels.append(level)
            idx += 1
            blocks += 1
        if blocks == 0:
            break
        if out_ch % inner:
            raise CheckpointError(f"level {level} has {out_ch} channels, not a multiple of {inner}")
        levels.append((blocks, out_ch // inner))
        if f"downs.{idx}.conv.weight" in sd:
            idx += 1
        else:
            break
    if not levels or len({b for b, _ in levels}) != 1:
        raise CheckpointError(f"cannot infer res_blocks: blocks per level {[b for b, _ in levels]}")
    n_levels = len(levels)
    if "image_size" in overrides:
        image_size = int(overrides["image_size"])
        attn_res = tuple(image_size >> lvl for lvl in attn_levels)
    elif attn_levels:  # express attention as the released attn_res=[16] where possible
        image_size = 16 << max(attn_levels)
        attn_res = tuple(image_size >> lvl for lvl in attn_levels)
    else:  # no level attends: the released 512 / [16] if 16 is not a level resolution
        image_size = 512
        attn_res = (16,) if all(512 >> lvl != 16 for lvl in range(n_levels)) else ()
    cfg = dict(in_channel=int(first.shape[1]), out_channel=int(final.shape[0]), inner_channel=inner,
               channel_mults=tuple(m for _, m in levels), attn_res=attn_res, res_blocks=levels[0][0],
               image_size=image_size, **ASSUMED_UNSEEN,
               use_affine_level=int(sd["downs.1.res_block.noise_func.noise_func.0.weight"].shape[0])
               == 2 * int(sd["downs.1.res_block.block1.block.3.weight"].shape[0])
               if "downs.1.res_block.noise_func.noise_func.0.weight" in sd else False)
    cfg.update(overrides)
    if "norm_groups" not in overrides and inner % cfg["norm_groups"]:
        raise CheckpointError(f"the denoiser has {inner} base channels, which the released norm_groups "
                              f"{cfg['norm_groups']} does not divide: give its norm_groups (the file does not say)")
    return UNetConfig.from_dict(cfg)


def denoiser_config(src: Source, *, name: Optional[str] = None, **config: Any) -> Tuple[UNetConfig, str]:
    """The UNet config for ``src`` and where it came from, one line for people.

    Keywords win; then the config the file carries (files this package saved; ``name``: how an
    error names the file when ``src`` is already a dict); then what the
    tensor shapes show, with the released ``norm_groups`` 32 and ``dropout`` 0 assumed: a
    GroupNorm count that the shapes allow but the file was not trained with cannot be told from
    the tensors, and gives a working but wrong model.
    """
    raw = read_checkpoint(src)
    weights, _ = split_denoiser_state_dict(raw)
    if "channel_multiplier" in config:
        config["channel_mults"] = config.pop("channel_multiplier")
    saved = checkpoint_metadata(raw).get("unet_config")
    if isinstance(saved, Mapping):
        try:
            return UNetConfig.from_dict({**saved, **config}), "the UNet config saved in the file"
        except ValueError as exc:
            name = name or (os.fspath(src) if isinstance(src, (str, os.PathLike)) else "the checkpoint")
            raise CheckpointError(f"{name}: the UNet config saved in the file cannot be built ({exc})") from None
    if not weights:
        return UNetConfig.from_dict(config), "the given UNet config"
    # dropout is invisible too, but only training uses it
    cfg = infer_unet_config(weights, **config)
    if "norm_groups" in config:
        return cfg, "read off the tensor shapes"
    if cfg == dataclasses.replace(RELEASED_UNET, dropout=cfg.dropout):
        return cfg, "the released architecture, recognised by its tensor shapes"
    return cfg, (f"read off the tensor shapes, norm_groups={ASSUMED_UNSEEN['norm_groups']} assumed (the released "
                 "value; shapes cannot show it)")


def config_unknown_message(src: Source, how: str) -> str:
    """The one line that says a denoiser's GroupNorm count cannot be known and how to give it."""
    name = f"{os.fspath(src)}: " if isinstance(src, (str, os.PathLike)) else ""
    return (f"{name}the denoiser's norm_groups cannot be read off its tensors and the file does not say it "
            f"({how}); give it: load_denoiser(..., norm_groups=N) or --unet-config '{{\"norm_groups\": N}}'")


def load_denoiser(src: Source, *, device: "torch.device | str | None" = None, **config: Any) -> UNet:
    """Build the UNet from ``src`` (path or state dict) and load it strictly; eval mode.

    Accepts the released ``*_gen.pth`` layout (``denoise_fn.*`` plus schedule buffers), bare UNet
    state dicts and ``module.`` prefixes. The config comes from :func:`denoiser_config`: keywords
    (reference names: ``in_channel, out_channel, inner_channel, norm_groups, channel_mults,
    attn_res, res_blocks, dropout, image_size``), else the config the file carries, else the
    tensor shapes. ``unet.condition`` says whether the model expects [J, T] (7 input channels)
    or J alone (6).
    """
    raw = read_checkpoint(src)
    weights, _ = split_denoiser_state_dict(raw)
    cfg, how = denoiser_config(raw, name=os.fspath(src) if isinstance(src, (str, os.PathLike)) else None, **config)
    if "assumed" in how:
        warnings.warn(config_unknown_message(src, how), stacklevel=2)
    unet = UNet.from_config(cfg)
    check_state_dict(unet, weights, "denoiser checkpoint")
    unet.load_state_dict(weights, strict=True)
    if device is not None:
        unet.to(device)
    return unet.eval()


def load_schedule(src: Source) -> Optional[NoiseSchedule]:
    """The training schedule stored in a ``*_gen.pth`` (None if it carries no buffers)."""
    _, buffers = split_denoiser_state_dict(src)
    return NoiseSchedule.from_buffers(buffers) if buffers else None


def denoiser_state_dict(unet: UNet, schedule: Optional[NoiseSchedule] = None) -> StateDict:
    """The reference ``GaussianDiffusion`` layout: schedule buffers then ``denoise_fn.*``."""
    out: StateDict = OrderedDict()
    if schedule is not None:
        out.update(schedule.buffers())
    for k, v in unet.state_dict().items():
        out[DENOISER_PREFIX + k] = v.detach().cpu()
    return out


def save_denoiser(unet: UNet, path: "str | os.PathLike", schedule: Optional[NoiseSchedule] = None,
                  *, half: bool = False, defaults: Optional[Mapping[str, Any]] = None) -> Path:
    """Write a ``*_gen.pth`` the reference code can load; ``half`` stores float16 weights.

    The file also carries the UNet config and, when given, the sampling ``defaults`` (a
    ``SamplingOptions.to_dict()``) under :data:`METADATA_KEY`, so ``from_files`` needs no guess.
    """
    sd: Dict[str, Any] = dict(denoiser_state_dict(unet, schedule))
    if half:
        sd = OrderedDict((k, v.half() if k.startswith(DENOISER_PREFIX) and v.is_floating_point() else v)
                         for k, v in sd.items())
    sd[METADATA_KEY] = {"format": METADATA_FORMAT, "unet_config": unet.config.to_dict(),
                        **({"defaults": dict(defaults)} if defaults else {})}
    return save_checkpoint(sd, path)


def _cpu(sd: Mapping[str, torch.Tensor]) -> StateDict:
    return OrderedDict((k, v.detach().cpu()) for k, v in sd.items())


def save_checkpoint(obj: Any, path: "str | os.PathLike") -> Path:
    """``torch.save(obj, path)`` through :func:`dehazeddpm.utils.atomic_write`: a reader sees the
    old file or the whole new one."""
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))
