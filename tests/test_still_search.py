"""Faces without context (issue 21): tight crops, small crops and pre-aligned chips are found by
the still-image searches (``pipeline.recognition.detect.still``) and give the descriptor of the
full photo,
while non-face images and bad input give no face.

The crops and chips are cut at test time from the photos of ../shared/data/faces (skipped
without it), never stored: a tight crop is the face box plus 0-15 % margin, a small crop that
crop at 40-70 px, and the chips follow dlib's get_face_chip (150 px), the ArcFace template
(112 px) and OpenFace's outer-eyes-and-nose template (96 px).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import dlib
import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from calibration.degrade import SMALL_CROP_PX, Degradation, degrade
from engines.convert.parity import read_rgb
from engines.store import ModelStore
from pipeline.config.service import FaceStreamConfig
from pipeline.errors import EnrollmentRejectedError
from pipeline.images import decode_image
from pipeline.metrics import PipelineMetrics
from pipeline.recognition.align import FaceAligner
from pipeline.recognition.analyzer import FaceAnalyzer
from pipeline.recognition.encode import FaceEncoder
from pipeline.recognition.enroll import EnrollConfig, enrollment_template
from pipeline.service.app import open_analyzer
from pipeline.types import Faces

TAU = 0.6  # the service's default match distance
PHOTOS = 6  # one photo of each of this many people
# ArcFace's 112 px template (eye centres, nose tip) and OpenFace's 96 px outer-eyes-and-nose
# template (outer eye corners, nose base: AlignDlib's mean face, min-max normalised)
ARCFACE_POINTS = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366]], np.float32)
OPENFACE_POINTS = np.array([[0.1942, 0.1693], [0.7889, 0.1581], [0.4949, 0.5144]], np.float32) * 96
CROPS: dict[str, Degradation] = {"crop": "crop", "small_crop": "small_crop"}
NON_FACE_PHOTOS = (
    "faces/dlib_faces/dogs.jpg",
    "style/content/chelsea.png",
    "style/content/coffee.png",
    "style/content/golden_gate.jpg",
    "style/content/hubble_deep_field.jpg",
    "style/content/rocket.jpg",
    "style/content/tubingen.jpg",
)


@pytest.fixture(scope="module")
def analyzer(session_store: ModelStore) -> Iterator[FaceAnalyzer]:
    """The service's detect + align + encode (BlazeFace full range, default still searches)."""
    with open_analyzer(FaceStreamConfig(data_dir=session_store.data_dir)) as built:
        yield built


