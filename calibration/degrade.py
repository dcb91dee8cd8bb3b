"""Degraded copies of face photos, as a door camera sees them: small, dark, noisy, compressed.

Each condition is deterministic for a given image, seed and face width, so a run can be
repeated. ``small`` shrinks the photo until the face is ``SMALL_FACE_PX`` wide (30-50 px,
chosen per image from the seed) and pastes it on a grey 640x480 frame, as a face far from the
camera; ``dark`` is a night-time exposure (gamma 2.2, 60 % gain); ``noise`` adds Gaussian sensor
noise (sigma 15 grey levels); ``jpeg`` re-encodes at quality 15; ``all`` applies all four in
that order. ``crop`` cuts the face box out with a margin of ``CROP_MARGIN`` (0-15 % of the box
width per side, drawn per image), as ID-badge crops and faces exported by other systems come;
``small_crop`` is that crop shrunk to ``SMALL_CROP_PX`` (40-70 px wide), a CCTV-sized face that
is the whole image. Both need the face box (``face_box_px``; where none is known, the centred
square half the shorter side wide stands in).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Literal, get_args

import cv2
import numpy as np
import numpy.typing as npt

from engines.errors import ConfigError

__all__ = [
    "CROP_MARGIN",
    "DEGRADATIONS",
    "SMALL_CROP_PX",
    "SMALL_FACE_PX",
    "Degradation",
    "degrade",
    "parse_degradations",
]

Degradation = Literal["small", "dark", "noise", "jpeg", "all", "crop", "small_crop"]
DEGRADATIONS: tuple[str, ...] = get_args(Degradation)
SMALL_FACE_PX = (30, 50)  # face widths (px) of a person a few metres from a door camera
CROP_MARGIN = (0.0, 0.15)  # margin per side around the face box, fraction of its width
SMALL_CROP_PX = (40, 70)  # widths of a small tight crop
_CANVAS_PX = (640, 480)
_GREY = 118
_DARK_GAMMA = 2.2
_DARK_GAIN = 0.6
_NOISE_SIGMA = 15.0
_JPEG_QUALITY = 15


def parse_degradations(text: str) -> tuple[Degradation, ...]:
    """``"small,dark"`` -> ("small", "dark"); ConfigError naming the valid ones otherwise."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in DEGRADATIONS]
    if unknown:
        raise ConfigError(
            f"unknown degradation {', '.join(unknown)}; valid: {', '.join(DEGRADATIONS)}"
        )
    return tuple(name for name in names if name in DEGRADATIONS)  # type: ignore[misc]  # narrowed above


def _image_seed(seed: int, key: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(key.encode())) & 0xFFFFFFFF


def _small(
    image: npt.NDArray[np.uint8], face_width_px: float, generator: np.random.Generator
) -> npt.NDArray[np.uint8]:
    target = generator.uniform(*SMALL_FACE_PX)
    scale = min(1.0, target / max(face_width_px, 1.0))
    height, width = image.shape[:2]
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    shrunk = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    canvas_width, canvas_height = _CANVAS_PX
    if size[0] > canvas_width or size[1] > canvas_height:
        return np.ascontiguousarray(shrunk, dtype=np.uint8)  # already frame-sized: keep it whole
    canvas = np.full((canvas_height, canvas_width, 3), _GREY, np.uint8)
    top, left = (canvas_height - size[1]) // 2, (canvas_width - size[0]) // 2
    canvas[top : top + size[1], left : left + size[0]] = shrunk
    return canvas


def _dark(image: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    levels = (np.arange(256) / 255.0) ** _DARK_GAMMA * _DARK_GAIN * 255.0
    table = np.clip(np.round(levels), 0, 255).astype(np.uint8)
    return table[image]


def _noise(image: npt.NDArray[np.uint8], generator: np.random.Generator) -> npt.NDArray[np.uint8]:
    noisy = image.astype(np.float32) + generator.normal(0.0, _NOISE_SIGMA, image.shape)
    return np.clip(np.round(noisy), 0, 255).astype(np.uint8)


def _jpeg(image: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY])
    if not ok:
        raise ConfigError("OpenCV could not JPEG-encode the degraded image")
    decoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
    if decoded is None:
        raise ConfigError("OpenCV could not decode its own JPEG of the degraded image")
    return np.ascontiguousarray(cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB), dtype=np.uint8)


def _crop(
    image: npt.NDArray[np.uint8],
    face_box_px: Sequence[float] | None,
    generator: np.random.Generator,
) -> npt.NDArray[np.uint8]:
    height, width = image.shape[:2]
    if face_box_px is None:
        half = min(height, width) / 4
        face_box_px = (width / 2 - half, height / 2 - half, width / 2 + half, height / 2 + half)
    left, top, right, bottom = (float(value) for value in face_box_px)
    margin = generator.uniform(*CROP_MARGIN) * (right - left)
    x1, y1 = max(0, round(left - margin)), max(0, round(top - margin))
    x2, y2 = min(width, round(right + margin)), min(height, round(bottom + margin))
    if x2 - x1 < 2 or y2 - y1 < 2:  # a box outside the image: keep the whole image
        return image
    return np.ascontiguousarray(image[y1:y2, x1:x2])


def _shrunk_crop(
    cropped: npt.NDArray[np.uint8], generator: np.random.Generator
) -> npt.NDArray[np.uint8]:
    height, width = cropped.shape[:2]
    scale = generator.uniform(*SMALL_CROP_PX) / width
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    interpolation = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    return np.ascontiguousarray(cv2.resize(cropped, size, interpolation=interpolation))


def degrade(
    image_rgb: npt.NDArray[np.uint8],
    condition: Degradation,
    *,
    face_width_px: float,
    key: str,
    seed: int = 0,
    face_box_px: Sequence[float] | None = None,
) -> npt.NDArray[np.uint8]:
    """A degraded copy of ``image_rgb`` (RGB uint8 HxWx3) under ``condition``.

    face_width_px: width of the photo's main face in pixels (sets the ``small`` scale); key:
    a stable name of the image (its path), which with ``seed`` fixes the random draws;
    face_box_px: x1, y1, x2, y2 of the main face (``crop`` and ``small_crop`` cut it out).
    """
    generator = np.random.default_rng(_image_seed(seed, f"{condition}:{key}"))
    if condition in ("crop", "small_crop"):
        cropped = _crop(image_rgb, face_box_px, generator)
        return cropped if condition == "crop" else _shrunk_crop(cropped, generator)
    if condition == "small":
        return _small(image_rgb, face_width_px, generator)
    if condition == "dark":
        return _dark(image_rgb)
    if condition == "noise":
        return _noise(image_rgb, generator)
    if condition == "jpeg":
        return _jpeg(image_rgb)
    return _jpeg(_noise(_dark(_small(image_rgb, face_width_px, generator)), generator))
