"""Errors of the style path; all derive from ``engines.errors.FaceStreamError``::

FaceStreamError                              (engines.errors)
├── ModelFileError(ValueError)               (engines.errors) a style model is missing,
│                                            corrupt, or does not match its manifest
├── ImageDecodeError(ValueError)             (pipeline.errors) a style/content file is not
│                                            an image
├── UnknownStyleError(KeyError)              no style model of that name is installed
└── SinkError(OSError)                       an output (file, HTTP port, RTSP port) cannot be
                                             opened or written
"""

from __future__ import annotations

from engines.errors import FaceStreamError

__all__ = ["SinkError", "UnknownStyleError"]


class UnknownStyleError(FaceStreamError, KeyError):
    """No style model of the requested name is installed; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError quotes its argument; this message is a sentence
        return str(self.args[0]) if self.args else ""


class SinkError(FaceStreamError, OSError):
    """An output sink cannot be opened (port in use, unwritable path) or written."""