@pytest.fixture(scope="module")
def photos(shared_data: Path) -> list[npt.NDArray[np.uint8]]:
    """One single-face photo of each of the first ``PHOTOS`` people of labels.csv."""
    faces_dir = shared_data / "faces"
    seen: set[str] = set()
    chosen = []
    with (faces_dir / "labels.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row["n_faces"] != "1" or row["duplicate_of"] or row["identity"] in seen:
                continue
            seen.add(row["identity"])
            chosen.append(read_rgb(faces_dir / row["path"]))
            if len(chosen) == PHOTOS:
                break
    return chosen


def _main_face(analyzer: FaceAnalyzer, photo: npt.NDArray[np.uint8]) -> Faces:
    faces = analyzer.detector.detect(photo)
    assert len(faces), "the full photo's face is found by one pass"
    return faces.select([0])


def _chip(photo: npt.NDArray[np.uint8], face: Faces, kind: str) -> npt.NDArray[np.uint8]:
    """A pre-aligned chip of ``face`` in the format ``kind``."""
    points = face.landmarks[0]  # dlib5: image-right eye corners, image-left eye corners, nose
    if kind == "dlib150":
        box = dlib.rectangle(*(round(float(value)) for value in face.boxes[0]))
        parts = [dlib.point(round(float(x)), round(float(y))) for x, y in points]
        shape = dlib.full_object_detection(box, parts)
        return np.asarray(dlib.get_face_chip(photo, shape, 150, 0.25), np.uint8)
    if kind == "arcface112":
        eyes_nose = np.array([points[2:4].mean(0), points[0:2].mean(0), points[4]], np.float32)
        matrix, _ = cv2.estimateAffinePartial2D(eyes_nose, ARCFACE_POINTS)
        return np.asarray(cv2.warpAffine(photo, matrix, (112, 112)), np.uint8)
    matrix = cv2.getAffineTransform(
        np.array([points[2], points[0], points[4]], np.float32), OPENFACE_POINTS
    )
    return np.asarray(cv2.warpAffine(photo, matrix, (96, 96)), np.uint8)


def _crop(
    photo: npt.NDArray[np.uint8], face: Faces, condition: Degradation, key: str
) -> npt.NDArray[np.uint8]:
    box = tuple(float(value) for value in face.boxes[0])
    width = box[2] - box[0]
    return degrade(photo, condition, face_width_px=width, key=key, face_box_px=box)


def _distance(first: npt.NDArray[np.float32], second: npt.NDArray[np.float32]) -> float:
    return float(np.linalg.norm(first.astype(np.float64) - second.astype(np.float64)))


@pytest.mark.parametrize("kind", ["crop", "small_crop", "dlib150", "arcface112", "openface96"])
def test_faces_without_context_are_found_and_match_the_full_photo(
    analyzer: FaceAnalyzer, photos: list[npt.NDArray[np.uint8]], kind: str
) -> None:
    """Every tight crop, small crop and chip of the six photos gives exactly one face whose
    descriptor is within tau of the full photo's."""
    for index, photo in enumerate(photos):
        face = _main_face(analyzer, photo)
        if kind in CROPS:
            image = _crop(photo, face, CROPS[kind], key=f"photo{index}")
        else:
            image = _chip(photo, face, kind)
        full = analyzer.analyze(photo).embeddings.vectors[0]
        found = analyzer.analyze(image)
        assert len(found) == 1, (kind, index, image.shape)
        distance = _distance(found.embeddings.vectors[0], full)
        assert distance <= TAU, (kind, index, found.faces.found_by, distance)


def test_each_format_is_found_by_its_search(
    analyzer: FaceAnalyzer, photos: list[npt.NDArray[np.uint8]]
) -> None:
    """An OpenFace crop (the face fills it, chin and brow cut) is found as a ``chip``, with
    landmarks inside it; a small crop that one pass misses is ``upscaled`` or ``padded``,
    never made a ``chip`` (its size is no chip format). The video path (``detect``) finds
    neither OpenFace crop: it has no still search."""
    detector = analyzer.detector
    for index, photo in enumerate(photos):
        face = _main_face(analyzer, photo)
        openface = _chip(photo, face, "openface96")
        assert len(detector.detect(openface)) == 0
        found = detector.detect_still(openface)
        assert found.found_by == "chip"
        assert np.all((found.landmarks >= 0) & (found.landmarks <= 96))
        small = _crop(photo, face, "small_crop", key=f"photo{index}")
        if not len(detector.detect(small)):
            assert detector.detect_still(small).found_by in ("upscaled", "padded", "hog")


def test_found_face_is_counted_by_search(
    session_store: ModelStore, analyzer: FaceAnalyzer, photos: list[npt.NDArray[np.uint8]]
) -> None:
    """``facestream_still_images_total{found_by}`` counts each analysed image once, by the
    search that found its face, and ``none`` for an image without one."""
    metrics = PipelineMetrics.create()
    counted = FaceAnalyzer(
        analyzer.detector,
        FaceAligner(),
        FaceEncoder(analyzer.encoder.engine, metrics),
        metrics=metrics,
    )
    photo = photos[0]
    counted.analyze(photo)
    counted.analyze(_chip(photo, _main_face(analyzer, photo), "openface96"))
    counted.analyze(np.full((240, 320, 3), 90, np.uint8))

    def count(found_by: str) -> float | None:
        return metrics.registry.get_sample_value(
            "facestream_still_images_total", {"found_by": found_by}
        )

    assert count("blazeface") == 1
    assert count("chip") == 1
    assert count("none") == 1


def _non_face_views(shared_data: Path) -> Iterator[tuple[str, npt.NDArray[np.uint8]]]:
    """Each non-face photo whole, and seeded square crops of it at chip sizes and small sizes."""
    generator = np.random.default_rng(21)
    for name in NON_FACE_PHOTOS:
        image = read_rgb(shared_data / name)
        yield name, image
        for size in (150, 112, 96, 50, 240):
            for _ in range(3):
                side = int(generator.uniform(0.15, 0.6) * min(image.shape[:2]))
                top = int(generator.integers(0, image.shape[0] - side + 1))
                left = int(generator.integers(0, image.shape[1] - side + 1))
                crop = np.ascontiguousarray(image[top : top + side, left : left + side])
                resized = np.asarray(cv2.resize(crop, (size, size)), np.uint8)
                yield f"{name}@{left},{top}/{size}", resized


def test_no_face_in_non_face_images_and_their_crops(
    analyzer: FaceAnalyzer, shared_data: Path
) -> None:
    """dlib's dogs.jpg and six non-face photos, whole and cut into crops of the chip sizes
    (150, 112, 96), of a small crop (50) and 240 px, 16 views each: no search finds a face."""
    false = [
        name
        for name, view in _non_face_views(shared_data)
        if len(analyzer.detector.detect_still(view))
    ]
    assert false == []


def _animated_gif() -> bytes:
    frames = [Image.new("RGB", (64, 48), colour) for colour in ("red", "green", "blue")]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=80)
    return buffer.getvalue()


