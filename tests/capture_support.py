"""Helpers the capture tests share: a plain test image, and scripted sources that stand in
for a camera where a real one cannot be made to misbehave on cue."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline.errors import StreamEndedError


def grey_image(width: int, height: int) -> npt.NDArray[np.uint8]:
    """A grey BGR uint8 test image of width x height pixels."""
    return np.full((height, width, 3), 128, np.uint8)


class ScriptedSource:
    """A source that plays a fixed script per connection: each item is what ``read`` returns,
    or an exception it raises; after the script it raises StreamEndedError."""

    backend = "scripted"

    def __init__(self, script: list[object]) -> None:
        self._script = list(script)

    def open(self) -> None:
        """Connect (instantly)."""

    def read(self, timeout_seconds: float) -> npt.NDArray[Any] | None:
        """The next scripted item."""
        if not self._script:
            raise StreamEndedError("script finished")
        item = self._script.pop(0)
        if isinstance(item, BaseException):
            raise item
        assert item is None or isinstance(item, np.ndarray)
        return item

    def close(self) -> None:
        """Disconnect (instantly)."""


class TimingOutSource(ScriptedSource):
    """A scripted source whose None items take the read's timeout (at most 10 ms) to come."""

    def read(self, timeout_seconds: float) -> npt.NDArray[Any] | None:
        """The next scripted item; a None one after a short wait."""
        item = super().read(timeout_seconds)
        if item is None:
            time.sleep(min(timeout_seconds, 0.01))
        return item
