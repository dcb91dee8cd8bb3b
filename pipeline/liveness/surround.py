"""Surround-motion cue: is the face carried by something that moves in front of a still scene?

A photo or a phone held up to a door camera is one rigid plane moved by a hand: the paper
margin, the phone's bezel and the rest of the picture around the face all move together, by
one homography, while the room stays still. A real person's surroundings do not move with
them: the wall, door frame or corridor beside and above the head stays put when the camera is
fixed, or everything moves when the camera does. This holds whatever the face itself does, so
it also catches a hand-held screen replaying a video of a moving head, whose parallax is real.

Per measurement, between the frames ``span`` apart that the parallax cue compares:

1. ``track_border``: points along the frame's border (the outer ``_BORDER_SHARE`` of each
   side, on the ``border_view``) are tracked once per frame pair.
2. ``measure_surround``: points in the *near surround* -- bands beside the face 0.35 to 1.1
   face widths out and above it from 0.6 face heights (past ears and hair; nothing below the
   chin, where a real person's own neck and shoulders move with the head) -- are tracked with
   pyramidal Lucas-Kanade (forward-backward checked). One robust (RANSAC) homography, the
   *carrier*, is fitted to those that moved (more than ``_MIN_MOVE`` face widths); it counts
   when its inliers lie in at least two of the three bands (one object around the face, not a
   passer-by on one side) and
   - the face rides on it: the face's own tracked points (the parallax cue's, over the same
     span) land nearer where the carrier would put them than where they started. A camera
     that turns with a person holding it (a selfie) moves the room around a face that stays
     put; a print or a screen moves the face with its margin or bezel;
   - the room is still beside it (``scene_is_still``): the border points beyond the device on
     some side (outside the box bounding the carried near points and the border points that
     moved with the carrier) are the room; enough of them stood still, spread along the
     frame's edge. However much of the border a device covers, what shows of the room beside
     it stays put; a camera that pans moves the whole border with the face's surround, which
     leaves nothing beyond it but a logo burnt into the picture (one or two grid cells). With
     no carrier, the whole border is the room (the camera must be still).
   The moving points the carrier maps are then "carried" and the others "still", as are points
   that stayed where it would have moved them; points it would hardly have moved say nothing.
   Without such a carrier every point that moved is "still". A measurement where nothing moved
   (a device held still for a moment, a person's room) says nothing and is not kept.

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
    "BorderMotion",
    "FaceMotion",
    "SurroundMeasurement",
    "border_view",
    "camera_is_still",
    "measure_surround",
    "scene_is_still",
    "surround_live_probability",
    "track_border",
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
_MIN_RIGID = 6  # moving points a homography is fitted to; telling points a measurement needs
_BORDER_SHARE = 0.15  # the camera check looks at this share of the frame along each side
_BORDER_WIDTH_PX = 320  # ... on the frame resampled to this width
_BORDER_MAX_POINTS = 160  # more than the near surround's: a device may cover most of them
_BORDER_STILL_PX = 0.6  # ... where a point that moved at most this much stood still
_BORDER_ROUGH_SHARE = 0.5  # border points the carrier misses by under this share of their move
_BORDER_CARRIED_PX = 1.0  # ... refine it; then one it misses by at most this moved with it
_MIN_BORDER_POINTS = 8  # the room is still when at least this many of its points stood still,
_BORDER_STILL_SHARE = 0.4  # ... at least this share of them,
_STILL_GRID = 8  # ... spread over at least _MIN_STILL_CELLS cells of a grid this many a side
_MIN_STILL_CELLS = 4
_CARRIED_NEUTRAL = 0.5  # carried fraction at which the cue starts to speak
_CARRIED_SLOPE = 8.0  # log-odds per unit of carried fraction above the neutral one

FloatArray = npt.NDArray[np.float32]
Homography = npt.NDArray[np.float64]


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


@dataclass(frozen=True, slots=True)
class BorderMotion:
    """Corners along the frame's border between two frames: ``then`` and ``now`` float32
    (K, 2), frame pixels, only those tracked both ways; ``view_scale``: border-view pixels per
    frame pixel (the stillness tolerances are in border-view pixels); ``frame_size``: the
    frame's width and height (frame pixels)."""

    then: FloatArray
    now: FloatArray
    view_scale: float
    frame_size: npt.NDArray[np.float64]  # width, height (frame pixels)


