"""Face quality: how usable each encoded face is, measured once, where its chip is aligned.

From the ``dlib5`` landmarks (points 0-1 and 2-3: the corners of each eye, 4: the base of the
nose): the inter-ocular distance (pixels), a yaw proxy (the nose's offset from the eyes'
midpoint along the eye line, over the inter-ocular distance) and the roll of the eye line; from
the aligned 150x150 chip: sharpness (variance of the Laplacian of its grey image) and exposure
(mean grey level, share of clipped pixels); and the detector's score. A door lets an encoding
vote only when its quality passes the door's minimums (``pipeline.access.policy``).
"""

from __future__ import annotations

import cv2
import numpy as np

from engines.errors import InputSpecError
from pipeline.types import FaceChips, Faces, Quality

__all__ = ["encoding_rank", "face_quality"]

_DARK_LEVEL = 5  # grey levels at or below this count as clipped to black
_BRIGHT_LEVEL = 250  # ... at or above this, clipped to white


def encoding_rank(quality: Quality) -> float:
    """How good one encoded face is to keep (an unknown track's best encodings, largest first):
    the inter-ocular distance (px) times frontalness (1 - 2 yaw, clipped to 0..1: 0 in profile),
    the measure the tracker ranks faces by (``track.face_qualities``: size times frontalness)."""
    return quality.interocular_px * min(1.0, max(0.0, 1.0 - 2.0 * quality.yaw))


def face_quality(faces: Faces, chips: FaceChips) -> tuple[Quality, ...]:
    """One ``Quality`` per face: row i of ``faces`` (image pixels) was aligned into chip i
    (RGB uint8 150x150)."""
    if len(faces) != len(chips):
        raise InputSpecError(f"face_quality: {len(faces)} faces but {len(chips)} chips")
    if faces.landmark_scheme != "dlib5":
        raise InputSpecError(f"no face quality for landmark scheme {faces.landmark_scheme!r}")
    qualities = []
    for points, score, chip in zip(faces.landmarks, faces.scores, chips.chips, strict=True):
        first_eye = points[0:2].mean(axis=0)
        second_eye = points[2:4].mean(axis=0)
        eye_line = second_eye - first_eye
        interocular = float(np.linalg.norm(eye_line))
        unit = eye_line / max(interocular, 1e-6)
        along = float(np.dot(points[4] - (first_eye + second_eye) / 2, unit))
        grey = cv2.cvtColor(np.ascontiguousarray(chip), cv2.COLOR_RGB2GRAY)
        laplacian = cv2.Laplacian(grey, cv2.CV_64F)
        roll = float(np.degrees(np.arctan2(eye_line[1], eye_line[0])))
        # the eye points' order is not fixed across detectors: fold roll into -90..90
        roll = (roll + 90.0) % 180.0 - 90.0
        qualities.append(
            Quality(
                interocular_px=interocular,
                sharpness=float(laplacian.var()),
                yaw=abs(along) / max(interocular, 1e-6),
                roll_degrees=roll,
                brightness=float(grey.mean()),
                clipped_fraction=float(np.mean((grey <= _DARK_LEVEL) | (grey >= _BRIGHT_LEVEL))),
                detector_score=float(score),
            )
        )
    return tuple(qualities)
