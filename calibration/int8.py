"""Build the INT8 face encoder from a folder of photos, and prove what it costs in accuracy.

``collect_calibration_chips`` cuts aligned chips out of every face in a folder with the
service's own detector and aligner, so calibration sees the pixels the encoder will see
(150x150 images are taken as chips already aligned). ``build_int8_encoder`` turns them into an
ONNX Runtime QDQ model in the store (``engines.quantize``). ``compare_int8`` runs the fp32 and
int8 encoders on the same chips: cosine similarity of the descriptors, and verification
accuracy on labelled pairs, both at the service's tau and at each model's best tau.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from calibration.embed import FaceEmbedding, ImageEmbeddings, load_image, score_pairs
from calibration.pairs import PairSet
from calibration.threshold import PipelineResult, ThresholdSettings, evaluate_pipeline
from engines.base import Engine
from engines.convert.dlib_resnet import CHIP_SIZE_PX
from engines.convert.parity import image_files
from engines.errors import CalibrationSetError
from engines.models.encoder import build_encoder_onnx
from engines.quantize import FaceChipDataset, QuantizeSettings, quantize_encoder
from engines.store import ModelStore, StoredModel
from pipeline.recognition.align import FaceAligner
from pipeline.recognition.analyzer import FaceDetector
from pipeline.recognition.detect.blazeface import BlazeFaceConfig
from pipeline.recognition.detect.factory import DlibHogConfig, load_detector

__all__ = [
    "Int8ParityReport",
    "build_int8_encoder",
    "collect_calibration_chips",
    "compare_int8",
    "descriptor_cosines",
    "encode_dataset",
]

_log = logging.getLogger(__name__)


def collect_calibration_chips(
    folder: Path, detector: FaceDetector, aligner: FaceAligner, *, max_chips: int = 1024
) -> FaceChipDataset:
    """Aligned chips of every face in the images under ``folder`` (recursively), at most
    ``max_chips``; an image of exactly 150x150 pixels is taken as an aligned chip as it is."""
    paths = image_files([folder])
    if not paths:
        raise CalibrationSetError(f"{folder}: no image files (.jpg, .png, ...) to calibrate with")
    chips: list[npt.NDArray[np.uint8]] = []
    for path in paths:
        image = load_image(path)
        if image.shape[:2] == (CHIP_SIZE_PX, CHIP_SIZE_PX):
            chips.append(image)
        else:
            chips.extend(aligner.align(image, detector.detect(image)).chips)
        if len(chips) >= max_chips:
            break
    if not chips:
        raise CalibrationSetError(f"{folder}: no face found in {len(paths)} images")
    _log.info("calibration set: %d chips from %d images in %s", len(chips), len(paths), folder)
    return FaceChipDataset(np.stack(chips[:max_chips]).astype(np.uint8))


def build_int8_encoder(
    store: ModelStore,
    calib_dir: Path,
    settings: QuantizeSettings | None = None,
    *,
    detect: DlibHogConfig | BlazeFaceConfig | None = None,
    force: bool = False,
) -> StoredModel:
    """The INT8 encoder in ``store``, calibrated on the faces in ``calib_dir``.

    The fp32 encoder is converted first if needed; ``detect`` is the detector that finds the
    faces (default: the service's default, BlazeFace full-range). CalibrationSetError when
    ``calib_dir`` yields fewer chips than ``settings.min_chips`` (32 by default).
    """
    fp32 = build_encoder_onnx(store)
    detector = load_detector(detect or BlazeFaceConfig(), store)
    try:
        dataset = collect_calibration_chips(calib_dir, detector, FaceAligner())
    finally:
        detector.close()
    return quantize_encoder(store, fp32, dataset, settings, force=force)


def encode_dataset(
    engine: Engine, dataset: FaceChipDataset, *, batch_size: int = 16
) -> npt.NDArray[np.float32]:
    """Descriptors of every chip of ``dataset`` by ``engine``: float32 (N, 128)."""
    (input_name,) = engine.inputs
    (output_name,) = engine.outputs
    outputs = [
        np.asarray(engine.infer({input_name: batch})[output_name], np.float32)
        for batch in dataset.batches(batch_size)
    ]
    return np.concatenate(outputs)


def descriptor_cosines(
    reference: npt.NDArray[np.float32], candidate: npt.NDArray[np.float32]
) -> npt.NDArray[np.float64]:
    """Row-wise cosine similarity of two (N, 128) descriptor arrays: float64 (N,)."""
    first, second = reference.astype(np.float64), candidate.astype(np.float64)
    norms = np.linalg.norm(first, axis=1) * np.linalg.norm(second, axis=1)
    return np.asarray(np.sum(first * second, axis=1) / np.maximum(norms, 1e-12), np.float64)


@dataclass(frozen=True, slots=True)
class Int8ParityReport:
    """int8 vs fp32 on the same chips and pairs (accuracy as fractions 0..1)."""

    fp32_model_id: str
    int8_model_id: str
    n_chips: int
    cosine_min: float
    cosine_mean: float
    max_euclidean: float
    fp32: PipelineResult | None
    int8: PipelineResult | None

    @property
    def accuracy_drop_points(self) -> float | None:
        """fp32 minus int8 accuracy at the service tau, in percentage points."""
        if self.fp32 is None or self.int8 is None:
            return None
        return (self.fp32.reference.accuracy - self.int8.reference.accuracy) * 100

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        drop = self.accuracy_drop_points
        return {
            "fp32_model_id": self.fp32_model_id,
            "int8_model_id": self.int8_model_id,
            "n_chips": self.n_chips,
            "cosine_min": round(self.cosine_min, 6),
            "cosine_mean": round(self.cosine_mean, 6),
            "max_euclidean": round(self.max_euclidean, 6),
            "fp32": None if self.fp32 is None else self.fp32.as_dict(),
            "int8": None if self.int8 is None else self.int8.as_dict(),
            "accuracy_drop_points": None if drop is None else round(drop, 4),
        }


def _pair_chips(
    pairs: PairSet, detector: FaceDetector, aligner: FaceAligner
) -> dict[Path, npt.NDArray[np.uint8] | None]:
    """The largest face's chip of every image of ``pairs`` (None where none is found)."""
    found: dict[Path, npt.NDArray[np.uint8] | None] = {}
    for path in pairs.images:
        image = load_image(path)
        faces = detector.detect(image)
        found[path] = aligner.align(image, faces.select([0])).chips[0] if len(faces) else None
    return found


def _embeddings(
    name: str, engine: Engine, chips: dict[Path, npt.NDArray[np.uint8] | None]
) -> ImageEmbeddings:
    present = {path: chip for path, chip in chips.items() if chip is not None}
    with_face = list(present)
    stacked = np.stack([present[path] for path in with_face]).astype(np.uint8)
    vectors = encode_dataset(engine, FaceChipDataset(stacked))
    by_image: dict[Path, FaceEmbedding | None] = dict.fromkeys(chips)
    for path, vector in zip(with_face, vectors, strict=True):
        by_image[path] = FaceEmbedding(vector, float("nan"))
    return ImageEmbeddings(name, "clean", by_image)


def compare_int8(
    fp32_engine: Engine,
    int8_engine: Engine,
    chips: FaceChipDataset,
    *,
    pairs: PairSet | None = None,
    detector: FaceDetector | None = None,
    settings: ThresholdSettings | None = None,
) -> Int8ParityReport:
    """Cosine similarity of int8 vs fp32 descriptors on ``chips``, and, when ``pairs`` and
    ``detector`` are given, verification figures of both on the pairs (faces detected and
    aligned once, then encoded by each engine)."""
    reference = encode_dataset(fp32_engine, chips)
    candidate = encode_dataset(int8_engine, chips)
    cosines = descriptor_cosines(reference, candidate)
    euclidean = np.linalg.norm(reference.astype(np.float64) - candidate, axis=1)
    fp32_result = int8_result = None
    if pairs is not None and detector is not None:
        settings = settings or ThresholdSettings(bootstrap_resamples=10)
        pair_chips = _pair_chips(pairs, detector, FaceAligner())
        results = []
        for name, engine in (("fp32", fp32_engine), ("int8", int8_engine)):
            results.append(
                evaluate_pipeline(
                    score_pairs(pairs, _embeddings(name, engine, pair_chips)),
                    pipeline=f"facestream-{name}",
                    condition="clean",
                    reference_tau=settings.service_tau,
                    settings=settings,
                )
            )
        fp32_result, int8_result = results
    return Int8ParityReport(
        fp32_model_id=fp32_engine.model_id,
        int8_model_id=int8_engine.model_id,
        n_chips=len(chips),
        cosine_min=float(cosines.min()),
        cosine_mean=float(cosines.mean()),
        max_euclidean=float(euclidean.max()),
        fp32=fp32_result,
        int8=int8_result,
    )