@dataclass(frozen=True, slots=True)
class FaceMotion:
    """The face's own tracked points over the same span: ``then`` and ``now`` float32 (K, 2),
    frame pixels (the parallax cue's inner-face points)."""

    then: FloatArray
    now: FloatArray


def border_view(image_bgr: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """The frame as ``track_border`` compares it: grey, at most ``_BORDER_WIDTH_PX`` wide
    (computed once per frame and kept: each frame is compared as "now" and later as "then")."""
    height, width = image_bgr.shape[:2]
    grey = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY)
    if width <= _BORDER_WIDTH_PX:
        return np.ascontiguousarray(grey, dtype=np.uint8)
    size = (_BORDER_WIDTH_PX, max(round(height * _BORDER_WIDTH_PX / width), 1))
    return np.ascontiguousarray(cv2.resize(grey, size, interpolation=cv2.INTER_AREA), np.uint8)


def track_border(
    then_grey: npt.NDArray[np.uint8], now_grey: npt.NDArray[np.uint8], frame_width: int
) -> BorderMotion:
    """The border corners of two ``border_view``s of frames ``frame_width`` pixels wide,
    tracked from then to now (module docstring, step 1)."""
    mask = np.full(then_grey.shape, 255, np.uint8)
    rows, columns = then_grey.shape
    _fill(mask, (columns * _BORDER_SHARE, rows * _BORDER_SHARE,
                 columns * (1 - _BORDER_SHARE), rows * (1 - _BORDER_SHARE)), value=0)  # fmt: skip
    view_scale = columns / max(frame_width, 1)
    then_points = find_corners(
        then_grey, mask, max_corners=_BORDER_MAX_POINTS, min_distance_px=_MIN_DISTANCE_PX
    )
    now_points = _track_coarse(then_grey, now_grey, then_points)
    tracked = ~np.isnan(now_points[:, 0])
    return BorderMotion(
        then=(then_points[tracked] / view_scale).astype(np.float32),
        now=(now_points[tracked] / view_scale).astype(np.float32),
        view_scale=view_scale,
        frame_size=np.array([columns, rows], np.float64) / view_scale,
    )


def scene_is_still(border: BorderMotion, device: FloatArray | None = None) -> bool:
    """Whether the room the frame's border shows stood still.

    device: points (float32 (K, 2), frame pixels, where they were) that moved with a device
    held in front of the room, or None. Without one, the whole border is the room. With one,
    the room is what lies beyond the device on some side (outside the box bounding its points):
    a device hides the room behind it, and a camera that pans moves the whole border with the
    face's surround, leaving nothing beyond it but what sits in the frame's very edges. Of the
    room's points, at least ``_MIN_BORDER_POINTS``, and ``_BORDER_STILL_SHARE`` of them, must
    have moved at most ``_BORDER_STILL_PX`` (on the border view), spread over at least
    ``_MIN_STILL_CELLS`` cells of a ``_STILL_GRID``-a-side grid over the frame (a logo burnt
    into a panning camera's picture fills one or two)."""
    room = np.ones(border.then.shape[0], bool)
    if device is not None and device.shape[0]:
        low, high = device.min(axis=0), device.max(axis=0)
        room = np.any((border.then < low) | (border.then > high), axis=1)
    still, cells = _still_points(border, room)
    return (
        still >= _MIN_BORDER_POINTS
        and still >= _BORDER_STILL_SHARE * int(room.sum())
        and cells >= _MIN_STILL_CELLS
    )


