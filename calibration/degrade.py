"""Degraded copies of face photos, as a door camera sees them: small, dark, noisy, compressed.

Each condition is deterministic for a given image, seed and face width, so a run can be
repeated. ``small`` shrinks the photo until the face is ``SMALL_FACE_PX`` wide (30-50 px,
chosen per image from the seed) and pastes it on a grey 640x480 frame, as a face far from the
camera; ``dark`` is a night-time exposure (gamma 2.2, 60 % gain); ``noise`` adds Gaussian sensor
noise (sigma 15 grey levels); ``jpeg`` re-encodes at quality 15; ``all`` applies all four in
that order.
"""

from __future__ import annotations

import zlib
from typing import Literal, get_args

import cv2
import numpy as np
import numpy.typing as npt

from engines.errors import ConfigError

__all__ = ["DEGRADATIONS", "SMALL_FACE_PX", "Degradation", "degrade", "parse_degradations"]

Degradation = Literal["small", "dark", "noise", "jpeg", "all"]
DEGRADATIONS: tuple[str, ...] = get_args(Degradation)
SMALL_FACE_PX = (30, 50)  # face widths (px) of a person a few metres from a door camera
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


def degrade(
    image_rgb: npt.NDArray[np.uint8],
    condition: Degradation,
    *,
    face_width_px: float,
    key: str,
    seed: int = 0,
) -> npt.NDArray[np.uint8]:
    """A degraded copy of ``image_rgb`` (RGB uint8 HxWx3) under ``condition``.

    face_width_px: width of the photo's main face in pixels (sets the ``small`` scale); key:
    a stable name of the image (its path), which with ``seed`` fixes the random draws.
    """
    generator = np.random.default_rng(_image_seed(seed, f"{condition}:{key}"))
    if condition == "small":
        return _small(image_rgb, face_width_px, generator)
    if condition == "dark":
        return _dark(image_rgb)
    if condition == "noise":
        return _noise(image_rgb, generator)
    if condition == "jpeg":
        return _jpeg(image_rgb)
    return _jpeg(_noise(_dark(_small(image_rgb, face_width_px, generator)), generator))
