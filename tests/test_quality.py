"""The face quality gate: a ``Quality`` per encoded face (eye distance, sharpness, pose,
exposure, detector score), and a door that lets an encoding vote only when its quality passes
the door's minimums: a small, blurred or turned face leaves the track undecided, never
granted, while a good one votes. Quality thresholds out of range are config errors."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from pydantic import ValidationError

from pipeline.access.policy import DoorConfig, DoorPolicy, passes_quality
from pipeline.recognition.align import FaceAligner
from pipeline.recognition.quality import face_quality
from pipeline.types import Faces, Quality, TrackObservation

GOOD = Quality(
    interocular_px=60.0,
    sharpness=300.0,
    yaw=0.05,
    roll_degrees=2.0,
    brightness=120.0,
    clipped_fraction=0.01,
    detector_score=0.95,
)


def _door() -> DoorConfig:
    # about quality, not liveness: the door opts out of liveness
    return DoorConfig(id="front", cameras=["cam"], required_matches=2, require_liveness=False)


def _seen(quality: Quality, *, track: int, at: float) -> TrackObservation:
    return TrackObservation("cam", track, "ann", "Ann", 0.4, None, at, quality=quality)


@pytest.mark.parametrize(
    "poor",
    [
        {"interocular_px": 12.0},  # small
        {"sharpness": 3.0},  # blurred
        {"yaw": 0.6},  # turned
        {"roll_degrees": -50.0},  # tilted
        {"detector_score": 0.2},
        {"clipped_fraction": 0.8},  # over- or under-exposed
    ],
    ids=lambda poor: next(iter(poor)),
)
def test_a_poor_face_does_not_vote_and_the_track_stays_undecided(poor: dict[str, float]) -> None:
    policy = DoorPolicy([_door()])
    bad = Quality(**{**GOOD.as_dict(), **poor})
    assert not passes_quality(_door(), bad)
    assert [policy.observe(_seen(bad, track=1, at=float(i))) for i in range(10)] == [[]] * 10
    # the same identity with good faces is granted once K good encodings agree
    assert policy.observe(_seen(GOOD, track=2, at=20.0)) == []
    (decision,) = policy.observe(_seen(GOOD, track=2, at=21.0))
    assert decision.outcome == "granted"
    assert decision.votes == 2


def test_poor_faces_between_good_ones_do_not_count_as_votes() -> None:
    policy = DoorPolicy([_door()])
    small = Quality(**{**GOOD.as_dict(), "interocular_px": 10.0})
    assert policy.observe(_seen(GOOD, track=1, at=0.0)) == []
    assert policy.observe(_seen(small, track=1, at=1.0)) == []
    assert policy.observe(_seen(small, track=1, at=2.0)) == []
    assert [d.outcome for d in policy.observe(_seen(GOOD, track=1, at=3.0))] == ["granted"]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("min_interocular_px", -1.0),
        ("min_interocular_px", 5000.0),
        ("min_sharpness", -0.5),
        ("max_yaw", 0.0),
        ("max_yaw", 1.5),
        ("max_roll_degrees", 120.0),
        ("min_detector_score", 1.5),
        ("max_clipped_fraction", 0.0),
    ],
)
def test_a_quality_threshold_out_of_range_is_a_config_error(key: str, value: float) -> None:
    with pytest.raises(ValidationError, match=key):
        DoorConfig.model_validate({"id": "front", "cameras": ["cam"], key: value})


def _dlib_faces(image_rgb: npt.NDArray[np.uint8]) -> Faces:
    """Faces with dlib5 landmarks from dlib's HOG detector and 5-point predictor."""
    dlib = pytest.importorskip("dlib")
    models = pytest.importorskip("face_recognition_models")
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(models.pose_predictor_five_point_model_location())
    rectangles, scores, _ = detector.run(image_rgb, 2)
    boxes, points = [], []
    for rectangle in rectangles:
        shape = predictor(image_rgb, rectangle)
        boxes.append([rectangle.left(), rectangle.top(), rectangle.right(), rectangle.bottom()])
        points.append([[shape.part(i).x, shape.part(i).y] for i in range(5)])
    return Faces(
        boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
        scores=np.clip(np.asarray(scores, np.float32) / 2 + 0.5, 0, 1),
        landmarks=np.asarray(points, np.float32).reshape(-1, 5, 2),
    )


def test_quality_of_a_real_face_falls_when_it_is_small_or_blurred(shared_data: Path) -> None:
    """A real photo's face passes the default gate; the same photo shrunk has its eyes too
    close to vote, and blurred it is too soft to vote."""
    bgr = cv2.imread(
        str(shared_data / "faces" / "face_recognition" / "examples" / "obama-480p.jpg")
    )
    if bgr is None:
        pytest.skip("faces/face_recognition/examples/obama-480p.jpg is not in the shared data")
    image = np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), dtype=np.uint8)
    aligner = FaceAligner()

    def quality_of(picture: npt.NDArray[np.uint8]) -> Quality:
        faces = _dlib_faces(picture)
        assert len(faces) == 1
        (quality,) = face_quality(faces, aligner.align(picture, faces))
        return quality

    door = _door()
    original = quality_of(image)
    assert passes_quality(door, original), original
    assert original.yaw < door.max_yaw
    height, width = image.shape[:2]
    scale = 0.8 * door.min_interocular_px / original.interocular_px
    small = cv2.resize(
        image, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA
    )
    shrunk = quality_of(np.ascontiguousarray(small, dtype=np.uint8))
    blurred = quality_of(np.ascontiguousarray(cv2.GaussianBlur(image, (0, 0), 6.0), dtype=np.uint8))
    assert shrunk.interocular_px < door.min_interocular_px < original.interocular_px
    assert not passes_quality(door, shrunk)
    assert blurred.sharpness < door.min_sharpness < original.sharpness
    assert not passes_quality(door, blurred)
