"""The small interface every capture backend implements, and the table that picks one.

A source is used by one thread only (the camera's reader): ``open``, then ``read`` until it
raises, then ``close``. It does not reconnect; ``Camera`` does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy.typing as npt

from pipeline.capture.config import CameraConfig
from pipeline.capture.gstreamer_source import GstreamerSource
from pipeline.capture.opencv_source import OpenCvSource

__all__ = ["BACKENDS", "FrameSource", "SourceFactory", "make_source"]


class FrameSource(Protocol):
    """One connection to one camera."""

    backend: str  # "opencv" or "gstreamer": logged and shown with the camera's state

    def open(self) -> None:
        """Connect, waiting at most the camera's ``open_timeout_seconds``.

        Raises CameraError (CameraTimeoutError when it did not answer in time), or
        BackendUnavailableError when the backend's library is missing.
        """

    def read(self, timeout_seconds: float) -> npt.NDArray[Any] | None:
        """The next new frame (meant to be BGR uint8 HxWx3), or None when none came in time.

        ``timeout_seconds`` bounds the wait where the backend allows it (see each backend).
        Raises StreamEndedError at the end of the stream and CameraError when it fails.
        """

    def close(self) -> None:
        """Release the connection; safe to call more than once and after a failed ``open``."""


SourceFactory = Callable[[CameraConfig], FrameSource]


BACKENDS: dict[str, SourceFactory] = {"opencv": OpenCvSource, "gstreamer": GstreamerSource}


def make_source(config: CameraConfig) -> FrameSource:
    """A new, unopened source for ``config`` on the backend it names (never another one)."""
    return BACKENDS[config.backend](config)
