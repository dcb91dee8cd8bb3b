"""One image -> its faces, aligned chips and embeddings: detect, align, encode in order."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from pipeline.metrics import PipelineMetrics
from pipeline.recognition.align import FaceAligner
from pipeline.recognition.encode import FaceEncoder
from pipeline.types import Embeddings, FaceChips, Faces

__all__ = ["AnalyzedFaces", "FaceAnalyzer", "FaceDetector"]


class FaceDetector(Protocol):
    """Anything that finds faces with 5 landmarks in an RGB image."""

    def detect(self, image_rgb: npt.NDArray[np.uint8]) -> Faces:
        """Faces in ``image_rgb`` (RGB uint8 HxWx3), largest first: one pass (video frames)."""
        ...

    def detect_still(self, image_rgb: npt.NDArray[np.uint8]) -> Faces:
        """Faces in the still image ``image_rgb``, largest first; may search harder than
        ``detect`` when it finds none (``detect.still_fallback``)."""
        ...


@dataclass(frozen=True, slots=True)
class AnalyzedFaces:
    """Faces of one image with their chips and embeddings, row i describing face i."""

    faces: Faces
    chips: FaceChips
    embeddings: Embeddings

    def __len__(self) -> int:
        return len(self.faces)


class FaceAnalyzer:
    """Detect, align and encode every face of an image."""

    def __init__(
        self,
        detector: FaceDetector,
        aligner: FaceAligner,
        encoder: FaceEncoder,
        *,
        metrics: PipelineMetrics | None = None,
    ) -> None:
        self.detector = detector
        self.aligner = aligner
        self.encoder = encoder
        self._metrics = metrics  # counts which still search found each image's faces

    @property
    def model_id(self) -> str:
        """The encoder's model id, carried by every embedding."""
        return self.encoder.model_id

    def analyze(self, image_rgb: npt.NDArray[np.uint8]) -> AnalyzedFaces:
        """Faces, chips and embeddings of the still image ``image_rgb`` (RGB uint8 HxWx3),
        largest face first; faces come from ``detect_still`` (video frames use ``detect``)."""
        faces = self.detector.detect_still(image_rgb)
        if self._metrics is not None:
            found_by = faces.found_by if len(faces) else "none"
            self._metrics.still_images.labels(found_by=found_by).inc()
        chips = self.aligner.align(image_rgb, faces)
        return AnalyzedFaces(faces, chips, self.encoder.encode(chips))
