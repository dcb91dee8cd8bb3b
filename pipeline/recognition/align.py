"""Face alignment: 5 landmarks -> 150x150 RGB chips with the geometry of dlib's get_face_chip.

For the ``dlib5`` scheme the chip is cut by dlib's own ``get_face_chip`` (padding 0.25), so our
chips and dlib's (and face_recognition's) are the same pixels.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from engines.errors import InputSpecError
from engines.runtime.dlibrt import import_dlib
from pipeline.types import CHIP_SIZE_PX, FaceChips, Faces, require_array

__all__ = ["CHIP_PADDING", "FaceAligner"]

CHIP_PADDING = 0.25  # dlib's default: the encoder was trained on chips cut this way


class FaceAligner:
    """Cuts aligned chips out of an RGB image for the faces found in it."""

    def __init__(self) -> None:
        self._dlib: Any = import_dlib("alignment needs dlib")

    def align(self, image_rgb: npt.NDArray[np.uint8], faces: Faces) -> FaceChips:
        """Chips for ``faces`` in ``image_rgb`` (RGB uint8 HxWx3): RGB uint8 (N, 150, 150, 3)."""
        require_array("image", image_rgb, dtype=np.uint8, shape=(None, None, 3))
        if faces.landmark_scheme != "dlib5":
            raise InputSpecError(f"no alignment for landmark scheme {faces.landmark_scheme!r}")
        if not len(faces):
            return FaceChips(np.zeros((0, CHIP_SIZE_PX, CHIP_SIZE_PX, 3), np.uint8))
        dlib = self._dlib
        chips = []
        for box, points in zip(faces.boxes, faces.landmarks, strict=True):
            rectangle = dlib.rectangle(*(round(float(value)) for value in box))
            parts = [dlib.point(round(float(x)), round(float(y))) for x, y in points]
            shape = dlib.full_object_detection(rectangle, parts)
            chips.append(
                np.asarray(dlib.get_face_chip(image_rgb, shape, CHIP_SIZE_PX, CHIP_PADDING))
            )
        return FaceChips(np.stack(chips).astype(np.uint8))
