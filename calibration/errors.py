"""Errors of the calibration layer; all derive from ``engines.errors.FaceStreamError``.

Each error also inherits the builtin a caller would naturally catch::

    FaceStreamError                                  (engines.errors)
    ├── PairsFileError(ValueError)                   a pairs CSV or identity folder is missing,
    │                                                malformed, or names images that do not exist
    ├── CalibrationDataError(ValueError)             the data cannot give an answer: too few
    │                                                pairs, one identity only, no genuine or no
    │                                                impostor pairs, a calibration set too small
    ├── ThresholdFileError(ValueError)               a calibrated threshold file is missing its
    │   │                                            fields or unreadable
    │   └── ThresholdModelMismatchError              the threshold was calibrated for another
    │                                                encoder model id
    └── DoorEvalError(ValueError)                    ``eval doors`` input: a video that does not
                                                     decode, an expected name not in the
                                                     gallery, an empty gallery, a bad manifest
"""

from __future__ import annotations

from engines.errors import FaceStreamError

__all__ = [
    "CalibrationDataError",
    "DoorEvalError",
    "PairsFileError",
    "ThresholdFileError",
    "ThresholdModelMismatchError",
]


class PairsFileError(FaceStreamError, ValueError):
    """A pairs CSV or identity folder is missing or malformed, or names missing images."""


class CalibrationDataError(FaceStreamError, ValueError):
    """The data is not enough for an answer (too few pairs or chips, one identity only)."""


class ThresholdFileError(FaceStreamError, ValueError):
    """A calibrated threshold file is unreadable or lacks its fields (names the file)."""


class ThresholdModelMismatchError(ThresholdFileError):
    """The threshold file was calibrated for another encoder model id than the one in use."""


class DoorEvalError(FaceStreamError, ValueError):
    """``eval doors`` cannot run on its input (names the video, identity or manifest)."""
