"""The one exception family facestream raises on purpose.

Every error also inherits the builtin a caller would naturally catch::

    FaceStreamError(Exception)
    ├── ConfigError(ValueError)              a setting is unknown, out of range or inconsistent
    │   └── CalibrationSetError              INT8 calibration data is too small or malformed
    ├── ModelFileError(ValueError)           a model/plan file is missing, corrupt or truncated
    │   └── ManifestMismatchError            a file does not match the manifest it is stored with
    ├── InputSpecError(ValueError)           an inference batch has the wrong names, dtype or shape
    ├── BackendUnavailableError(RuntimeError) a backend's library or device is not present
    └── EngineStateError(RuntimeError)       an engine is used after close()

The pipeline and calibration packages subclass ``FaceStreamError`` in their own ``errors.py``.
"""

from __future__ import annotations

__all__ = [
    "BackendUnavailableError",
    "CalibrationSetError",
    "ConfigError",
    "EngineStateError",
    "FaceStreamError",
    "InputSpecError",
    "ManifestMismatchError",
    "ModelFileError",
]


class FaceStreamError(Exception):
    """Base of every error facestream raises on purpose."""


class ConfigError(FaceStreamError, ValueError):
    """A setting is unknown, out of range, or inconsistent with another one."""


class CalibrationSetError(ConfigError):
    """INT8 calibration chips are too few (the message states the minimum) or malformed."""


class ModelFileError(FaceStreamError, ValueError):
    """A model or plan file is missing, corrupt, truncated, or of the wrong kind."""


class ManifestMismatchError(ModelFileError):
    """A model or plan does not match the manifest stored beside it (hash, versions, device)."""


class InputSpecError(FaceStreamError, ValueError):
    """An inference batch does not match the engine's input specs (names, dtype, shape)."""


class BackendUnavailableError(FaceStreamError, RuntimeError):
    """The library or device a backend needs is not present on this machine."""


class EngineStateError(FaceStreamError, RuntimeError):
    """An engine was used after it was closed."""
