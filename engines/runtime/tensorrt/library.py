"""TensorRT itself: imported on use, its version, and a logger that forwards to ``logging``.

Only the functions here (and the ones that call them) need the library; an ``ImportError``, or
an importable ``tensorrt`` that is not NVIDIA's (tensorrt-stubs installs an empty package),
becomes BackendUnavailableError naming the extra to install.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import TYPE_CHECKING

from engines.errors import BackendUnavailableError

if TYPE_CHECKING:
    import tensorrt

__all__ = [
    "KEPT_ERRORS",
    "make_logger",
    "python_log_level",
    "recent_errors",
    "require_tensorrt",
    "tensorrt_version",
]

_log = logging.getLogger(__name__)

_INSTALL_HINT = (
    "install facestream[tensorrt] (NVIDIA TensorRT 10 and cuda-bindings) on a "
    "machine with an NVIDIA GPU"
)
# TensorRT ILogger.Severity values (INTERNAL_ERROR=0 .. VERBOSE=4) -> logging levels; TensorRT's
# INFO is build chatter, so it goes to DEBUG
_LOG_LEVELS = {0: logging.CRITICAL, 1: logging.ERROR, 2: logging.WARNING, 3: logging.DEBUG}
_VERBOSE = 4
KEPT_ERRORS = 20  # TensorRT errors kept for the next exception message


def python_log_level(severity: int) -> int:
    """The ``logging`` level for a TensorRT ``ILogger.Severity`` value (0 = INTERNAL_ERROR)."""
    return _LOG_LEVELS.get(severity, logging.DEBUG)


def require_tensorrt() -> None:
    """Raise BackendUnavailableError unless the real TensorRT is importable."""
    try:
        import tensorrt  # noqa: PLC0415  (optional dependency, imported on use)
    except ImportError as exc:
        raise BackendUnavailableError(f"TensorRT is not installed: {_INSTALL_HINT}") from exc
    if not hasattr(tensorrt, "Builder"):  # import alone succeeds for an empty stub package
        where = getattr(tensorrt, "__file__", None) or "an unknown location"
        raise BackendUnavailableError(
            f"the 'tensorrt' package at {where} is not NVIDIA TensorRT (it has no Builder; "
            f"tensorrt-stubs installs such an empty package): {_INSTALL_HINT}"
        )


def tensorrt_version() -> str:
    """The installed TensorRT version; BackendUnavailableError when TensorRT is missing."""
    require_tensorrt()
    import tensorrt  # noqa: PLC0415

    return tensorrt.__version__


def make_logger(errors: deque[str]) -> tensorrt.ILogger:
    """A TensorRT logger that forwards to ``logging`` and keeps recent errors in ``errors``."""
    import tensorrt  # noqa: PLC0415

    class ForwardingLogger(tensorrt.ILogger):
        def __init__(self) -> None:
            tensorrt.ILogger.__init__(self)  # pybind11 requires the explicit base __init__

        def log(self, severity: tensorrt.ILogger.Severity, msg: str) -> None:
            value = int(severity)
            if value >= _VERBOSE:
                return
            level = python_log_level(value)
            if level >= logging.ERROR:
                errors.append(msg)
            _log.log(level, "TensorRT: %s", msg)

    return ForwardingLogger()


def recent_errors(errors: deque[str]) -> str:
    """The errors TensorRT logged lately, for an exception message."""
    return "; ".join(errors) if errors else "see the TensorRT log"