def _still_points(border: BorderMotion, among: npt.NDArray[np.bool_]) -> tuple[int, int]:
    """How many of the border points ``among`` (bool (K,)) stood still, and how many cells of
    the ``_STILL_GRID``-a-side grid over the frame they fill."""
    moves = np.linalg.norm(border.now - border.then, axis=1) * border.view_scale
    still = among & (moves <= _BORDER_STILL_PX)
    cell = _STILL_GRID / border.frame_size  # grid cells per frame pixel, x and y
    cells = {(int(x * cell[0]), int(y * cell[1])) for x, y in border.then[still].tolist()}
    return int(still.sum()), len(cells)


def camera_is_still(then_grey: npt.NDArray[np.uint8], now_grey: npt.NDArray[np.uint8]) -> bool:
    """Whether the border shows a still camera between two ``border_view``s of the same size
    (``scene_is_still`` of their ``track_border``, with nothing in front of the room)."""
    return scene_is_still(track_border(then_grey, now_grey, then_grey.shape[1]))


def measure_surround(
    then_bgr: npt.NDArray[np.uint8],
    now_bgr: npt.NDArray[np.uint8],
    box: npt.NDArray[np.float32],
    *,
    border: BorderMotion,
    face: FaceMotion | None = None,
) -> SurroundMeasurement | None:
    """How much of the face's near surround moved as one rigid object, carrying the face in
    front of a still scene, between two frames of the same size (module docstring, step 2).

    box: the face box now (x1 y1 x2 y2, frame pixels); border: ``track_border`` of the same
    two frames; face: the face's own points over the span (None: not checked). None when too
    few points could be tracked (a blank wall, a face at the frame's edge), when nothing
    moved, or when the room is not still.
    """
    # with too few still border points in all, no room can be still: skip the tracking
    still, cells = _still_points(border, np.ones(border.then.shape[0], bool))
    room_possible = still >= _MIN_BORDER_POINTS and cells >= _MIN_STILL_CELLS
    near = _track_near(then_bgr, now_bgr, box) if room_possible else None
    if near is None:
        return None
    min_move = _MIN_MOVE * _ANALYSIS_FACE_PX
    moving = np.linalg.norm(near.target - near.source, axis=1) > min_move
    if int(moving.sum()) < _MIN_RIGID:
        return None  # nothing moved around the face: no evidence either way
    homography, inliers = cv2.findHomography(
        near.source[moving], near.target[moving], cv2.RANSAC, _RIGID_TOLERANCE * _ANALYSIS_FACE_PX
    )
    if homography is None or len(set(near.bands[moving][inliers.ravel() > 0].tolist())) < 2:
        return _uncarried(moving) if scene_is_still(border) else None
    predicted = cv2.perspectiveTransform(near.source[None], homography)[0]
    consistent = np.linalg.norm(predicted - near.target, axis=1) <= (
        _RIGID_TOLERANCE * _ANALYSIS_FACE_PX
    )
    to_frame: Homography = np.asarray(np.linalg.inv(near.to_patch), np.float64)
    carrier = to_frame @ homography @ near.to_patch  # in frame pixels
    carried_near = consistent & moving
    device = _device_points(
        border,
        carrier,
        (
            _to_frame(near.source[carried_near], to_frame),
            _to_frame(near.target[carried_near], to_frame),
        ),
    )
    if not scene_is_still(border, device):
        return None  # no still room beside what moved (a panning or hand-held camera)
    if face is not None and not _rides_on(face, carrier):
        return _uncarried(moving)  # the room moves round a face that stays: not its carrier
    # a point that stayed where the object's motion would hardly have moved it says nothing
    telling = moving | (np.linalg.norm(predicted - near.source, axis=1) > min_move)
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


