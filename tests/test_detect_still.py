"""The still-image search of the detectors (``detect_still``): faces too small or too dark for
one pass of BlazeFace are found on a contrast-normalised copy searched whole and in tiles, while
frames without faces stay empty and the per-frame ``detect`` is unchanged.

Faces come from scikit-image's astronaut (public domain), shrunk and pasted on a grey 640x480
frame as a face far from a door camera; negatives are flat and noisy frames and dlib's dogs.jpg
(../shared/data, skipped without it).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from pydantic import ValidationError

from calibration.degrade import Degradation, degrade
from engines.convert.parity import astronaut_rgb, read_rgb
from engines.models.detector import build_detector_onnx, load_detector_engine
from engines.runtime.onnxrt import OrtSettings
from engines.store import ModelStore
from pipeline.config.service import FaceStreamConfig
from pipeline.recognition.detect.blazeface import (
    BlazeFaceConfig,
    BlazeFaceDetector,
    StillFallbackConfig,
)
from pipeline.recognition.detect.factory import DlibHogConfig, DlibHogDetector
from pipeline.recognition.detect.still import normalise_contrast, still_tiles
from pipeline.service.app import open_analyzer

FRAME_WH = (640, 480)
PASTE_XY = (300, 100)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    """A store holding BlazeFace full range."""
    store = ModelStore(tmp_path_factory.mktemp("still"))
    build_detector_onnx(store, "blazeface_full")
    return store


def _detector(store: ModelStore, fallback: StillFallbackConfig) -> BlazeFaceDetector:
    config = BlazeFaceConfig(still_fallback=fallback)
    engine = load_detector_engine(store, config.model, OrtSettings(intra_op_threads=2))
    return BlazeFaceDetector(config, engine)


@pytest.fixture(scope="module")
def detector(store: ModelStore) -> Iterator[BlazeFaceDetector]:
    """BlazeFace full range with the default still-image fallback."""
    built = _detector(store, StillFallbackConfig())
    yield built
    built.close()


@pytest.fixture(scope="module")
def astronaut_box(detector: BlazeFaceDetector) -> npt.NDArray[np.float32]:
    """The astronaut's face box in her own 512x512 photo (found by the normal pass)."""
    faces = detector.detect(astronaut_rgb())
    assert len(faces) == 1
    return np.asarray(faces.boxes[0], np.float32)


def _far_face(
    box: npt.NDArray[np.float32], face_px: float
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.float32]]:
    """The astronaut shrunk until her face is ``face_px`` wide, pasted on a grey 640x480 frame;
    returns the frame and where her face box lands in it."""
    scale = face_px / float(box[2] - box[0])
    side = round(512 * scale)
    shrunk = cv2.resize(astronaut_rgb(), (side, side), interpolation=cv2.INTER_AREA)
    frame = np.full((FRAME_WH[1], FRAME_WH[0], 3), 118, np.uint8)
    left, top = PASTE_XY
    frame[top : top + side, left : left + side] = shrunk
    expected = box * (side / 512) + np.array([left, top, left, top], np.float32)
    return frame, expected.astype(np.float32)


def _assert_found_at(faces: Any, expected: npt.NDArray[np.float32]) -> None:
    """One face, its box centre within 20 % and its width within 25 % of the expected face's
    width, its landmarks inside the expected box grown by 20 %."""
    assert len(faces) == 1
    width = float(expected[2] - expected[0])
    centre = (faces.boxes[0, :2] + faces.boxes[0, 2:]) / 2
    np.testing.assert_allclose(centre, (expected[:2] + expected[2:]) / 2, atol=0.2 * width)
    assert abs(float(faces.widths_px[0]) - width) <= 0.25 * width
    grown = expected + np.array([-1, -1, 1, 1], np.float32) * 0.2 * width
    assert np.all(faces.landmarks[0] >= grown[:2])
    assert np.all(faces.landmarks[0] <= grown[2:])


@pytest.mark.parametrize("face_px", [30, 35])
def test_far_face_is_found_only_by_the_still_search(
    detector: BlazeFaceDetector, astronaut_box: npt.NDArray[np.float32], face_px: int
) -> None:
    """A 30-35 px face on a 640x480 frame: one pass of full range misses it (the network sees
    it ~10 px wide); the still-image search finds it where it was pasted."""
    frame, expected = _far_face(astronaut_box, face_px)
    assert len(detector.detect(frame)) == 0
    faces = detector.detect_still(frame)
    _assert_found_at(faces, expected)
    assert faces.scores[0] >= detector.config.still_fallback.score_threshold


