"""Detect + align + encode end to end, against face_recognition (dlib) on the same images."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from engines.convert.parity import astronaut_rgb, read_rgb
from engines.runtime.onnxrt import OrtEngine
from engines.store import ModelStore
from pipeline.metrics import PipelineMetrics
from pipeline.recognition.align import FaceAligner
from pipeline.recognition.analyzer import FaceDetector
from pipeline.recognition.detect.blazeface import BlazeFaceConfig
from pipeline.recognition.detect.factory import DlibHogConfig, DlibHogDetector, load_detector
from pipeline.recognition.encode import FaceEncoder
from pipeline.types import Embeddings, FaceChips

MAX_WIDTH_PX = 1600  # keeps full-resolution HOG (what face_recognition does) fast enough


@pytest.fixture(scope="module")
def detector() -> DlibHogDetector:
    """HOG at full resolution with one upsample: face_recognition's default detector."""
    return DlibHogDetector(DlibHogConfig(upsample=1, detect_width_px=7680, min_face_px=8))


def _ours(
    detector: FaceDetector, encoder: FaceEncoder, image: npt.NDArray[np.uint8]
) -> tuple[npt.NDArray[np.float32], Embeddings]:
    faces = detector.detect(image)
    return faces.boxes, encoder.encode(FaceAligner().align(image, faces))


def _single_face_images(shared_data: Path, limit: int) -> list[Path]:
    rows = csv.DictReader((shared_data / "faces" / "labels.csv").open())
    paths = [
        shared_data / "faces" / row["path"]
        for row in rows
        if row["n_faces"] == "1" and not row["duplicate_of"]
    ]
    small = [path for path in paths if read_rgb(path).shape[1] <= MAX_WIDTH_PX]
    return small[:limit]


def test_matches_face_recognition_on_real_photos(
    detector: DlibHogDetector, ort_engine: OrtEngine, shared_data: Path
) -> None:
    """Our descriptor of each face is within 0.02 (median) of face_recognition.face_encodings."""
    face_recognition = pytest.importorskip("face_recognition", reason="baseline package")
    encoder = FaceEncoder(ort_engine, PipelineMetrics.create())
    distances = []
    for path in _single_face_images(shared_data, limit=16):
        image = read_rgb(path)
        boxes, ours = _ours(detector, encoder, image)
        locations = face_recognition.face_locations(image, number_of_times_to_upsample=1)
        theirs = face_recognition.face_encodings(image, locations, model="small")
        for (top, right, bottom, left), reference in zip(locations, theirs, strict=True):
            centre = np.array([(left + right) / 2, (top + bottom) / 2])
            centres = (boxes[:, :2] + boxes[:, 2:]) / 2
            nearest = int(np.argmin(np.linalg.norm(centres - centre, axis=1)))
            distances.append(float(np.linalg.norm(ours.vectors[nearest] - reference)))
    assert len(distances) >= 10
    assert float(np.median(distances)) <= 0.02


def test_astronaut_is_one_face_with_a_descriptor(
    detector: DlibHogDetector, ort_engine: OrtEngine
) -> None:
    """The public-domain astronaut photo gives a face, and its embedding carries the model id."""
    encoder = FaceEncoder(ort_engine, PipelineMetrics.create())
    boxes, embeddings = _ours(detector, encoder, astronaut_rgb())
    assert len(boxes) >= 1
    assert embeddings.vectors.shape == (len(boxes), 128)
    assert embeddings.model_id == ort_engine.model_id


def test_no_face_in_dogs_photo(detector: DlibHogDetector, shared_data: Path) -> None:
    """dlib_faces/dogs.jpg holds dogs only: zero faces."""
    assert len(detector.detect(read_rgb(shared_data / "faces" / "dlib_faces" / "dogs.jpg"))) == 0


def test_many_faces_found_largest_first(detector: DlibHogDetector, shared_data: Path) -> None:
    """A group photo yields several faces, sorted by box width (largest first)."""
    faces = detector.detect(read_rgb(shared_data / "faces" / "dlib_faces" / "bald_guys.jpg"))
    assert len(faces) >= 3
    assert np.all(np.diff(faces.widths_px) <= 0)


def test_downscaled_detection_maps_boxes_back(shared_data: Path) -> None:
    """Detecting on a shrunk copy gives boxes in full-frame pixels, close to full-size ones."""
    image = read_rgb(shared_data / "faces" / "dlib_faces" / "bald_guys.jpg")
    full = DlibHogDetector(DlibHogConfig(upsample=1, detect_width_px=7680)).detect(image)
    shrunk = DlibHogDetector(DlibHogConfig(upsample=1, detect_width_px=image.shape[1] // 2)).detect(
        image
    )
    assert len(shrunk) >= 1
    for box in shrunk.boxes[:3]:
        overlap = np.min(np.linalg.norm(full.boxes[:, :2] - box[:2], axis=1))
        assert overlap < 0.25 * (box[2] - box[0])


def test_encode_splits_large_batches(ort_engine: OrtEngine) -> None:
    """70 chips through max_batch 32 give 70 embeddings and count 70 encoded faces."""
    metrics = PipelineMetrics.create()
    encoder = FaceEncoder(ort_engine, metrics, max_batch=32)
    rng = np.random.default_rng(1)
    chips = FaceChips(rng.integers(0, 255, (70, 150, 150, 3), dtype=np.uint8))
    assert len(encoder.encode(chips)) == 70
    counted = metrics.registry.get_sample_value(
        "facestream_faces_encoded_total",
        {"backend": ort_engine.backend, "model_id": ort_engine.model_id},
    )
    assert counted == 70


@pytest.mark.parametrize("name", ["obama_partial_face.jpg", "obama_partial_face2.jpg"])
def test_face_cut_by_the_frame_edge(
    ort_engine: OrtEngine, session_store: ModelStore, shared_data: Path, name: str
) -> None:
    """A face cut off by the image border still gives a full-size chip and an embedding near
    the same person's whole face (alignment pads outside the image instead of failing)."""
    images = shared_data / "faces" / "face_recognition" / "tests" / "test_images"
    detector = load_detector(BlazeFaceConfig(), session_store)
    encoder = FaceEncoder(ort_engine, PipelineMetrics.create())
    try:
        _, partial = _ours(detector, encoder, read_rgb(images / name))
        _, whole = _ours(detector, encoder, read_rgb(images / "obama.jpg"))
    finally:
        detector.close()
    assert len(partial) >= 1
    assert float(np.linalg.norm(partial.vectors[0] - whole.vectors[0])) < 0.6
