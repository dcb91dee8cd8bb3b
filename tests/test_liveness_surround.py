"""The surround-motion cue (pipeline/liveness/surround.py) on frames built from real photos: a
hand-held sheet carrying a face region in front of a still scene, a head-like region moving
alone, a panning camera, a featureless room. The motions are known, so the expected outcome of
each case is clear-cut; the judge's use of the cue is covered in test_liveness.py."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from calibration.liveness_dataset import SCENE_PHOTOS
from pipeline.images import read_image_bgr
from pipeline.liveness.surround import (
    SurroundMeasurement,
    border_view,
    camera_is_still,
    measure_surround,
    surround_live_probability,
)

FRAME = (640, 480)
FACE_BOX = np.array([270, 170, 370, 290], np.float32)  # 100 x 120 px in the middle
Image = npt.NDArray[np.uint8]


@pytest.fixture(scope="module")
def scene(shared_data: Path) -> Image:
    """A textured still background (a street photo), the frame's size."""
    photo = read_image_bgr(shared_data / "style" / "content" / SCENE_PHOTOS[2])
    return np.asarray(cv2.resize(photo, FRAME, interpolation=cv2.INTER_AREA), np.uint8)


@pytest.fixture(scope="module")
def sheet(shared_data: Path) -> Image:
    """A photo with a face (the printed sheet or phone picture): 400 x 440 px, so it reaches
    well past the near-surround bands around ``FACE_BOX`` when centred on it."""
    photo = read_image_bgr(shared_data / "faces" / "face_recognition" / "examples" / "obama.jpg")
    return np.asarray(cv2.resize(photo, (400, 440), interpolation=cv2.INTER_AREA), np.uint8)


def _placed(
    angle_degrees: float, shift: tuple[float, float], size: tuple[int, int]
) -> npt.NDArray[np.float64]:
    """Homography putting a ``size`` (w, h) image centred on ``FACE_BOX``, turned and shifted."""
    centre = (
        (FACE_BOX[0] + FACE_BOX[2]) / 2 + shift[0],
        (FACE_BOX[1] + FACE_BOX[3]) / 2 + shift[1],
    )
    turn = np.asarray(
        cv2.getRotationMatrix2D((size[0] / 2, size[1] / 2), angle_degrees, 1.0), np.float64
    )
    turn[:, 2] += np.array(centre) - np.array(size) / 2
    return np.vstack([turn, [0.0, 0.0, 1.0]])


def _composite(
    background: Image, plane: Image, homography: npt.NDArray[np.float64], noise_seed: int
) -> Image:
    """``plane`` warped by ``homography`` over ``background``, plus sensor noise."""
    warped = cv2.warpPerspective(plane, homography, FRAME).astype(np.float32)
    coverage = cv2.warpPerspective(np.ones(plane.shape[:2], np.float32), homography, FRAME)
    frame = background * (1 - coverage[:, :, None]) + warped * coverage[:, :, None]
    noise = np.random.default_rng(noise_seed).normal(0, 2.0, frame.shape)
    return np.clip(frame + noise, 0, 255).astype(np.uint8)


def _frames(
    backgrounds: tuple[Image, Image],
    plane: Image,
    then: npt.NDArray[np.float64],
    now: npt.NDArray[np.float64],
) -> tuple[Image, Image]:
    """``plane`` placed by ``then`` over ``backgrounds[0]``, and by ``now`` over
    ``backgrounds[1]``."""
    return _composite(backgrounds[0], plane, then, 1), _composite(backgrounds[1], plane, now, 2)


def test_a_hand_held_sheet_carries_its_surround(scene: Image, sheet: Image) -> None:
    """The sheet turns and slides in front of a still street: the near surround (on the
    sheet) moves as one rigid object, so nearly all of it is "carried"."""
    size = (sheet.shape[1], sheet.shape[0])
    then, now = _placed(0.0, (0, 0), size), _placed(4.0, (9, -5), size)
    before, after = _frames((scene, scene), sheet, then, now)
    assert camera_is_still(border_view(before), border_view(after))
    measurement = measure_surround(before, after, FACE_BOX)
    assert measurement is not None
    assert measurement.carried_fraction > 0.9, measurement
    probability = surround_live_probability([measurement])
    assert probability is not None
    assert probability < 0.1