def _two_half_faces(
    photos: list[npt.NDArray[np.uint8]], analyzer: FaceAnalyzer
) -> npt.NDArray[np.uint8]:
    """The right half of one person's tight crop beside the left half of another's: a crop
    cut between two faces."""
    halves = []
    for index, side in ((0, "right"), (1, "left")):
        face = _main_face(analyzer, photos[index])
        crop = _crop(photos[index], face, "crop", key=f"half{index}")
        square = np.asarray(cv2.resize(crop, (160, 160)), np.uint8)
        halves.append(square[:, 80:] if side == "right" else square[:, :80])
    return np.ascontiguousarray(np.concatenate(halves, axis=1))


BAD_INPUTS: dict[str, Callable[[], npt.NDArray[np.uint8]]] = {
    "1x1": lambda: np.full((1, 1, 3), 128, np.uint8),
    "10x10": lambda: np.full((10, 10, 3), 200, np.uint8),
    "one colour 640x480": lambda: np.full((480, 640, 3), (40, 90, 160), np.uint8),
    "one colour chip 150x150": lambda: np.full((150, 150, 3), 170, np.uint8),
    "strip 20000x20": lambda: np.random.default_rng(3).integers(0, 255, (20, 20000, 3), np.uint8),
    "animated GIF": lambda: decode_image(_animated_gif(), name="anim.gif"),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_is_no_face(analyzer: FaceAnalyzer, name: str) -> None:
    """Tiny, flat, strip-shaped and animated images: no face, and enrolment refuses them with
    reason ``no_face`` (never a crash, never a made-up face)."""
    image = BAD_INPUTS[name]()
    assert len(analyzer.analyze(image)) == 0
    with pytest.raises(EnrollmentRejectedError) as refused:
        enrollment_template(analyzer, image, EnrollConfig())
    assert refused.value.reason == "no_face"


def test_two_half_faces_are_no_face(
    analyzer: FaceAnalyzer, photos: list[npt.NDArray[np.uint8]]
) -> None:
    """A crop of two half faces (each cut through the middle) is not completed into a face."""
    image = _two_half_faces(photos, analyzer)
    assert len(analyzer.analyze(image)) == 0


@pytest.mark.parametrize("condition", ["crop", "small_crop"])
def test_crop_conditions_cut_around_the_face(condition: Degradation) -> None:
    """``crop`` keeps the face box and at most 15 % of its width around it; ``small_crop`` is
    40-70 px wide; both are repeatable for the same key and seed."""
    image = np.random.default_rng(0).integers(0, 255, (480, 640, 3), np.uint8)
    box = (200.0, 100.0, 400.0, 320.0)
    made = [
        degrade(image, condition, face_width_px=200, key="k", face_box_px=box) for _ in range(2)
    ]
    np.testing.assert_array_equal(made[0], made[1])
    height, width = made[0].shape[:2]
    if condition == "crop":
        assert 200 <= width <= 200 * 1.3 + 1
        assert 220 <= height <= 220 + 2 * 0.15 * 200 + 1
    else:
        assert SMALL_CROP_PX[0] - 1 <= width <= SMALL_CROP_PX[1] + 1
