"""dlib, imported where it is used: the HOG detector, the 5-point landmarks, the chip cutter
and the parity oracle all run on it, and each says which of them needed it when it is missing.
"""

from __future__ import annotations

from typing import Any

from engines.errors import BackendUnavailableError

__all__ = ["import_dlib"]


def import_dlib(needed_by: str) -> Any:
    """The dlib module, or BackendUnavailableError naming ``needed_by`` ("alignment needs dlib")
    and the package to install."""
    try:
        import dlib  # noqa: PLC0415  (imported on use: a compiled module, heavy to load)
    except ImportError as exc:
        raise BackendUnavailableError(f"{needed_by}: install dlib-bin") from exc
    return dlib