def test_a_screen_replaying_a_moving_head_still_carries_its_surround(
    scene: Image, sheet: Image
) -> None:
    """A hand-held screen whose picture changes around the face (the replayed head moves
    within it): the cue does not use the face's motion, so the surround is still carried."""
    size = (sheet.shape[1], sheet.shape[0])
    then, now = _placed(0.0, (0, 0), size), _placed(4.0, (9, -5), size)
    replayed = sheet.copy()
    replayed[140:320, 125:275] = np.roll(sheet[140:320, 125:275], (6, 8), axis=(0, 1))
    before = _composite(scene, sheet, then, 1)
    after = _composite(scene, replayed, now, 2)
    measurement = measure_surround(before, after, FACE_BOX)
    assert measurement is not None
    assert measurement.carried_fraction > 0.85, measurement


def test_a_passer_by_on_one_side_is_not_carried(scene: Image, sheet: Image) -> None:
    """Something textured moving beside the face on one side only (another person walking
    past) is not one object around the face: nothing is carried."""
    passer = sheet[:, :110]
    size = (passer.shape[1], passer.shape[0])
    then = _placed(0.0, (-130, 0), size)
    now = _placed(0.0, (-118, 2), size)
    before, after = _frames((scene, scene), passer, then, now)
    measurement = measure_surround(before, after, FACE_BOX)
    assert measurement is not None
    assert measurement.carried == 0, measurement


def test_a_head_moving_alone_leaves_its_surround_still(scene: Image, sheet: Image) -> None:
    """Only the face region (with a hair margin) moves; the street around it stays: the
    surround is "still", which is no evidence either way (P(live) 0.5, not more)."""
    head = sheet[140:320, 125:275]  # the middle of the picture: about the face box, 1.5x
    size = (head.shape[1], head.shape[0])
    then, now = _placed(0.0, (0, 0), size), _placed(4.0, (9, -5), size)
    before, after = _frames((scene, scene), head, then, now)
    assert camera_is_still(border_view(before), border_view(after))
    measurement = measure_surround(before, after, FACE_BOX)
    assert measurement is not None
    assert measurement.carried_fraction < 0.1, measurement
    assert surround_live_probability([measurement]) == 0.5


def test_a_moving_camera_or_a_featureless_room_is_not_still(scene: Image, sheet: Image) -> None:
    """When the whole frame moves (a panning camera), or the frame's border has no corners to
    track (a blank wall), a carried surround cannot be told from camera motion: the judge
    takes no surround measurement then."""
    size = (sheet.shape[1], sheet.shape[0])
    then, now = _placed(0.0, (0, 0), size), _placed(4.0, (9, -5), size)
    pan = np.array([[1.0, 0.0, 9.0], [0.0, 1.0, -5.0], [0.0, 0.0, 1.0]])
    panned_scene = np.asarray(
        cv2.warpPerspective(scene, pan, FRAME, borderMode=cv2.BORDER_REFLECT), np.uint8
    )
    panned = _frames((scene, panned_scene), sheet, then, now)
    assert not camera_is_still(border_view(panned[0]), border_view(panned[1]))
    blank = np.full_like(scene, 128)
    walls = _frames((blank, blank), sheet, then, now)
    assert not camera_is_still(border_view(walls[0]), border_view(walls[1]))


def test_surround_probability_is_spoof_evidence_only() -> None:
    """P(live) never exceeds 0.5, falls with the median carried fraction, and is None
    without measurements."""
    assert surround_live_probability([]) is None
    probabilities = [
        value
        for carried in range(11)
        if (value := surround_live_probability([SurroundMeasurement(carried, 10 - carried)]))
        is not None
    ]
    assert len(probabilities) == 11
    assert all(value <= 0.5 for value in probabilities)
    assert probabilities[0] == probabilities[5] == 0.5
    assert probabilities == sorted(probabilities, reverse=True)
    assert probabilities[10] < 0.05
