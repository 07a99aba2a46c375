"""Weights hub: the registry (``weights.json``), the cache, verified downloads, and resolution of
a registry name to two local files.

Layer: hub. May import ``options`` (an entry's sampling defaults) and the foundation; never a
network or the pipeline (the pipeline calls :func:`resolve`). HTTP(S) goes through pooch and
Google Drive through gdown; both are imported only when a download actually happens.
"""
from .cache import (
    COLAB_DRIVE,
    RECORDED_HASHES_FILE,
    cache_dir,
    cache_path,
    forget_recorded_hash,
    is_offline,
    record_hash,
    record_key,
    recorded_hashes,
    recorded_hashes_path,
    sha256_file,
)
from .download import download_file
from .errors import (
    BundledWeightsMissingError,
    DownloadError,
    HashMismatchError,
    UnknownWeightsError,
    WeightsError,
    WeightsMissingError,
)
from .gdrive import download_gdrive, download_gdrive_folder, translate_gdown_error
from .registry import (
    REGISTRY_PATH,
    RELEASE_DRIVE_FOLDER_ID,
    ROLES,
    SOURCES,
    FileSpec,
    WeightsEntry,
    gdrive_file_id,
    get_entry,
    load_registry,
    registry_names,
)
from .resolve import ResolvedWeights, entry_for_file, entry_for_files, load_denoiser, resolve, weights_status

__all__ = ["BundledWeightsMissingError", "COLAB_DRIVE", "DownloadError", "FileSpec", "HashMismatchError", "RECORDED_HASHES_FILE",
           "REGISTRY_PATH", "RELEASE_DRIVE_FOLDER_ID", "ROLES", "ResolvedWeights", "SOURCES", "UnknownWeightsError",
           "WeightsEntry", "WeightsError", "WeightsMissingError", "cache_dir", "cache_path", "download_file",
           "entry_for_file", "entry_for_files", "load_denoiser",
           "download_gdrive", "download_gdrive_folder", "forget_recorded_hash", "gdrive_file_id", "get_entry",
           "is_offline", "load_registry", "record_hash", "record_key", "recorded_hashes", "recorded_hashes_path",
           "registry_names", "resolve", "sha256_file", "translate_gdown_error", "weights_status"]
