"""The views a still image is searched in when one pass of the detector finds no face in it.

BlazeFace was trained on faces with surroundings: a crop that is nearly all face (an ID-badge
crop, a face exported by another camera system, a pre-aligned chip) or a 40 px face that is the
whole image gives it none, and searching *inside* such an image (``still_tiles``) cannot help.
These views give it what it lacks:

- ``padded_view``: the image with a replicated border on every side, so a tight crop becomes a
  face with surroundings. Replicated, not mirrored: a mirrored border of a crop cut through a
  face completes the half face into a whole (made-up) one.
- the same after an enlargement (``upscale_to_px``), for images too small for the landmark
  predictor and HOG to work on.
- ``ChipFormat``: the common pre-aligned face formats, recognised by their exact size; their
  face sits at a known place (``face_box``), so landmarks can be found there directly.

Every view knows how to map its pixels back to the image's (``View.to_image``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

__all__ = ["CHIP_FORMATS", "ChipFormat", "View", "chip_format", "padded_view", "shrunk_view"]


@dataclass(frozen=True, slots=True)
class View:
    """An image derived from the one searched: ``image`` = original * scale + offset (pixels).

    image: RGB uint8 HxWx3; scale: view pixels per image pixel; offset_px: where the image's
    origin lands in the view.
    """

    image: npt.NDArray[np.uint8]
    scale: float
    offset_px: float

    def to_image(self, points: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Map x, y pairs (last axis, view pixels) to pixels of the searched image."""
        return ((points - np.float32(self.offset_px)) / np.float32(self.scale)).astype(np.float32)


def padded_view(
    image_rgb: npt.NDArray[np.uint8], *, pad_fraction: float, upscale_to_px: int = 0
) -> View:
    """``image_rgb`` with a replicated border ``pad_fraction`` of its longer side wide on every
    side; when its shorter side is below ``upscale_to_px``, enlarged (bicubic) until it is that
    long first."""
    height, width = image_rgb.shape[:2]
    scale = 1.0
    image = image_rgb
    if min(height, width) < upscale_to_px:
        scale = upscale_to_px / min(height, width)
        size = (round(width * scale), round(height * scale))
        image = np.asarray(cv2.resize(image_rgb, size, interpolation=cv2.INTER_CUBIC), np.uint8)
    border = round(pad_fraction * max(image.shape[:2]))
    padded = cv2.copyMakeBorder(image, border, border, border, border, cv2.BORDER_REPLICATE)
    return View(np.ascontiguousarray(padded, dtype=np.uint8), scale, float(border))


def shrunk_view(view: View, *, max_side_px: int) -> View:
    """``view`` shrunk (area averaging) so its longer side is at most ``max_side_px``."""
    height, width = view.image.shape[:2]
    factor = max_side_px / max(height, width)
    if factor >= 1.0:
        return view
    size = (max(1, math.floor(width * factor)), max(1, math.floor(height * factor)))
    image = cv2.resize(view.image, size, interpolation=cv2.INTER_AREA)
    return View(np.ascontiguousarray(image), view.scale * factor, view.offset_px * factor)


@dataclass(frozen=True, slots=True)
class ChipFormat:
    """A pre-aligned face format: a ``size_px`` square whose face box (what BlazeFace reports
    on it once it has surroundings) is ``face_box`` x1, y1, x2, y2 in fractions of the side."""

    name: str
    size_px: int
    face_box: tuple[float, float, float, float]

    def box_px(self) -> npt.NDArray[np.float32]:
        """The face box in chip pixels, float32 (4,)."""
        return np.asarray(self.face_box, np.float32) * np.float32(self.size_px)


# Face boxes measured: the median BlazeFace (full range) box on 83 chips cut from the photos of
# ../shared/data/faces in each format, padded 75 % per side; per-chip spread (sd) 1.5-3.4 % of
# the side. dlib: get_face_chip, 150 px, padding 0.25. ArcFace: the 112 px template of
# insightface (eye centres at (38.3, 51.7) and (73.5, 51.5), nose tip (56.0, 71.7)). OpenFace:
# AlignDlib's OUTER_EYES_AND_NOSE at 96 px (outer eye corners (18.6, 16.3) and (75.7, 15.2),
# nose base (47.5, 49.4)): the face fills the crop and more.
CHIP_FORMATS: tuple[ChipFormat, ...] = (
    ChipFormat("dlib", 150, (0.017, -0.005, 0.958, 0.943)),
    ChipFormat("arcface", 112, (0.105, 0.197, 0.895, 0.986)),
    ChipFormat("openface", 96, (-0.099, -0.219, 1.088, 0.971)),
)


def chip_format(image_rgb: npt.NDArray[np.uint8]) -> ChipFormat | None:
    """The pre-aligned format whose size ``image_rgb`` has, or None."""
    height, width = image_rgb.shape[:2]
    for candidate in CHIP_FORMATS:
        if height == width == candidate.size_px:
            return candidate
    return None