@pytest.mark.parametrize("conditions", [("dark",), ("dark", "noise")])
def test_dark_far_face_is_found(
    detector: BlazeFaceDetector,
    astronaut_box: npt.NDArray[np.float32],
    conditions: tuple[Degradation, ...],
) -> None:
    """A 28 px face at night (calibration's ``dark``: gamma 2.2, 60 % gain), and with sensor
    noise on top (sigma 15), is found by the still search, not by one pass."""
    frame, expected = _far_face(astronaut_box, 28)
    for condition in conditions:
        frame = degrade(frame, condition, face_width_px=28, key="astronaut")
    assert len(detector.detect(frame)) == 0
    _assert_found_at(detector.detect_still(frame), expected)


def test_disabled_fallback_is_one_pass(
    store: ModelStore, astronaut_box: npt.NDArray[np.float32]
) -> None:
    """With ``still_fallback.enabled = false`` a still image gets exactly ``detect``."""
    off = _detector(store, StillFallbackConfig(enabled=False))
    try:
        frame, _ = _far_face(astronaut_box, 35)
        assert len(off.detect_still(frame)) == 0
    finally:
        off.close()


def test_found_face_skips_the_search(
    detector: BlazeFaceDetector, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the normal pass finds a face, ``detect_still`` returns its answer and runs the
    network once (found by "blazeface"); when it finds none, the padded search runs once, then
    the tiled search one batch: the frame and every tile."""
    calls: list[int] = []
    infer = detector.engine.infer

    def counting(inputs: dict[str, Any]) -> Any:
        calls.append(next(iter(inputs.values())).shape[0])
        return infer(inputs)

    monkeypatch.setattr(detector.engine, "infer", counting)
    image = astronaut_rgb()
    still, once = detector.detect_still(image), detector.detect(image)
    np.testing.assert_array_equal(still.boxes, once.boxes)
    np.testing.assert_array_equal(still.landmarks, once.landmarks)
    assert still.found_by == "blazeface"
    assert calls == [1, 1]
    calls.clear()
    assert len(detector.detect_still(np.full((480, 640, 3), 118, np.uint8))) == 0
    fallback = detector.config.still_fallback
    tiles = still_tiles(480, 640, across=fallback.tiles, overlap=fallback.tile_overlap)
    assert calls == [1, 1, 1 + len(tiles)]


def _noise_frame(seed: int) -> npt.NDArray[np.uint8]:
    noisy = np.random.default_rng(seed).normal(118, 15, (480, 640, 3))
    return np.clip(np.round(noisy), 0, 255).astype(np.uint8)


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(np.full((480, 640, 3), 118, np.uint8), id="grey"),
        pytest.param(np.zeros((480, 640, 3), np.uint8), id="black"),
        pytest.param(_noise_frame(0), id="noise-0"),
        pytest.param(_noise_frame(1), id="noise-1"),
    ],
)
def test_frames_without_faces_stay_empty(
    detector: BlazeFaceDetector, frame: npt.NDArray[np.uint8]
) -> None:
    """Flat, black and sensor-noise frames give no face, even after the full search."""
    assert len(detector.detect_still(frame)) == 0


@pytest.mark.parametrize("condition", [None, *get_args(Degradation)])
def test_no_face_in_dogs_photo(
    detector: BlazeFaceDetector, shared_data: Path, condition: Degradation | None
) -> None:
    """dlib's dogs.jpg holds no human face: none is found in it or in its degraded copies."""
    image = read_rgb(shared_data / "faces/dlib_faces/dogs.jpg")
    if condition is not None:
        image = degrade(image, condition, face_width_px=image.shape[1] / 4, key="dogs")
    assert len(detector.detect_still(image)) == 0


def test_hog_still_is_detect() -> None:
    """dlib's HOG has no fallback: ``detect_still`` gives the same faces as ``detect``."""
    hog = DlibHogDetector(DlibHogConfig(upsample=0))
    image = astronaut_rgb()
    np.testing.assert_array_equal(hog.detect_still(image).boxes, hog.detect(image).boxes)


def test_analyser_searches_still_images_and_video_stays_one_pass(
    session_store: ModelStore, astronaut_box: npt.NDArray[np.float32]
) -> None:
    """``FaceAnalyzer.analyze`` (enrolment, identify/verify, calibration) finds a 35 px face
    that the one-pass ``detect`` of the video path misses."""
    frame, expected = _far_face(astronaut_box, 35)
    with open_analyzer(FaceStreamConfig(data_dir=session_store.data_dir)) as analyzer:
        assert len(analyzer.detector.detect(frame)) == 0
        analyzed = analyzer.analyze(frame)
    _assert_found_at(analyzed.faces, expected)
    assert len(analyzed.embeddings) == 1


@pytest.mark.parametrize(
    ("height", "width", "across"),
    [(480, 640, 2), (640, 480, 2), (720, 1280, 2), (3000, 4000, 3), (300, 300, 1), (90, 2000, 2)],
)
def test_tiles_cover_the_frame_and_hold_every_small_face(
    height: int, width: int, across: int
) -> None:
    """Tiles are inside the frame, square where the frame allows, ``across`` of them span the
    shorter side, they cover every pixel, and any box up to the overlap wide lies whole inside
    one of them (so a face on a seam is seen whole)."""
    overlap = 0.25
    tiles = still_tiles(height, width, across=across, overlap=overlap)
    covered = np.zeros((height, width), np.bool_)
    for left, top, right, bottom in tiles:
        assert 0 <= left < right <= width
        assert 0 <= top < bottom <= height
        assert right - left == bottom - top or min(height, width) < max(right - left, bottom - top)
        covered[top:bottom, left:right] = True
    assert covered.all()
    side = max(right - left for left, _, right, _ in tiles)
    if side < min(height, width):  # square tiles: ``across`` of them span the shorter side
        starts = {top for _, top, _, _ in tiles} if height <= width else {x for x, *_ in tiles}
        assert len(starts) == across
    face = int(0.95 * overlap * side)
    for y in range(0, height - face, max(1, height // 37)):
        for x in range(0, width - face, max(1, width // 37)):
            assert any(
                left <= x and x + face <= right and top <= y and y + face <= bottom
                for left, top, right, bottom in tiles
            ), (x, y, face)


def test_tiles_refuse_bad_geometry() -> None:
    """No tiles across, or an overlap of a whole tile, is a ValueError."""
    with pytest.raises(ValueError, match="across"):
        still_tiles(480, 640, across=0, overlap=0.25)
    with pytest.raises(ValueError, match="overlap"):
        still_tiles(480, 640, across=2, overlap=1.0)


def test_normalise_contrast_lifts_dark_frames() -> None:
    """A night-time copy of the astronaut (mean luminance ~17 %) comes back above 30 %, the
    same shape and type; a well-exposed photo keeps its mean within 15 grey levels."""
    image = astronaut_rgb()
    dark = degrade(image, "dark", face_width_px=100, key="astronaut")

    def luma(rgb: npt.NDArray[np.uint8]) -> float:
        return float(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).mean())

    lifted = normalise_contrast(dark)
    assert lifted.shape == dark.shape
    assert lifted.dtype == np.uint8
    assert luma(dark) < 0.2 * 255 < 0.3 * 255 < luma(lifted)
    assert abs(luma(normalise_contrast(image)) - luma(image)) < 15


def test_still_fallback_config() -> None:
    """Defaults on; ``[detect.still_fallback]`` reads from the config file's shape; unknown
    keys and out-of-range values are refused."""
    config = FaceStreamConfig.model_validate(
        {"detect": {"still_fallback": {"tiles": 3, "score_threshold": 0.8}}}
    )
    assert isinstance(config.detect, BlazeFaceConfig)
    assert config.detect.still_fallback.tiles == 3
    assert config.detect.still_fallback.score_threshold == 0.8
    assert BlazeFaceConfig().still_fallback.enabled
    for bad in ({"tiles": 0}, {"tile_overlap": 0.9}, {"score_threshold": 1.0}, {"tile": 2}):
        with pytest.raises(ValidationError):
            StillFallbackConfig.model_validate(bad)
