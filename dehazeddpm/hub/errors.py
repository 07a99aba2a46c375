"""The errors of the weights hub. Each is an expected failure with a message meant for people:
the command line prints it as one line."""
from __future__ import annotations

__all__ = ["BundledWeightsMissingError", "DownloadError", "HashMismatchError", "UnknownWeightsError",
           "WeightsError", "WeightsMissingError"]


class WeightsError(RuntimeError):
    """Base class for every expected failure of the hub."""


class DownloadError(WeightsError):
    """A file could not be fetched, or what arrived is not the expected file."""


class WeightsMissingError(DownloadError):
    """A file is not on disk and may not be downloaded (offline mode or ``download=False``)."""


class HashMismatchError(DownloadError):
    """A file's sha256 differs from the registry's or from the one recorded on first download."""


class BundledWeightsMissingError(WeightsError):
    """A ``package`` file is absent from this build of the package."""


class UnknownWeightsError(WeightsError, LookupError):
    """No registry entry has the requested name."""
