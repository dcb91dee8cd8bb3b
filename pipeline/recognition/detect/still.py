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

The later searches, inside the image, use ``normalise_contrast`` (the image with its luminance
normalised) and ``still_tiles`` (the overlapping square tiles it is searched in).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from pipeline.types import require_array

__all__ = [
    "CHIP_FORMATS",
    "ChipFormat",
    "View",
    "chip_format",
    "normalise_contrast",
    "padded_view",
    "shrunk_view",
    "still_tiles",
]


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


_DARK_MEAN = 0.35  # mean luminance (0..1) below which a frame is lifted by a gamma
_LIFT_TARGET = 0.45  # ... so that its mean lands here
_MIN_GAMMA = 1 / 3
_CLAHE_CLIP = 2.0
_CLAHE_GRID = (8, 8)
_MAX_TILES_ALONG = 4  # tiles along the longer side, per tile across the shorter one


def normalise_contrast(image_rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """A copy of ``image_rgb`` (RGB uint8 HxWx3) with its luminance normalised, colours kept.

    On luminance (Y of YCrCb) only: a 3x3 median (removes sensor noise and JPEG speckle,
    keeps edges), then, when the mean is below 35 %, a gamma that brings it to 45 % (at most
    a cube root), then CLAHE (contrast-limited adaptive histogram equalisation, clip 2, 8x8).
    """
    require_array("image", image_rgb, dtype=np.uint8, shape=(None, None, 3))
    ycrcb = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2YCrCb)
    luma = cv2.medianBlur(np.ascontiguousarray(ycrcb[:, :, 0]), 3)
    mean = float(luma.mean()) / 255.0
    if mean < _DARK_MEAN:
        gamma = max(_MIN_GAMMA, math.log(_LIFT_TARGET) / math.log(max(mean, 1e-3)))
        levels = (np.arange(256, dtype=np.float64) / 255.0) ** gamma * 255.0
        luma = np.clip(np.round(levels), 0, 255).astype(np.uint8)[luma]
    clahe = cv2.createCLAHE(clipLimit=_CLAHE_CLIP, tileGridSize=_CLAHE_GRID)
    ycrcb[:, :, 0] = clahe.apply(luma)
    return np.asarray(cv2.cvtColor(ycrcb, cv2.COLOR_YCrCb2RGB), dtype=np.uint8)


def _tile_starts(length: int, tile: int, stride: float) -> list[int]:
    if length <= tile:
        return [0]
    # a stride up to 2 % longer than asked (overlap a little smaller) rather than one more tile
    # for a pixel of rounding
    count = math.ceil((length - tile) / (stride * 1.02)) + 1
    return [round(index * (length - tile) / (count - 1)) for index in range(count)]


def still_tiles(
    height: int, width: int, *, across: int, overlap: float
) -> list[tuple[int, int, int, int]]:
    """Overlapping square tiles (x1, y1, x2, y2, frame pixels) covering a height x width frame.

    ``across`` tiles span the shorter side, neighbours sharing ``overlap`` of a tile; the
    longer side gets as many as it needs at the same stride (at most 4 per tile across, the
    tiles growing beyond that), spread evenly so the last one ends at the edge.
    """
    if across < 1 or not 0.0 <= overlap < 1.0:
        raise ValueError(f"tiles need across >= 1 and 0 <= overlap < 1, got {across}, {overlap}")
    stride_share = 1.0 - overlap
    short, long = min(height, width), max(height, width)
    side = short / (1.0 + (across - 1) * stride_share)
    side = max(side, long / (1.0 + (_MAX_TILES_ALONG * across - 1) * stride_share))
    tile = max(1, min(round(side), long))
    stride = tile * stride_share
    return [
        (left, top, min(width, left + tile), min(height, top + tile))
        for top in _tile_starts(height, tile, stride)
        for left in _tile_starts(width, tile, stride)
    ]
