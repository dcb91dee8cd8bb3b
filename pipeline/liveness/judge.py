"""Per-track liveness over time: each camera's ``LivenessJudge`` gathers cue evidence for every
track on every processed frame and answers with a ``Liveness`` verdict on demand.

Cues (each a P(live) in 0..1, fused by ``pipeline.liveness.fusion.fuse``):

- ``parallax``: does the face move like a plane (photo, screen) or like a head (parallax.py)?
- ``texture``: frequency and colour features of the inner face (texture.py), every
  ``texture_every_frames`` frames, averaged over the window.
- ``flicker``: frame-to-frame brightness beating of the face (texture.py), from every
  frame's brightness, scored once the texture cue has a sample.
- ``cnn``: the MiniFASNet ensemble (cnn.py), on a track's first frame and then every
  ``cnn_every_frames`` frames; the latest three scores are averaged.
- ``blink`` (optional, off by default): a blink seen in the window (blink.py).
- ``surround``: does the scene around the face move as one rigid object, as a hand-held photo
  or phone does, while the frame's border stays still (surround.py)? Spoof evidence only.

The verdict is "undecided" until a track has ``min_frames`` frames; then "spoof" at a score at
or below ``spoof_threshold``, "live" at or above ``live_threshold`` (with
``require_motion_for_live``, only once the face has moved enough for a parallax measurement,
whatever that measurement says: its answer is weighed with the other cues, or, for a face that
does not move in 3-D, on the still-person path's strong, sustained evidence: still.py),
"undecided" in between. Boxes mostly outside the frame give no evidence.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from types import MappingProxyType

import cv2
import numpy as np
import numpy.typing as npt

from engines.base import Engine
from engines.errors import ConfigError
from pipeline.liveness.blink import BlinkDetector, blink_live_probability
from pipeline.liveness.cnn import cnn_live_probabilities
from pipeline.liveness.config import LivenessConfig
from pipeline.liveness.fusion import fuse
from pipeline.liveness.parallax import (
    ParallaxMeasurement,
    ParallaxTracker,
    PatchRegion,
    grey_patch,
    parallax_live_probability,
)
from pipeline.liveness.still import still_evidence
from pipeline.liveness.surround import (
    SurroundMeasurement,
    border_view,
    camera_is_still,
    measure_surround,
    surround_live_probability,
)
from pipeline.liveness.texture import (
    TextureModel,
    flicker_live_probability,
    flicker_statistic,
    texture_features,
    texture_patch,
)
from pipeline.liveness.texture_model import DEFAULT_TEXTURE_MODEL
from pipeline.types import Faces, Liveness, Verdict, require_array

__all__ = ["LivenessJudge"]

_log = logging.getLogger(__name__)

_REGION_MARGIN = 1.3  # the tracked patch spans the face box enlarged this much (motion room)
_CNN_SCORES_KEPT = 3
_BLOCK_PX = 8  # JPEG blocks and H.264 transform blocks sit on this grid of the frame
_MIN_FACE_PX = 24  # narrower faces give no texture or parallax evidence (too few pixels)
_MIN_VISIBLE_FRACTION = 0.5  # a box mostly outside the frame gives no evidence at all


@dataclass(slots=True)
class _RecentFrame:
    """A frame the surround cue may compare a later one with, and its ``border_view`` once
    computed."""

    image: npt.NDArray[np.uint8]
    border: npt.NDArray[np.uint8] | None = None


@dataclass(slots=True)
class _TrackEvidence:
    """What one track has shown so far (mutable; owned by the judge)."""

    parallax: ParallaxTracker
    window_frames: int
    frames: int = 0
    last_frame: int = -1
    frames_since_cnn: int = 0
    measurements: deque[ParallaxMeasurement] = field(init=False)
    surround: deque[SurroundMeasurement] = field(init=False)
    texture: deque[float] = field(init=False)
    lumas: deque[float] = field(init=False)
    cnn: deque[float] = field(init=False)
    cnn_kept: int = _CNN_SCORES_KEPT
    widths: deque[float] = field(init=False)
    eye_ratios: deque[float] = field(init=False)
    blockiness: deque[float] = field(init=False)

    def __post_init__(self) -> None:
        self.blockiness = deque(maxlen=self.window_frames)
        self.measurements = deque(maxlen=self.window_frames)
        self.surround = deque(maxlen=self.window_frames)
        self.texture = deque(maxlen=self.window_frames)
        self.lumas = deque(maxlen=self.window_frames)
        self.cnn = deque(maxlen=self.cnn_kept)
        self.widths = deque(maxlen=self.window_frames)
        self.eye_ratios = deque(maxlen=self.window_frames)


class LivenessJudge:
    """Liveness of every track of one camera; call ``observe`` on every processed frame, in
    order, and ``forget`` when a track ends.

    engine: the MiniFASNet engine (``engines.models.antispoof.load_liveness_engine``), required when
    ``config.cnn`` is on and ignored otherwise. ``observe`` keeps a reference to the previous
    image (for optical flow), so images must not be written to afterwards (``Frame`` images
    are read-only).
    """

    def __init__(
        self,
        config: LivenessConfig,
        engine: Engine | None,
        *,
        texture_model: TextureModel = DEFAULT_TEXTURE_MODEL,
    ) -> None:
        if config.cnn and engine is None:
            raise ConfigError("liveness.cnn is on but no liveness engine was given")
        self.config = config
        self._engine = engine if config.cnn else None
        self._texture_model = texture_model
        self._blink = BlinkDetector() if config.blink else None
        self._weights = {
            "parallax": config.parallax_weight,
            "texture": config.texture_weight if config.texture else 0.0,
            "flicker": config.flicker_weight if config.texture else 0.0,
            "cnn": config.cnn_weight if config.cnn else 0.0,
            "blink": config.blink_weight if config.blink else 0.0,
            "surround": config.surround_weight if config.surround else 0.0,
        }
        self._tracks: dict[int, _TrackEvidence] = {}
        self._frame_index = -1
        self._previous_image: npt.NDArray[np.uint8] | None = None
        # the images of the last ``parallax_span_frames`` calls, oldest first: the surround
        # cue compares the frame a parallax measurement starts from with the current one
        self._recent: deque[_RecentFrame] = deque(maxlen=config.parallax_span_frames)
        self._camera_still: bool | None = None  # this frame's, once a track needed it
        self._border: npt.NDArray[np.uint8] | None = None  # this frame's border_view, once needed

    def observe(
        self,
        image_bgr: npt.NDArray[np.uint8],
        faces: Faces,
        track_ids: npt.NDArray[np.int64],
    ) -> None:
        """Add one frame's evidence. image_bgr: BGR uint8 (H, W, 3); faces: this frame's
        faces (boxes in image pixels); track_ids: int64 (N,), the track of each face."""
        require_array("image_bgr", image_bgr, dtype=np.uint8, shape=(None, None, 3))
        require_array("track_ids", track_ids, dtype=np.int64, shape=(len(faces),))
        self._frame_index += 1
        self._camera_still = None
        self._border = None
        previous = self._previous_image
        if previous is not None and previous.shape != image_bgr.shape:
            previous = None  # the stream changed size: flow across it means nothing
            self._recent.clear()
        try:
            self._observe_faces(image_bgr, previous, faces, track_ids)
        finally:
            # even when a cue failed part-way (the CNN engine raised), the next frame's optical
            # flow and surround comparisons must start from this frame, which the tracks'
            # points already refer to
            self._previous_image = image_bgr
            self._recent.append(_RecentFrame(image_bgr, self._border))
            stale = [
                track_id
                for track_id, evidence in self._tracks.items()
                if self._frame_index - evidence.last_frame > self.config.window_frames
            ]
            for track_id in stale:  # tracks the caller never forgot must not pile up
                del self._tracks[track_id]

    def _observe_faces(
        self,
        image_bgr: npt.NDArray[np.uint8],
        previous: npt.NDArray[np.uint8] | None,
        faces: Faces,
        track_ids: npt.NDArray[np.int64],
    ) -> None:
        """``observe``'s per-face work: each track's cues, then one CNN batch."""
        height, width = image_bgr.shape[:2]
        cnn_rows: list[int] = []
        cnn_tracks: list[_TrackEvidence] = []
        for row, track_id in enumerate(track_ids.tolist()):
            box = faces.boxes[row]
            if not np.all(np.isfinite(box)) or box[2] - box[0] < 1 or box[3] - box[1] < 1:
                continue
            if _visible_fraction(box, width, height) < _MIN_VISIBLE_FRACTION:
                continue  # mostly outside the frame: the crops would show something else
            evidence = self._tracks.get(track_id)
            if evidence is None:
                evidence = _TrackEvidence(
                    ParallaxTracker(
                        span_frames=self.config.parallax_span_frames,
                        min_points=self.config.parallax_min_points,
                    ),
                    self.config.window_frames,
                    cnn_kept=max(_CNN_SCORES_KEPT, self.config.still_live_cnn_scores),
                )
                self._tracks[track_id] = evidence
            consecutive = evidence.last_frame == self._frame_index - 1
            self._observe_track(evidence, image_bgr, previous if consecutive else None, box)
            if self._engine is not None and (
                not evidence.cnn or evidence.frames_since_cnn >= self.config.cnn_every_frames
            ):
                cnn_rows.append(row)
                cnn_tracks.append(evidence)
        if cnn_rows and self._engine is not None:
            scores = cnn_live_probabilities(self._engine, image_bgr, faces.boxes[cnn_rows])
            for evidence, score in zip(cnn_tracks, scores.tolist(), strict=True):
                evidence.cnn.append(float(score))
                evidence.frames_since_cnn = 0

    def _observe_track(
        self,
        evidence: _TrackEvidence,
        image_bgr: npt.NDArray[np.uint8],
        previous_bgr: npt.NDArray[np.uint8] | None,
        box: npt.NDArray[np.float32],
    ) -> None:
        evidence.frames += 1
        evidence.frames_since_cnn += 1
        evidence.last_frame = self._frame_index
        face_width = float(box[2] - box[0])
        evidence.widths.append(face_width)
        if face_width < _MIN_FACE_PX:
            evidence.parallax.reset()
            return
        region, bounds = _patch_region(box, image_bgr.shape, self.config.analysis_width_px)
        evidence.blockiness.append(block_artefacts(image_bgr, bounds))
        current = grey_patch(image_bgr, bounds, region.scale)
        before = (
            grey_patch(previous_bgr, bounds, region.scale) if previous_bgr is not None else None
        )
        measurement = evidence.parallax.update(before, current, region, face_width)
        if measurement is not None:
            evidence.measurements.append(measurement)
            if (
                self.config.surround
                and evidence.frames % self.config.surround_every_frames == 0
                and len(self._recent) == self.config.parallax_span_frames
            ):
                # a measurement means the track was seen in each of the last span + 1
                # frames, so the oldest recent image is the one it starts from
                surround = self._surround(self._recent[0], image_bgr, box)
                if surround is not None:
                    evidence.surround.append(surround)
        x1, y1, x2, y2 = region.inner_box
        inner = current[max(y1, 0) : max(y2, 0), max(x1, 0) : max(x2, 0)]
        if inner.size:
            evidence.lumas.append(float(inner.mean()))
        if self.config.texture and (evidence.frames - 1) % self.config.texture_every_frames == 0:
            texture = self._texture_probability(image_bgr, box)
            if texture is not None:
                evidence.texture.append(texture)
        if self._blink is not None:
            rgb = np.ascontiguousarray(image_bgr[:, :, ::-1])
            evidence.eye_ratios.append(self._blink.ratio(rgb, box))

    def _surround(
        self, then: _RecentFrame, now_bgr: npt.NDArray[np.uint8], box: npt.NDArray[np.float32]
    ) -> SurroundMeasurement | None:
        """The surround measurement of the face in ``box``; None while the camera is not
        known to be still (checked once per frame, for all faces)."""
        if self._camera_still is None:
            if then.border is None:
                then.border = border_view(then.image)
            self._border = border_view(now_bgr)
            self._camera_still = camera_is_still(then.border, self._border)
        return measure_surround(then.image, now_bgr, box) if self._camera_still else None

    def verdict(self, track_id: int) -> Liveness:
        """The current liveness of ``track_id``; "undecided" for a track never observed."""
        evidence = self._tracks.get(track_id)
        if evidence is None:
            return Liveness.undecided()
        probabilities: dict[str, float] = {}
        figures: dict[str, float] = {}
        parallax = parallax_live_probability(
            list(evidence.measurements),
            min_motion=self.config.parallax_min_motion,
            planar_ratio=self.config.parallax_planar_ratio,
        )
        if evidence.blockiness:
            blockiness = float(np.median(evidence.blockiness))
            figures["blockiness"] = blockiness
            if blockiness > self.config.max_blockiness:
                # compression blocks move with the grid, not the face: the flow residual they
                # leave looks like 3-D motion, so a blocky stream gives no parallax evidence
                parallax = None
        if parallax is not None:
            probabilities["parallax"] = parallax[0]
            figures["parallax_measurements"] = float(parallax[1])
            informative = [
                item.ratio
                for item in evidence.measurements
                if item.similarity_residual >= self.config.parallax_min_motion
            ]
            figures["parallax_ratio"] = float(np.median(informative))
        surround = surround_live_probability(list(evidence.surround))
        if surround is not None:
            probabilities["surround"] = surround
            figures["surround_carried_fraction"] = float(
                np.median([item.carried_fraction for item in evidence.surround])
            )
        if evidence.texture:
            probabilities["texture"] = float(np.mean(evidence.texture))
            flicker = flicker_statistic(list(evidence.lumas))
            if flicker is not None:
                probabilities["flicker"] = flicker_live_probability(flicker)
                figures["flicker_statistic"] = flicker
        if evidence.cnn:
            probabilities["cnn"] = float(np.mean(list(evidence.cnn)[-_CNN_SCORES_KEPT:]))
        if self._blink is not None:
            blink = blink_live_probability(list(evidence.eye_ratios))
            if blink is not None:
                probabilities["blink"] = blink
        score = fuse(probabilities, self._weights)
        still = still_evidence(
            evidence.cnn,
            evidence.widths,
            evidence.measurements,
            config=self.config,
            blinked="blink" in probabilities,
        )
        figures.update(still.figures())
        verdict: Verdict = "undecided"
        if evidence.frames >= self.config.min_frames:
            moved = "parallax" in probabilities or not self.config.require_motion_for_live
            # a face that never moved in 3-D: live only on the still-person path's strong,
            # sustained evidence, from an unblocky stream, with no surround spoof evidence
            held_still = (
                still.suffices(self.config)
                and figures.get("blockiness", 1.0) <= self.config.max_blockiness
                and probabilities.get("surround", 0.5) >= 0.5
            )
            # the CNN saying "spoof" vetoes "live" on either path: parallax cannot tell a
            # screen replaying a moving head from that head
            # ... and it must have spoken: a replay of a moving head shows parallax within the
            # CNN's first score, so "live" waits for live_min_cnn_scores of them
            cnn_heard = self._engine is None or len(evidence.cnn) >= self.config.live_min_cnn_scores
            cnn_agrees = cnn_heard and probabilities.get("cnn", 1.0) >= self.config.live_min_cnn
            verdict = self._thresholded(score, may_be_live=(moved or held_still) and cnn_agrees)
            figures["still_path"] = float(held_still and not moved)
        cues = MappingProxyType({**probabilities, **figures})
        return Liveness(verdict, score, cues, evidence.frames)

    def judge_still(self, image_bgr: npt.NDArray[np.uint8], faces: Faces) -> list[Liveness]:
        """Passive liveness of each face of one still image (a photo upload, an evaluation
        manifest's image), from the cues a single frame carries: the CNN and texture (no
        parallax, flicker or blink: they need time). "live" at or above ``live_threshold``
        and only with a CNN score, "spoof" at or below ``spoof_threshold``, else "undecided".
        Tracks are not touched.
        A door never uses this: at a camera, ``require_motion_for_live`` still applies."""
        require_array("image_bgr", image_bgr, dtype=np.uint8, shape=(None, None, 3))
        results = [Liveness.undecided() for _ in range(len(faces))]
        rows = [
            row
            for row in range(len(faces))
            if np.all(np.isfinite(faces.boxes[row])) and faces.widths_px[row] >= _MIN_FACE_PX
        ]
        cnn_scores = (
            cnn_live_probabilities(self._engine, image_bgr, faces.boxes[rows]).tolist()
            if self._engine is not None and rows
            else [None] * len(rows)
        )
        for row, cnn_score in zip(rows, cnn_scores, strict=True):
            probabilities: dict[str, float] = {}
            if cnn_score is not None:
                probabilities["cnn"] = float(cnn_score)
            texture = (
                self._texture_probability(image_bgr, faces.boxes[row])
                if self.config.texture
                else None
            )
            if texture is not None:
                probabilities["texture"] = texture
            score = fuse(probabilities, self._weights)
            # texture alone never makes a still "live": fitted to synthetic attacks, it does
            # not separate real captures (docs/liveness.md)
            verdict: Verdict = self._thresholded(score, may_be_live="cnn" in probabilities)
            results[row] = Liveness(verdict, score, MappingProxyType(probabilities), 1)
        return results

    def _texture_probability(
        self, image_bgr: npt.NDArray[np.uint8], box: npt.NDArray[np.float32]
    ) -> float | None:
        """The texture model's P(live) for the face in ``box``; None when no patch fits."""
        patch = texture_patch(image_bgr, box)
        if patch is None:
            return None
        return self._texture_model.live_probability(texture_features(patch))

    def _thresholded(self, score: float, *, may_be_live: bool) -> Verdict:
        """The verdict of a fused score: spoof at or below ``spoof_threshold``, live at or above
        ``live_threshold`` when ``may_be_live``, else undecided."""
        if score <= self.config.spoof_threshold:
            return "spoof"
        if score >= self.config.live_threshold and may_be_live:
            return "live"
        return "undecided"

    def forget(self, track_id: int) -> None:
        """Drop a finished track's evidence (unknown ids are ignored)."""
        self._tracks.pop(track_id, None)


