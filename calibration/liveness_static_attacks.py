"""A second, differently built attack generator: devices and prints on a stand that fill the
frame, filmed by a still camera (the attacks the still-person path must refuse).

``calibration.liveness_attacks`` (the first generator) moves a small sheet or screen by hand in
front of a scene, with RGB sub-pixel stripes, paper grain and fibres. This one shares none of
its code and makes other choices, so that a figure holding on both says more than one holding on
either (each is still only evidence about itself):

- *static*: the device or print stands still (a stand, a tripod, leaned on the camera); at most
  a sub-pixel tremor. No surround cue can see a hand; no parallax measurement is made.
- *fills the frame*: the shown picture covers 80-100% of the frame's width, so little or no
  room is visible; a bezel (screens) or paper margin (prints) shows on some sides only;
- *screens*: square pixels with a black matrix between them (no RGB stripes) rendered at three
  camera pixels per panel pixel and area-sampled down (moire), a backlight vignette, a
  limited gamut (colours mixed toward their grey), a fixed specular glare (a soft blob and a
  faint reflected window);
- *prints*: an amplitude-modulated halftone (a rotated dot screen per ink, no grain), a gloss
  glare, the lighting gradient of a lamp;
- *camera*: per-frame sensor noise and 4:2:0 chroma subsampling, an H.264-like JPEG round trip.

Every random draw comes from the ``numpy.random.Generator`` passed in (a seed reproduces a clip).
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from calibration.liveness_attacks import Clip

__all__ = ["static_print_attack", "static_replay_attack"]

Image = npt.NDArray[np.uint8]
_PANEL_SUPERSAMPLE = 3  # camera pixels per panel pixel while rendering the panel


def _fill_geometry(
    rng: np.random.Generator, frame_size: tuple[int, int], aspect: float
) -> tuple[int, int, int, int]:
    """Left, top, width, height of the shown picture: 80-100% of the frame's width (it may run
    past the frame's edges), placed at random, of the picture's aspect (width / height)."""
    width, height = frame_size
    shown_width = round(width * rng.uniform(0.8, 1.0))
    shown_height = round(shown_width / aspect)
    left = round(rng.uniform(0, width - shown_width))
    top = round(rng.uniform(min(0, height - shown_height), max(0, height - shown_height)))
    return left, top, shown_width, shown_height


def _glare(
    shape: tuple[int, int], rng: np.random.Generator, strength: float
) -> npt.NDArray[np.float32]:
    """An additive specular glare (0..255 scale): a soft blob and a faint reflected window."""
    height, width = shape
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    centre_x, centre_y = rng.uniform(0.1, 0.9) * width, rng.uniform(0.05, 0.6) * height
    radius = rng.uniform(0.08, 0.25) * width
    blob = np.exp(-((xs - centre_x) ** 2 + (ys - centre_y) ** 2) / (2 * radius**2))
    window = np.zeros(shape, np.float32)
    x0, y0 = round(rng.uniform(0, 0.7) * width), round(rng.uniform(0, 0.5) * height)
    window[y0 : y0 + height // 4, x0 : x0 + width // 5] = 0.25
    window = np.asarray(cv2.GaussianBlur(window, (0, 0), 6), np.float32)
    glare: npt.NDArray[np.float32] = (strength * (blob + window)).astype(np.float32)
    return glare


def _camera_frame(scene: npt.NDArray[np.float32], rng: np.random.Generator, quality: int) -> Image:
    """Sensor noise, 4:2:0 chroma subsampling and a JPEG round trip of a float BGR frame."""
    noisy = scene + rng.normal(0, 2.5, scene.shape).astype(np.float32)
    image = np.clip(noisy, 0, 255).astype(np.uint8)
    ycrcb = cv2.cvtColor(image, cv2.COLOR_BGR2YCrCb)
    height, width = image.shape[:2]
    for channel in (1, 2):
        small = cv2.resize(
            ycrcb[:, :, channel], (width // 2, height // 2), interpolation=cv2.INTER_AREA
        )
        ycrcb[:, :, channel] = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
    image = np.asarray(cv2.cvtColor(ycrcb, cv2.COLOR_YCrCb2BGR), np.uint8)
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    decoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR) if ok else image
    return np.ascontiguousarray(decoded, dtype=np.uint8)


def _place(
    picture: npt.NDArray[np.float32],
    geometry: tuple[int, int, int, int],
    frame_size: tuple[int, int],
    surround: float,
    tremor: npt.NDArray[np.float64],
) -> npt.NDArray[np.float32]:
    """The frame: ``picture`` (float BGR, already at its shown size) at ``geometry`` shifted by a
    sub-pixel ``tremor``, on a flat ``surround`` grey (a bezel or paper margin beyond it)."""
    left, top, _, _ = geometry
    matrix = np.array([[1, 0, left + tremor[0]], [0, 1, top + tremor[1]]], np.float64)
    width, height = frame_size
    frame = cv2.warpAffine(
        picture,
        matrix,
        (width, height),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(surround, surround, surround),
    )
    return np.asarray(frame, np.float32)


def _panel(
    shown: Image, size: tuple[int, int], rng: np.random.Generator
) -> npt.NDArray[np.float32]:
    """One screen image at ``size`` (width, height) camera pixels: square panel pixels with a
    black matrix, area-sampled by the camera, gamut and backlight of a cheap panel."""
    width, height = size
    panel = cv2.resize(
        shown, (max(width // _PANEL_SUPERSAMPLE, 1), max(height // _PANEL_SUPERSAMPLE, 1))
    )
    fine = cv2.resize(
        panel, (panel.shape[1] * 4, panel.shape[0] * 4), interpolation=cv2.INTER_NEAREST
    ).astype(np.float32)
    fine[3::4, :] *= 0.15  # the black matrix between panel pixels
    fine[:, 3::4] *= 0.15
    seen = cv2.resize(fine, (width, height), interpolation=cv2.INTER_AREA)
    grey = seen.mean(axis=2, keepdims=True)
    gamut = float(rng.uniform(0.7, 0.9))
    seen = grey + gamut * (seen - grey)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    vignette = 1.0 - 0.25 * (((xs / width - 0.5) ** 2 + (ys / height - 0.5) ** 2) * 2)
    result: npt.NDArray[np.float32] = seen * vignette[:, :, None] * float(rng.uniform(0.85, 1.1))
    return result


def static_replay_attack(
    shown: tuple[Image, ...],
    *,
    frame_count: int,
    fps: float,
    frame_size: tuple[int, int] = (640, 480),
    rng: np.random.Generator,
    source: str = "",
) -> Clip:
    """A screen on a stand filling the frame, replaying ``shown`` (frames of a bona fide clip,
    looped, or one still) with a fixed glare; label ``replay_static``."""
    aspect = shown[0].shape[1] / shown[0].shape[0]
    geometry = _fill_geometry(rng, frame_size, aspect)
    glare = _glare((geometry[3], geometry[2]), rng, float(rng.uniform(20, 70)))
    quality = round(rng.uniform(70, 92))
    frames = []
    for index in range(frame_count):
        picture = _panel(shown[index % len(shown)], (geometry[2], geometry[3]), rng)
        picture = picture + glare[:, :, None]
        tremor = rng.normal(0, 0.15, 2)
        frames.append(
            _camera_frame(_place(picture, geometry, frame_size, 12.0, tremor), rng, quality)
        )
    return Clip(tuple(frames), fps, "replay_static", source)


def _halftone(photo: Image, rng: np.random.Generator) -> npt.NDArray[np.float32]:
    """An amplitude-modulated halftone of ``photo`` (float BGR 0..255): per ink (C, M, Y as the
    complements of R, G, B), a dot screen at its own angle, ink coverage = darkness."""
    height, width = photo.shape[:2]
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    period = float(rng.uniform(2.5, 4.0))
    printed = np.empty((height, width, 3), np.float32)
    for channel, angle in zip((0, 1, 2), (0.26, 1.31, 0.79), strict=True):
        u = xs * np.cos(angle) + ys * np.sin(angle)
        v = -xs * np.sin(angle) + ys * np.cos(angle)
        screen = 0.5 + 0.25 * (np.cos(2 * np.pi * u / period) + np.cos(2 * np.pi * v / period))
        darkness = 1.0 - photo[:, :, channel].astype(np.float32) / 255.0
        ink = cv2.GaussianBlur((darkness > screen).astype(np.float32), (0, 0), 0.6)
        printed[:, :, channel] = 245.0 * (1.0 - 0.85 * ink)
    return printed


def static_print_attack(
    photo_bgr: Image,
    *,
    frame_count: int,
    fps: float,
    frame_size: tuple[int, int] = (640, 480),
    rng: np.random.Generator,
    source: str = "",
) -> Clip:
    """A halftone print of ``photo_bgr`` on a stand filling the frame, under a lamp with a
    gloss glare; label ``print_static``."""
    aspect = photo_bgr.shape[1] / photo_bgr.shape[0]
    geometry = _fill_geometry(rng, frame_size, aspect)
    scale = 2  # print at twice the shown size, so the dots are finer than camera pixels
    big = np.asarray(cv2.resize(photo_bgr, (geometry[2] * scale, geometry[3] * scale)), np.uint8)
    printed = cv2.resize(
        _halftone(big, rng), (geometry[2], geometry[3]), interpolation=cv2.INTER_AREA
    )
    ys = np.linspace(0, 1, geometry[3], dtype=np.float32)[:, None, None]
    lamp = float(rng.uniform(0.75, 1.0)) - float(rng.uniform(0.0, 0.3)) * ys
    picture = printed * lamp + _glare((geometry[3], geometry[2]), rng, 40.0)[:, :, None]
    quality = round(rng.uniform(70, 92))
    frames = []
    for _ in range(frame_count):
        tremor = rng.normal(0, 0.15, 2)
        frame = _place(picture.astype(np.float32), geometry, frame_size, 230.0, tremor)
        frames.append(_camera_frame(frame, rng, quality))
    return Clip(tuple(frames), fps, "print_static", source)
