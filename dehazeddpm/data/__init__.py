"""Data: synthetic haze, the built-in photos (disjoint train and eval sets) and datasets.

Layer: data. May import ``io`` (to read and write images), the foundation and ``physics``.
Every tensor here is image space, float32 in [0, 1].
"""
from .datasets import PAIR_SUFFIXES, PairedFolderDataset, SyntheticHazeDataset, item_generator, pair_key
from .haze import (
    AIRLIGHT_RANGE,
    AIRLIGHT_TINT,
    BETA_RANGE,
    SCENE_TINT_RANGE,
    HazySample,
    depth_prior,
    random_depth_field,
    random_haze_params,
    synthesize_haze,
    tint_scene,
)
from .nonhomogeneous import (
    HAZE_KINDS,
    HazeKind,
    airlight_field,
    cast_airlight,
    fbm_field,
    plume_field,
    random_haze_kind_params,
    smog_or_mist,
    synthesize_nonhomogeneous,
)
from .photos import (
    ASSET_PHOTOS,
    EVAL_HAZE,
    EVAL_PHOTOS,
    INDEPENDENT_PHOTOS,
    JUDGE_PHOTOS,
    MORE_TRAIN_PHOTOS,
    MOTORCYCLE_DOFFS,
    PHOTO_SPLITS,
    REAL_HAZE_PHOTOS,
    TRAIN_PHOTOS,
    WHEEL_PHOTOS,
    WIDE_TRAIN_PHOTOS,
    builtin_photos,
    disparity_to_depth,
    eval_haze,
    eval_haze_params,
    load_photo,
    make_eval_set,
    real_haze_photos,
    resize_photo,
)
from .public import DATASETS, SPLITS, DatasetError, DatasetLayout, Pair, dataset_pairs, describe_datasets

__all__ = ["DATASETS", "SPLITS", "DatasetError", "DatasetLayout", "Pair", "dataset_pairs", "describe_datasets",
           "AIRLIGHT_RANGE", "AIRLIGHT_TINT", "ASSET_PHOTOS", "JUDGE_PHOTOS", "WIDE_TRAIN_PHOTOS", "BETA_RANGE", "EVAL_HAZE", "EVAL_PHOTOS", "HAZE_KINDS", "INDEPENDENT_PHOTOS", "MORE_TRAIN_PHOTOS", "PHOTO_SPLITS",
           "REAL_HAZE_PHOTOS", "HazeKind",
           "WHEEL_PHOTOS", "airlight_field", "fbm_field", "plume_field", "random_haze_kind_params",
           "synthesize_nonhomogeneous", "cast_airlight", "smog_or_mist", "HazySample", "MOTORCYCLE_DOFFS",
           "PAIR_SUFFIXES", "PairedFolderDataset", "SyntheticHazeDataset", "TRAIN_PHOTOS", "builtin_photos",
           "depth_prior", "disparity_to_depth", "eval_haze", "eval_haze_params", "item_generator", "load_photo", "make_eval_set", "pair_key", "real_haze_photos",
           "random_depth_field", "random_haze_params", "resize_photo", "SCENE_TINT_RANGE", "synthesize_haze", "tint_scene"]