def _visible_fraction(box: npt.NDArray[np.float32], width: int, height: int) -> float:
    """The share of ``box``'s area (x1 y1 x2 y2, positive size) inside a width x height frame."""
    x1, y1, x2, y2 = (float(value) for value in box)
    inside_x = max(0.0, min(x2, width) - max(x1, 0.0))
    inside_y = max(0.0, min(y2, height) - max(y1, 0.0))
    return inside_x * inside_y / ((x2 - x1) * (y2 - y1))


def block_artefacts(image_bgr: npt.NDArray[np.uint8], bounds: tuple[int, int, int, int]) -> float:
    """How blocky the region is: the mean step across the 8-pixel grid of the frame (where JPEG
    and H.264 transform blocks meet) over the mean step elsewhere; about 1 for a clean image,
    2 and more for heavy compression."""
    left, top, right, bottom = bounds
    grey = cv2.cvtColor(image_bgr[top:bottom, left:right], cv2.COLOR_BGR2GRAY).astype(np.float32)
    ratios = []
    for axis, origin in ((1, left), (0, top)):
        steps = np.abs(np.diff(grey, axis=axis)).mean(axis=1 - axis)
        if steps.size < 16:
            continue
        # the step between pixels p and p+1 crosses the grid when (origin + p + 1) % 8 == 0
        on_grid = (origin + np.arange(steps.size) + 1) % _BLOCK_PX == 0
        elsewhere = float(steps[~on_grid].mean())
        if elsewhere > 0:
            ratios.append(float(steps[on_grid].mean()) / elsewhere)
    return float(np.mean(ratios)) if ratios else 1.0


def _patch_region(
    box: npt.NDArray[np.float32], shape: tuple[int, ...], analysis_width_px: int
) -> tuple[PatchRegion, tuple[int, int, int, int]]:
    """The region around ``box`` that is tracked, and its integer bounds in the frame."""
    height, width = int(shape[0]), int(shape[1])
    x1, y1, x2, y2 = (float(value) for value in box)
    half_width = (x2 - x1) * _REGION_MARGIN / 2
    half_height = (y2 - y1) * _REGION_MARGIN / 2
    centre_x, centre_y = (x1 + x2) / 2, (y1 + y2) / 2
    left = int(np.clip(centre_x - half_width, 0, width - 1))
    top = int(np.clip(centre_y - half_height, 0, height - 1))
    right = int(np.clip(centre_x + half_width, left + 1, width))
    bottom = int(np.clip(centre_y + half_height, top + 1, height))
    scale = analysis_width_px / max(x2 - x1, 1.0)
    return PatchRegion.around(box, (float(left), float(top)), scale), (left, top, right, bottom)
