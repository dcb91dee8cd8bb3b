"""Surround-motion cue: is the face carried by something that moves in front of a still scene?

A photo or a phone held up to a door camera is one rigid plane moved by a hand: the paper
margin, the phone's bezel and the rest of the picture around the face all move together, by
one homography, while the room stays still. A real person's surroundings do not move with
them: the wall, door frame or corridor beside and above the head stays put when the camera is
fixed, or everything moves when the camera does. This holds whatever the face itself does, so
it also catches a hand-held screen replaying a video of a moving head, whose parallax is real.

Per measurement, between the frames ``span`` apart that the parallax cue compares:

1. ``camera_is_still``: points along the frame's border (the outer ``_BORDER_SHARE`` of each
   side, on the ``border_view``) are tracked; the camera counts as still when at least
   ``_BORDER_STILL_SHARE`` of them stayed put. A panning camera moves nearly all of them, an
   attack covering part of the border only its own share; too few points to tell (blank
   walls) counts as not still.
2. ``measure_surround``: points in the *near surround* -- bands beside the face 0.35 to 1.1
   face widths out and above it from 0.6 face heights (past ears and hair; nothing below the
   chin, where a real person's own neck and shoulders move with the head) -- are tracked with
   pyramidal Lucas-Kanade (forward-backward checked). One robust (RANSAC) homography is
   fitted to those that moved (more than ``_MIN_MOVE`` face widths); when its inliers lie in
   at least two of the three bands (one object around the face, not a passer-by on one side),
   the moving points it maps are "carried" and the others "still", as are points that stayed
   where it would have moved them; points it would hardly have moved say nothing. Without
   such a homography every tracked point is "still".

The carried fraction is high for a hand-held print or screen and low for a real head. It is
evidence of a spoof only: a low fraction says nothing (a screen on a stand does not move
either), so the cue's P(live) never exceeds 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from pipeline.liveness.parallax import find_corners, grey_patch, track_points

__all__ = [
    "SurroundMeasurement",
    "border_view",
    "camera_is_still",
    "measure_surround",
    "surround_live_probability",
]

_ANALYSIS_FACE_PX = 40.0  # the face is resampled to about this width; the surround is coarse
_REGION_HALF_WIDTHS = 1.6  # the analysed region reaches this many face widths beside the centre
_NEAR_INNER = 0.35  # near bands start this many face widths outside the face box ...
_NEAR_OUTER = 1.1  # ... and end this many out
_NEAR_BELOW = 0.1  # side bands stop this many face heights below the box (shoulders below)
_ABOVE_INNER = 0.6  # the band above starts this many face heights over the box (past the hair)
_MAX_POINTS = 80
_MIN_DISTANCE_PX = 3
_FORWARD_BACKWARD_MAX_PX = 0.5
_LK_WINDOW_PX = 9
_LK_LEVELS = 3
_MIN_MOVE = 0.04  # face widths: a near point that moved more than this moved
_RIGID_TOLERANCE = 0.025  # face widths: RANSAC inlier distance of the surround's homography
_MIN_POINTS = 8  # tracked near points a measurement needs
_MIN_RIGID = 6  # moving points a homography is fitted to
_BORDER_SHARE = 0.15  # the camera check looks at this share of the frame along each side
_BORDER_WIDTH_PX = 320  # ... on the frame resampled to this width
_BORDER_STILL_PX = 0.6  # ... where a point that moved at most this much stood still
_BORDER_STILL_SHARE = 0.4  # the camera is still when at least this share of border points is
_MIN_BORDER_POINTS = 8
_CARRIED_NEUTRAL = 0.5  # carried fraction at which the cue starts to speak
_CARRIED_SLOPE = 8.0  # log-odds per unit of carried fraction above the neutral one


@dataclass(frozen=True, slots=True)
class SurroundMeasurement:
    """One comparison: of the near-surround points that could tell, how many moved together
    as one rigid object around the face (``carried``) and how many did not (``still``)."""

    carried: int
    still: int

    @property
    def carried_fraction(self) -> float:
        """Share of the telling points that moved as one object around the face (0..1)."""
        return self.carried / max(self.carried + self.still, 1)


def border_view(image_bgr: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """The frame as ``camera_is_still`` compares it: grey, at most ``_BORDER_WIDTH_PX`` wide
    (computed once per frame and kept: each frame is compared as "now" and later as "then")."""
    height, width = image_bgr.shape[:2]
    grey = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY)
    if width <= _BORDER_WIDTH_PX:
        return np.ascontiguousarray(grey, dtype=np.uint8)
    size = (_BORDER_WIDTH_PX, max(round(height * _BORDER_WIDTH_PX / width), 1))
    return np.ascontiguousarray(cv2.resize(grey, size, interpolation=cv2.INTER_AREA), np.uint8)


def camera_is_still(then_grey: npt.NDArray[np.uint8], now_grey: npt.NDArray[np.uint8]) -> bool:
    """Whether the frame's border shows a still camera between two ``border_view``s of frames
    of the same size (module docstring, step 1)."""
    mask = np.full(then_grey.shape, 255, np.uint8)
    rows, columns = then_grey.shape
    _fill(mask, (columns * _BORDER_SHARE, rows * _BORDER_SHARE,
                 columns * (1 - _BORDER_SHARE), rows * (1 - _BORDER_SHARE)), value=0)  # fmt: skip
    then_points = _corners(then_grey, mask)
    if then_points.shape[0] < _MIN_BORDER_POINTS:
        return False
    now_points = _track_coarse(then_grey, now_grey, then_points)
    tracked = ~np.isnan(now_points[:, 0])
    if int(tracked.sum()) < _MIN_BORDER_POINTS:
        return False
    moves = np.linalg.norm(now_points[tracked] - then_points[tracked], axis=1)
    return float(np.mean(moves <= _BORDER_STILL_PX)) >= _BORDER_STILL_SHARE


def measure_surround(
    then_bgr: npt.NDArray[np.uint8], now_bgr: npt.NDArray[np.uint8], box: npt.NDArray[np.float32]
) -> SurroundMeasurement | None:
    """How much of the face's near surround moved as one rigid object between two frames of
    the same size (module docstring, step 2); call it only when ``camera_is_still``.

    box: the face box now (x1 y1 x2 y2, frame pixels). None when too few points could be
    tracked (a blank wall, a face at the frame's edge).
    """
    x1, y1, x2, y2 = (float(value) for value in box)
    face_width, face_height = x2 - x1, y2 - y1
    if face_width < 1 or face_height < 1:
        return None
    height, width = now_bgr.shape[:2]
    centre_x, centre_y = (x1 + x2) / 2, (y1 + y2) / 2
    reach = _REGION_HALF_WIDTHS * face_width
    left = int(np.clip(centre_x - reach, 0, width - 1))
    right = int(np.clip(centre_x + reach, left + 1, width))
    top = int(np.clip(centre_y - reach, 0, height - 1))
    bottom = int(np.clip(y2 + _NEAR_BELOW * face_height, top + 1, height))
    scale = _ANALYSIS_FACE_PX / face_width
    then_grey = grey_patch(then_bgr, (left, top, right, bottom), scale)
    now_grey = grey_patch(now_bgr, (left, top, right, bottom), scale)
    bands = _band_labels(
        then_grey.shape,
        ((x1 - left) * scale, (y1 - top) * scale, (x2 - left) * scale, (y2 - top) * scale),
    )
    source = _corners(then_grey, (bands > 0).astype(np.uint8) * 255)
    if source.shape[0] < _MIN_POINTS:
        return None
    target = _track_coarse(then_grey, now_grey, source)
    tracked = ~np.isnan(target[:, 0])
    source, target = source[tracked], target[tracked]
    if source.shape[0] < _MIN_POINTS:
        return None
    point_bands = bands[source[:, 1].astype(int), source[:, 0].astype(int)]
    min_move = _MIN_MOVE * _ANALYSIS_FACE_PX
    moving = np.linalg.norm(target - source, axis=1) > min_move
    if int(moving.sum()) < _MIN_RIGID:
        return SurroundMeasurement(carried=0, still=int(source.shape[0]))
    homography, inliers = cv2.findHomography(
        source[moving], target[moving], cv2.RANSAC, _RIGID_TOLERANCE * _ANALYSIS_FACE_PX
    )
    if homography is None or len(set(point_bands[moving][inliers.ravel() > 0].tolist())) < 2:
        return SurroundMeasurement(carried=0, still=int(source.shape[0]))
    predicted = cv2.perspectiveTransform(source[None], homography)[0]
    consistent = np.linalg.norm(predicted - target, axis=1) <= _RIGID_TOLERANCE * _ANALYSIS_FACE_PX
    # a point that stayed where the object's motion would hardly have moved it says nothing
    telling = moving | (np.linalg.norm(predicted - source, axis=1) > min_move)
    carried = int(np.sum(consistent & moving))
    return SurroundMeasurement(carried=carried, still=int(telling.sum()) - carried)


def surround_live_probability(measurements: list[SurroundMeasurement]) -> float | None:
    """P(live) from the median carried fraction: 0.5 (no evidence) up to ``_CARRIED_NEUTRAL``,
    falling towards 0 as more of the surround moves as one object; None without measurements."""
    if not measurements:
        return None
    fraction = float(np.median([item.carried_fraction for item in measurements]))
    spoof_odds = _CARRIED_SLOPE * (fraction - _CARRIED_NEUTRAL)
    return min(0.5, float(1.0 / (1.0 + np.exp(spoof_odds))))


def _band_labels(
    shape: tuple[int, ...], face: tuple[float, float, float, float]
) -> npt.NDArray[np.uint8]:
    """The near-surround bands in analysis pixels: 1 left of the face, 2 right, 3 above (where
    they overlap, above wins), 0 elsewhere; ``face`` is the face box there."""
    x1, y1, x2, y2 = face
    face_width, face_height = x2 - x1, y2 - y1
    inner, outer = _NEAR_INNER * face_width, _NEAR_OUTER * face_width
    labels = np.zeros((int(shape[0]), int(shape[1])), np.uint8)
    band_top, band_bottom = y1 - outer, y2 + _NEAR_BELOW * face_height
    _fill(labels, (x1 - outer, band_top, x1 - inner, band_bottom), value=1)
    _fill(labels, (x2 + inner, band_top, x2 + outer, band_bottom), value=2)
    _fill(labels, (x1 - outer, band_top, x2 + outer, y1 - _ABOVE_INNER * face_height), value=3)
    return labels


def _fill(mask: npt.NDArray[np.uint8], box: tuple[float, float, float, float], value: int) -> None:
    """Set the pixels of ``box`` (x1 y1 x2 y2, clipped to the mask) to ``value``."""
    x1, y1, x2, y2 = (max(round(coordinate), 0) for coordinate in box)
    mask[y1:y2, x1:x2] = value


def _corners(grey: npt.NDArray[np.uint8], mask: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    return find_corners(grey, mask, max_corners=_MAX_POINTS, min_distance_px=_MIN_DISTANCE_PX)


def _track_coarse(
    then_grey: npt.NDArray[np.uint8],
    now_grey: npt.NDArray[np.uint8],
    points: npt.NDArray[np.float32],
) -> npt.NDArray[np.float32]:
    """``track_points`` with a smaller window and one more pyramid level: the surround is
    analysed coarsely (the face ~40 px wide), where a hand moves a sheet several pixels."""
    return track_points(
        then_grey,
        now_grey,
        points,
        window_px=_LK_WINDOW_PX,
        levels=_LK_LEVELS,
        max_error_px=_FORWARD_BACKWARD_MAX_PX,
    )
