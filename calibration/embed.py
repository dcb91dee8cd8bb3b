"""Encode the images of labelled pairs once each, and turn pairs into distances.

Two embedders answer "the main face of this photo, as 128 numbers": ``PipelineEmbedder`` runs
facestream's own detect + align + encode (``FaceAnalyzer``); ``FaceRecognitionEmbedder`` runs
face_recognition's (HOG detector with one upsample, dlib's 5 landmarks and encoder), the baseline.
Both take the largest face of a photo. A photo where no face is found has no embedding, and
every pair using it is scored ``inf`` (rejected) and counted. ``PipelineEmbedder`` also returns
the face's ``Quality``, measured by the service's own ``face_quality`` (the door's quality gate
reads the same numbers; ``calibration.quality`` calibrates that gate).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from calibration.degrade import Degradation, degrade
from calibration.errors import PairsFileError
from calibration.pairs import PairSet
from calibration.roc import PairScores
from engines.errors import BackendUnavailableError
from pipeline.images import decode_image
from pipeline.recognition.analyzer import FaceAnalyzer
from pipeline.recognition.quality import face_quality
from pipeline.types import Quality

__all__ = [
    "FaceEmbedder",
    "FaceEmbedding",
    "FaceRecognitionEmbedder",
    "ImageEmbeddings",
    "PipelineEmbedder",
    "ScoredPairs",
    "embed_images",
    "load_image",
    "score_pairs",
]

_log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]  # (images done, images in all)


@dataclass(frozen=True, slots=True)
class FaceEmbedding:
    """The main face of a photo: its descriptor float32 (128,), its box width in pixels and,
    where the embedder reports it, the box x1, y1, x2, y2 (degradations that crop need it) and
    the face's quality as the door's gate sees it (facestream's pipeline only)."""

    vector: npt.NDArray[np.float32]
    face_width_px: float
    face_box_px: tuple[float, float, float, float] | None = None
    quality: Quality | None = None


class FaceEmbedder(Protocol):
    """Anything that finds the main (largest) face of an RGB photo and encodes it."""

    name: str

    def embed(self, image_rgb: npt.NDArray[np.uint8]) -> FaceEmbedding | None:
        """The largest face of ``image_rgb`` (RGB uint8 HxWx3), or None when there is none."""
        ...


class PipelineEmbedder:
    """facestream's detect + align + encode (the service's own ``FaceAnalyzer``)."""

    name = "facestream"

    def __init__(self, analyzer: FaceAnalyzer) -> None:
        self.analyzer = analyzer

    @property
    def model_id(self) -> str:
        """The encoder's model id."""
        return self.analyzer.model_id

    def embed(self, image_rgb: npt.NDArray[np.uint8]) -> FaceEmbedding | None:
        """The largest face's embedding and quality, or None when the detector finds no face."""
        analyzed = self.analyzer.analyze(image_rgb)
        if not len(analyzed):
            return None
        box = analyzed.faces.boxes[0]  # the analyzer puts the largest face first
        left, top, right, bottom = (float(value) for value in box)
        return FaceEmbedding(
            np.asarray(analyzed.embeddings.vectors[0], np.float32),
            right - left,
            (left, top, right, bottom),
            face_quality(analyzed.faces, analyzed.chips)[0],
        )


class FaceRecognitionEmbedder:
    """face_recognition's pipeline, the baseline: HOG (``upsample`` times), largest face, encode.

    The package's ``face_encodings`` would encode every face in detector order; the largest
    face is picked here so both pipelines answer for the same person in a group photo.
    """

    name = "face_recognition"

    def __init__(self, *, upsample: int = 1) -> None:
        try:
            import face_recognition  # noqa: PLC0415  (baseline only; loads dlib models)
        except ImportError as exc:
            raise BackendUnavailableError(
                "the baseline needs face_recognition: pip install --no-deps face_recognition"
            ) from exc
        self._api: Any = face_recognition
        self.upsample = upsample

    def embed(self, image_rgb: npt.NDArray[np.uint8]) -> FaceEmbedding | None:
        """The largest HOG face's face_recognition encoding, or None when HOG finds none."""
        image = np.ascontiguousarray(image_rgb)
        locations = self._api.face_locations(image, number_of_times_to_upsample=self.upsample)
        if not locations:
            return None
        # face_recognition boxes are (top, right, bottom, left)
        top, right, bottom, left = max(
            locations, key=lambda box: (box[2] - box[0]) * (box[1] - box[3])
        )
        (encoding,) = self._api.face_encodings(image, [(top, right, bottom, left)])
        return FaceEmbedding(
            np.asarray(encoding, np.float32),
            float(right - left),
            (float(left), float(top), float(right), float(bottom)),
        )


def load_image(path: Path) -> npt.NDArray[np.uint8]:
    """An image file as RGB uint8 HxWx3, decoded as the service decodes uploads."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PairsFileError(f"{path}: cannot read the image: {exc.strerror}") from exc
    return decode_image(data, name=str(path))


@dataclass(frozen=True, slots=True)
class ImageEmbeddings:
    """One embedder's answer for each image (None: no face), under one condition."""

    embedder: str
    condition: str
    by_image: dict[Path, FaceEmbedding | None]

    @property
    def no_face_images(self) -> tuple[Path, ...]:
        """Images where no face was found."""
        return tuple(path for path, found in self.by_image.items() if found is None)


def embed_images(
    images: Iterable[Path],
    embedder: FaceEmbedder,
    *,
    condition: Degradation | None = None,
    face_widths: ImageEmbeddings | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> ImageEmbeddings:
    """Embed each image once (clean, or a degraded copy under ``condition``).

    face_widths: clean embeddings whose face widths set the ``small`` scale (a quarter of the
    image width where no face was found clean) and whose boxes ``crop`` and ``small_crop`` cut.
    """
    paths = list(images)
    found: dict[Path, FaceEmbedding | None] = {}
    for done, path in enumerate(paths, start=1):
        image = load_image(path)
        if condition is not None:
            clean = face_widths.by_image.get(path) if face_widths is not None else None
            width = clean.face_width_px if clean is not None else image.shape[1] / 4
            image = degrade(
                image,
                condition,
                face_width_px=width,
                key=path.as_posix(),
                seed=seed,
                face_box_px=clean.face_box_px if clean is not None else None,
            )
        found[path] = embedder.embed(image)
        if progress is not None:
            progress(done, len(paths))
    result = ImageEmbeddings(embedder.name, condition or "clean", found)
    _log.info(
        "%s (%s): %d images, no face in %d",
        embedder.name,
        result.condition,
        len(found),
        len(result.no_face_images),
    )
    return result


@dataclass(frozen=True, slots=True)
class ScoredPairs:
    """Distances of every pair (``inf`` where a face is missing) and how many such pairs."""

    scores: PairScores
    no_face_pairs: int
    no_face_images: tuple[Path, ...]


def score_pairs(pairs: PairSet, embeddings: ImageEmbeddings) -> ScoredPairs:
    """Euclidean distance of each pair from ``embeddings`` (which must cover every image)."""
    distances = np.empty(len(pairs), np.float64)
    missing = 0
    for index, pair in enumerate(pairs.pairs):
        first, second = embeddings.by_image[pair.path_a], embeddings.by_image[pair.path_b]
        if first is None or second is None:
            distances[index] = np.inf
            missing += 1
            continue
        difference = first.vector.astype(np.float64) - second.vector.astype(np.float64)
        distances[index] = float(np.linalg.norm(difference))
    same = np.array([pair.same for pair in pairs.pairs], np.bool_)
    used = set(pairs.images)
    no_face = tuple(path for path in embeddings.no_face_images if path in used)
    return ScoredPairs(PairScores(distances, same), missing, no_face)
