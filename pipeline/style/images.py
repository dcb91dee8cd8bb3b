"""Reading style and content images from files as BGR uint8, the colour order of the whole
style path (OpenCV frames, the style nets and the Caffe-convention loss network all use BGR)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from pipeline.errors import ImageDecodeError
from pipeline.images import decode_image

__all__ = ["read_bgr_image", "resize_to_width"]


def read_bgr_image(path: Path) -> npt.NDArray[np.uint8]:
    """Decode an image file into BGR uint8 (H, W, 3).

    Grayscale, RGBA and EXIF-rotated files are handled by ``pipeline.images.decode_image``;
    ImageDecodeError names the file when it is missing, empty or not an image.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageDecodeError(f"{path}: cannot read: {exc.strerror}") from exc
    rgb = decode_image(data, name=str(path))
    return np.ascontiguousarray(rgb[:, :, ::-1])


def resize_to_width(image: npt.NDArray[np.uint8], width_px: int) -> npt.NDArray[np.uint8]:
    """``image`` scaled to ``width_px`` wide, aspect kept (area filter when shrinking)."""
    height, width = image.shape[:2]
    height_px = max(1, round(height * width_px / width))
    interpolation = cv2.INTER_AREA if width_px < width else cv2.INTER_LINEAR
    resized = cv2.resize(image, (width_px, height_px), interpolation=interpolation)
    return np.asarray(resized, dtype=np.uint8)
