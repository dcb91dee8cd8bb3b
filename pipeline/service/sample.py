"""A sample recording and gallery made from a public-domain photo, for demos and smoke runs.

The photo is NASA's portrait of astronaut Eileen Collins (public domain), shipped by
scikit-image as ``skimage.data.astronaut()``. The video is a slow pan and zoom over it with
sensor noise, so the face moves, changes size and is re-detected frame after frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from engines.convert.parity import astronaut_rgb
from engines.store import atomic_write

__all__ = ["SampleFiles", "make_sample"]

_SIZE_PX = (640, 360)
_FPS = 25.0


@dataclass(frozen=True, slots=True)
class SampleFiles:
    """Where the sample video and its one-person gallery folder were written."""

    video: Path
    gallery: Path


def make_sample(directory: Path, *, seconds: float = 6.0, seed: int = 0) -> SampleFiles:
    """Write ``astronaut.mp4`` (640x360, 25 fps) and ``gallery/eileen_collins/`` under
    ``directory``; existing files are replaced."""
    photo_rgb = astronaut_rgb()
    photo_bgr = np.ascontiguousarray(photo_rgb[:, :, ::-1])
    gallery = directory / "gallery" / "eileen_collins"
    gallery.mkdir(parents=True, exist_ok=True)
    # the enrolment photo is the head and shoulders only: one face, nothing else face-like
    ok, encoded = cv2.imencode(".png", photo_bgr[0:300, 60:380])
    if not ok:
        raise RuntimeError("OpenCV could not encode the sample photo as PNG")
    atomic_write(gallery / "astronaut.png", encoded.tobytes())
    # a wide canvas so the pan has somewhere to go
    canvas = cv2.copyMakeBorder(photo_bgr, 0, 0, 256, 256, cv2.BORDER_REFLECT)
    video = directory / "astronaut.mp4"
    partial = video.with_name(".astronaut.mp4.tmp.mp4")
    writer = cv2.VideoWriter(str(partial), cv2.VideoWriter.fourcc(*"mp4v"), _FPS, _SIZE_PX)
    rng = np.random.default_rng(seed)
    frames = round(seconds * _FPS)
    for index in range(frames):
        phase = index / max(frames - 1, 1)
        zoom = 1.0 + 0.6 * np.sin(np.pi * phase)  # in, then out
        height = canvas.shape[0] / zoom
        width = height * _SIZE_PX[0] / _SIZE_PX[1]
        left = (canvas.shape[1] - width) * (0.2 + 0.6 * phase)
        top = (canvas.shape[0] - height) * 0.3
        crop = canvas[int(top) : int(top + height), int(left) : int(left + width)]
        frame = cv2.resize(crop, _SIZE_PX, interpolation=cv2.INTER_AREA).astype(np.int16)
        noise = np.asarray(rng.normal(0.0, 4.0, size=frame.shape), dtype=np.int16)
        frame += noise  # sensor noise
        writer.write(np.clip(frame, 0, 255).astype(np.uint8))
    writer.release()
    partial.replace(video)
    return SampleFiles(video=video, gallery=directory / "gallery")