@dataclass(frozen=True, slots=True)
class _NearPoints:
    """Near-surround corners tracked between two frames, in analysis pixels: ``source`` and
    ``target`` float32 (K, 2), ``bands`` uint8 (K,) (1 left, 2 right, 3 above); ``to_patch``
    maps frame pixels to analysis pixels (3x3)."""

    source: FloatArray
    target: FloatArray
    bands: npt.NDArray[np.uint8]
    to_patch: Homography


def _track_near(
    then_bgr: npt.NDArray[np.uint8], now_bgr: npt.NDArray[np.uint8], box: npt.NDArray[np.float32]
) -> _NearPoints | None:
    """The near-surround corners of face ``box`` (frame pixels) tracked from then to now; None
    with fewer than ``_MIN_POINTS``."""
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
    return _NearPoints(
        source=source,
        target=target,
        bands=bands[source[:, 1].astype(int), source[:, 0].astype(int)],
        to_patch=np.array(
            [[scale, 0.0, -left * scale], [0.0, scale, -top * scale], [0.0, 0.0, 1.0]]
        ),
    )


def _device_points(
    border: BorderMotion, carrier: Homography, near: tuple[FloatArray, FloatArray]
) -> FloatArray:
    """Where the points that moved with the device were (float32 (K, 2), frame pixels): the
    near surround's carried points ``near`` (then, now; frame pixels) and the border points
    that moved with ``carrier`` (frame pixels). The carrier is fitted near the face and
    extrapolates poorly to the frame's edges, so it is refitted on the near points and the
    border points it roughly explains (within ``_BORDER_ROUGH_SHARE`` of their move)."""
    moves = np.linalg.norm(border.now - border.then, axis=1) * border.view_scale
    moved = moves > _BORDER_STILL_PX
    if not moved.any():
        return near[0]
    rough = moved & (_misses(border, carrier) <= _BORDER_ROUGH_SHARE * moves)
    sources = np.concatenate([near[0], border.then[rough]])
    targets = np.concatenate([near[1], border.now[rough]])
    if sources.shape[0] >= _MIN_RIGID:
        refitted, _ = cv2.findHomography(
            sources, targets, cv2.RANSAC, _BORDER_CARRIED_PX / border.view_scale
        )
        if refitted is not None:
            carrier = np.asarray(refitted, np.float64)
    with_it = moved & (_misses(border, carrier) <= _BORDER_CARRIED_PX)
    return np.concatenate([near[0], border.then[with_it]]).astype(np.float32)


def _misses(border: BorderMotion, carrier: Homography) -> npt.NDArray[np.float64]:
    """How far (border-view pixels) each border point landed from where ``carrier`` puts it."""
    predicted = cv2.perspectiveTransform(border.then[None].astype(np.float64), carrier)[0]
    misses: npt.NDArray[np.float64] = np.linalg.norm(predicted - border.now, axis=1)
    return misses * border.view_scale


def _to_frame(points: FloatArray, to_frame: Homography) -> FloatArray:
    """Analysis pixels (K, 2) -> frame pixels, by ``to_frame`` (3x3)."""
    if points.shape[0] == 0:
        return np.zeros((0, 2), np.float32)
    return np.asarray(cv2.perspectiveTransform(points[None], to_frame)[0], np.float32)


def _uncarried(moving: npt.NDArray[np.bool_]) -> SurroundMeasurement:
    """Points moved, but not as one object carrying the face: every mover counts as still."""
    return SurroundMeasurement(carried=0, still=int(moving.sum()))


def _rides_on(face: FaceMotion, carrier: Homography) -> bool:
    """Whether the face's points moved with ``carrier`` (frame pixels) rather than staying
    put: their median miss from where it puts them is below their median move."""
    if face.then.shape[0] == 0:
        return False
    predicted = cv2.perspectiveTransform(face.then[None].astype(np.float64), carrier)[0]
    miss = float(np.median(np.linalg.norm(predicted - face.now, axis=1)))
    move = float(np.median(np.linalg.norm(face.now - face.then, axis=1)))
    return miss < move


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
