"""3-D motion (parallax) cue: does the face move like a plane?

A printed photo or a screen is flat, so whatever the camera or the hand does, the image motion
of points on it between two frames is one homography (up to tracking noise). A real head is not
flat: when it turns or nods, nose, cheeks and face outline move differently and no homography
fits them all. Points are tracked with pyramidal Lucas-Kanade (forward-backward checked) inside
the inner face, ``span`` frames apart; per measurement two robust (least-median) fits are made:

- a similarity (shift, rotation, scale): what a face walking toward the camera or turning in
  the image plane does. Its median residual says how much *non-similarity* motion there is;
  below ``parallax_min_motion`` (fraction of face width) the measurement carries no evidence:
  a still face, or one that only slides or approaches, cannot tell a head from a photo.
- a homography (8 dof). A plane's residual is tracking noise, far below the similarity's; a
  head's stays a good part of it. The cue is the ratio homography / similarity residual.

Face landmarks are not fitted: detector landmarks jitter by 1-2 px from frame to frame, more
than the optical-flow noise the fit must see through; they place the tracked region instead.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

__all__ = [
    "ParallaxMeasurement",
    "ParallaxTracker",
    "PatchRegion",
    "find_corners",
    "grey_patch",
    "parallax_live_probability",
    "track_points",
]

_MAX_POINTS = 60
_SEED_MIN_DISTANCE_PX = 5  # in analysis pixels (the face is ~analysis_width_px wide)
_FORWARD_BACKWARD_MAX_PX = 0.7
_LK_WINDOW_PX = 15
_LK_LEVELS = 2
_INNER_WIDTH = 0.8  # points are seeded in the central 80% x 90% of the face box
_INNER_HEIGHT = 0.9
_RATIO_SLOPE = 10.0  # log-odds per unit of residual ratio around the neutral ratio
_NONRIGID_QUANTILE = 0.9  # the mouth and eyes are ~10-20% of the inner face's points


@dataclass(frozen=True, slots=True)
class ParallaxMeasurement:
    """One fit between frames ``span`` apart: median residuals as fractions of face width.

    nonrigid_residual: the 90th percentile of the homography's residuals (face widths). A plane
    leaves only tracking noise on every point; a face that talks, blinks or changes expression
    moves a minority of points (mouth, eyes) unlike the rest, even when it does not move in
    3-D, so the median stays small while this tail grows."""

    similarity_residual: float
    homography_residual: float
    points: int
    nonrigid_residual: float = 0.0

    @property
    def ratio(self) -> float:
        """Homography residual over similarity residual: ~0 for a plane, larger for a head."""
        return self.homography_residual / max(self.similarity_residual, 1e-9)


@dataclass(frozen=True, slots=True)
class PatchRegion:
    """Where an analysis patch comes from: patch = (frame - origin) * scale; ``inner_box``
    (x1, y1, x2, y2, patch pixels) is the central face area where points are seeded."""

    origin_x: float
    origin_y: float
    scale: float
    inner_box: tuple[int, int, int, int]

    @classmethod
    def around(
        cls, box: npt.NDArray[np.float32], origin: tuple[float, float], scale: float
    ) -> PatchRegion:
        """The region of a patch cut at ``origin`` with ``scale`` around face ``box`` (frame
        pixels, x1 y1 x2 y2)."""
        x1, y1, x2, y2 = (float(value) for value in box)
        centre_x, centre_y = (x1 + x2) / 2, (y1 + y2) / 2
        half_width, half_height = (x2 - x1) * _INNER_WIDTH / 2, (y2 - y1) * _INNER_HEIGHT / 2
        inner = (
            round((centre_x - half_width - origin[0]) * scale),
            round((centre_y - half_height - origin[1]) * scale),
            round((centre_x + half_width - origin[0]) * scale),
            round((centre_y + half_height - origin[1]) * scale),
        )
        return cls(origin[0], origin[1], scale, inner)

    def to_patch(self, points: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Frame pixels (K, 2) -> patch pixels."""
        origin = np.array([self.origin_x, self.origin_y], np.float32)
        return ((points - origin) * self.scale).astype(np.float32)

    def to_frame(self, points: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Patch pixels (K, 2) -> frame pixels."""
        origin = np.array([self.origin_x, self.origin_y], np.float32)
        return (points / self.scale + origin).astype(np.float32)


class ParallaxTracker:
    """Tracks points inside one face over frames; call ``update`` once per frame of the track.

    Patches are grey uint8 crops of the same frame region (the face's, resampled to
    ``analysis_width_px`` face width) from the previous and the current frame.
    """

    def __init__(self, *, span_frames: int, min_points: int) -> None:
        self.span_frames = span_frames
        self.min_points = min_points
        # positions[k]: (P, 2) float32 analysis-pixel coordinates relative to the face box
        # origin of frame k (NaN where a point is not tracked); the last row is the newest
        self._positions: deque[npt.NDArray[np.float32]] = deque(maxlen=span_frames + 1)

    def reset(self) -> None:
        """Forget the tracked points (the face was lost, too small or jumped)."""
        self._positions.clear()

    def update(
        self,
        previous_patch: npt.NDArray[np.uint8] | None,
        current_patch: npt.NDArray[np.uint8],
        region: PatchRegion,
        face_width_px: float,
    ) -> ParallaxMeasurement | None:
        """Track points from ``previous_patch`` to ``current_patch`` (both cut from ``region``
        of their frames), top up points in the inner face, and fit.

        face_width_px: the face width in frame pixels (residuals are divided by it).
        Returns None while there is no measurement (too few frames or points).
        """
        if previous_patch is None or not self._positions:
            self._positions.clear()
            seeded = _seed(current_patch, region.inner_box, np.zeros((0, 2), np.float32))
            self._positions.append(region.to_frame(seeded))
            return None
        previous = self._positions[-1]
        current = np.full_like(previous, np.nan)
        alive = np.flatnonzero(~np.isnan(previous[:, 0]))
        if alive.size:
            tracked = track_points(previous_patch, current_patch, region.to_patch(previous[alive]))
            current[alive] = region.to_frame(tracked)
        existing = region.to_patch(current[~np.isnan(current[:, 0])])
        seeded = region.to_frame(_seed(current_patch, region.inner_box, existing))
        if seeded.shape[0]:
            current = np.concatenate([current, seeded])
            self._positions = deque(
                (np.concatenate([row, np.full_like(seeded, np.nan)]) for row in self._positions),
                maxlen=self.span_frames + 1,
            )
        self._positions.append(current)
        self._compact()
        if len(self._positions) <= self.span_frames:
            return None
        return self._fit(face_width_px)

    def _compact(self) -> None:
        """Drop points lost in the newest frame, keep at most ``_MAX_POINTS``."""
        keep = np.flatnonzero(~np.isnan(self._positions[-1][:, 0]))[:_MAX_POINTS]
        self._positions = deque((row[keep] for row in self._positions), maxlen=self.span_frames + 1)

    def _fit(self, face_width_px: float) -> ParallaxMeasurement | None:
        then, now = self._positions[0], self._positions[-1]
        both = ~np.isnan(then[:, 0]) & ~np.isnan(now[:, 0])
        if int(both.sum()) < self.min_points:
            return None
        source = np.ascontiguousarray(then[both], dtype=np.float32)
        target = np.ascontiguousarray(now[both], dtype=np.float32)
        similarity, _ = cv2.estimateAffinePartial2D(source, target, method=cv2.LMEDS)
        homography, _ = cv2.findHomography(source, target, cv2.LMEDS)
        if similarity is None or homography is None:
            return None
        moved_similar = source @ similarity[:, :2].T + similarity[:, 2]
        projected = cv2.perspectiveTransform(source[None], homography)[0]
        width = max(face_width_px, 1.0)
        homography_residuals = np.linalg.norm(projected - target, axis=1)
        return ParallaxMeasurement(
            similarity_residual=float(np.median(np.linalg.norm(moved_similar - target, axis=1)))
            / width,
            homography_residual=float(np.median(homography_residuals)) / width,
            points=int(both.sum()),
            nonrigid_residual=float(np.quantile(homography_residuals, _NONRIGID_QUANTILE)) / width,
        )


def track_points(
    previous_patch: npt.NDArray[np.uint8],
    current_patch: npt.NDArray[np.uint8],
    points: npt.NDArray[np.float32],
    *,
    window_px: int = _LK_WINDOW_PX,
    levels: int = _LK_LEVELS,
    max_error_px: float = _FORWARD_BACKWARD_MAX_PX,
) -> npt.NDArray[np.float32]:
    """Pyramidal Lucas-Kanade positions of ``points`` (K, 2) in ``current_patch``; NaN where
    lost, outside the patch, or more than ``max_error_px`` off when tracked back."""
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.03)
    window = (window_px, window_px)
    start = points.reshape(-1, 1, 2).astype(np.float32)
    forward, status, _ = cv2.calcOpticalFlowPyrLK(
        previous_patch,
        current_patch,
        start,
        start.copy(),
        winSize=window,
        maxLevel=levels,
        criteria=criteria,
    )
    forward = np.asarray(forward, np.float32)
    backward, back_status, _ = cv2.calcOpticalFlowPyrLK(
        current_patch,
        previous_patch,
        forward,
        start.copy(),
        winSize=window,
        maxLevel=levels,
        criteria=criteria,
    )
    error = np.linalg.norm((np.asarray(backward, np.float32) - start).reshape(-1, 2), axis=1)
    height, width = current_patch.shape
    result = forward.reshape(-1, 2).astype(np.float32)
    inside = (
        (result[:, 0] >= 0) & (result[:, 0] < width) & (result[:, 1] >= 0) & (result[:, 1] < height)
    )
    good = (status.ravel() == 1) & (back_status.ravel() == 1) & (error < max_error_px) & inside
    result[~good] = np.nan
    return result


def grey_patch(
    image_bgr: npt.NDArray[np.uint8], bounds: tuple[int, int, int, int], scale: float
) -> npt.NDArray[np.uint8]:
    """The grey uint8 crop of ``bounds`` (left, top, right, bottom) resampled by ``scale``."""
    left, top, right, bottom = bounds
    crop = image_bgr[top:bottom, left:right]
    size = (max(round((right - left) * scale), 1), max(round((bottom - top) * scale), 1))
    interpolation = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    grey = cv2.cvtColor(cv2.resize(crop, size, interpolation=interpolation), cv2.COLOR_BGR2GRAY)
    return np.ascontiguousarray(grey, dtype=np.uint8)


def _seed(
    patch: npt.NDArray[np.uint8],
    inner_box: tuple[int, int, int, int],
    existing: npt.NDArray[np.float32],
) -> npt.NDArray[np.float32]:
    """New corner points (K, 2) in the inner face, away from ``existing`` ones."""
    wanted = _MAX_POINTS - existing.shape[0]
    if wanted < _MAX_POINTS // 3:  # enough points already: seeding costs a corner search
        return np.zeros((0, 2), np.float32)
    x1, y1, x2, y2 = inner_box
    mask = np.zeros(patch.shape, np.uint8)
    mask[max(y1, 0) : max(y2, 0), max(x1, 0) : max(x2, 0)] = 255
    for x, y in existing:
        cv2.circle(mask, (round(float(x)), round(float(y))), _SEED_MIN_DISTANCE_PX, 0, -1)
    return find_corners(patch, mask, max_corners=wanted, min_distance_px=_SEED_MIN_DISTANCE_PX)


def find_corners(
    grey: npt.NDArray[np.uint8],
    mask: npt.NDArray[np.uint8],
    *,
    max_corners: int,
    min_distance_px: float,
) -> npt.NDArray[np.float32]:
    """Shi-Tomasi corners (K, 2) of ``grey`` where ``mask`` is set; none for an empty mask."""
    if not mask.any():
        return np.zeros((0, 2), np.float32)
    corners = cv2.goodFeaturesToTrack(
        grey, maxCorners=max_corners, qualityLevel=0.01, minDistance=min_distance_px, mask=mask
    )
    if corners is None:
        return np.zeros((0, 2), np.float32)
    found: npt.NDArray[np.float32] = np.asarray(corners, np.float32).reshape(-1, 2)
    return found


def parallax_live_probability(
    measurements: list[ParallaxMeasurement], *, min_motion: float, planar_ratio: float
) -> tuple[float, int] | None:
    """P(live) from the informative measurements (similarity residual >= ``min_motion``), and
    how many there were; None when none was informative (no evidence either way)."""
    ratios = [item.ratio for item in measurements if item.similarity_residual >= min_motion]
    if not ratios:
        return None
    ratio = float(np.median(ratios))
    return float(1.0 / (1.0 + np.exp(-_RATIO_SLOPE * (ratio - planar_ratio)))), len(ratios)
