"""Reading back the video files the tests write."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt


def decoded_frames(path: Path) -> list[npt.NDArray[np.uint8]]:
    """Every frame of the video at ``path``, decoded by OpenCV's FFmpeg, as BGR uint8."""
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    frames = []
    try:
        ok, frame = capture.read()
        while ok:
            frames.append(np.asarray(frame, dtype=np.uint8))
            ok, frame = capture.read()
    finally:
        capture.release()
    return frames
