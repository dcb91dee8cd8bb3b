"""Reading style and content images from files as BGR uint8, the colour order of the whole
style path (OpenCV frames, the style nets and the Caffe-convention loss network all use BGR)."""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

__all__ = ["resize_to_width"]


def resize_to_width(image: npt.NDArray[np.uint8], width_px: int) -> npt.NDArray[np.uint8]:
    """``image`` scaled to ``width_px`` wide, aspect kept (area filter when shrinking)."""
    height, width = image.shape[:2]
    height_px = max(1, round(height * width_px / width))
    interpolation = cv2.INTER_AREA if width_px < width else cv2.INTER_LINEAR
    resized = cv2.resize(image, (width_px, height_px), interpolation=interpolation)
    return np.asarray(resized, dtype=np.uint8)
