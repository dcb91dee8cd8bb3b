"""One camera's recognition: everything the frames of one camera go through, in one object.

A ``CameraRecognizer`` holds the camera's tracker (through ``StreamRecognizer``), its liveness
judge, how many frames it has taken (the detect-every-n rule counts frames taken from the queue,
not capture sequence numbers: under load the queue drops frames, and a rule on sequence numbers
could skip every frame that survives), the sequence of its last detected frame (the preview
labels the frames in between with the tracks seen there) and the camera object and session its
state comes from. ``LiveRecognition`` keeps one per camera id, schedules the cameras and batches
their encodes; no other per-camera state exists.

The camera's path, in order: ``observe`` (detect, track, align, liveness) -> the encode and
gallery query batched across cameras (``identify_batch``, tau applied there; each camera
searches its own ``galleries``, those of the doors watching it) -> ``record``
(each track's vote) -> ``observations`` (what the door policy is told). ``restart`` ends the
open tracks after a reconnect; ``finish`` ends them for good.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import cv2
import numpy as np

from engines.base import Engine
from pipeline.liveness import LivenessConfig, LivenessJudge
from pipeline.metrics import PipelineMetrics
from pipeline.recognition.analyzer import FaceAnalyzer
from pipeline.recognition.offline import RecognitionConfig, StreamRecognizer
from pipeline.types import (
    Frame,
    Matches,
    PendingFaces,
    Quality,
    TrackLabel,
    TrackObservation,
    TrackResult,
)

if TYPE_CHECKING:
    from pipeline.capture import Camera
    from pipeline.gallery.store import Gallery

__all__ = ["CameraRecognizer", "RecognitionParts"]

# a track's verdict as the door policy takes it: undecided (or liveness off) is None, and a
# door that requires liveness waits
_LIVE_OF_VERDICT = {"live": True, "spoof": False}


@dataclass(frozen=True, slots=True)
class RecognitionParts:
    """What every camera's recognition shares: the models, the gallery and the settings;
    ``liveness`` None when liveness is off."""

    analyzer: FaceAnalyzer
    gallery: Gallery
    config: RecognitionConfig
    metrics: PipelineMetrics
    liveness: LivenessConfig | None = None
    liveness_engine: Engine | None = None


class CameraRecognizer:
    """The recognition state of one camera and the steps its frames take (module docstring).

    Not thread-safe: the recognition worker is its only user.
    """

    def __init__(
        self,
        camera_id: str,
        origin: tuple[Camera, int],
        parts: RecognitionParts,
        galleries: frozenset[str] | None = None,
    ):
        self.camera_id = camera_id
        self.origin = origin  # the camera object and capture session this state comes from
        self._parts = parts
        # the union of the galleries of the doors watching it (None: every gallery), so a
        # look-alike only another site knows never hides this door's own person
        self.galleries = galleries
        self._stream = StreamRecognizer(parts.analyzer, parts.gallery, parts.config, galleries)
        self._judge = self._new_judge()
        self._taken = 0
        self._last_detected: int | None = None

    def _new_judge(self) -> LivenessJudge | None:
        liveness = self._parts.liveness
        return None if liveness is None else LivenessJudge(liveness, self._parts.liveness_engine)

    def observe(self, frame: Frame) -> tuple[PendingFaces, list[TrackResult]] | None:
        """Detect, track and align one frame, and let the liveness judge see it; the faces due
        for encoding and the tracks that ended (with their verdicts), or None when the frame is
        skipped by ``detect_every_frames``."""
        taken, self._taken = self._taken, self._taken + 1
        if taken % self._parts.config.detect_every_frames:
            return None
        self._last_detected = frame.sequence
        image_rgb = np.ascontiguousarray(
            cv2.cvtColor(frame.image, cv2.COLOR_BGR2RGB), dtype=np.uint8
        )
        observed = self._stream.observe(frame.sequence, image_rgb)
        metrics = self._parts.metrics
        metrics.faces_detected.labels(camera=self.camera_id).inc(len(observed.faces))
        if self._judge is not None:
            started = time.perf_counter()
            self._judge.observe(
                frame.image, observed.faces, np.asarray(observed.track_ids, np.int64)
            )
            metrics.stage_seconds.labels(stage="liveness", backend="cpu").observe(
                time.perf_counter() - started
            )
        return observed.pending, observed.ended

    def record(self, pending: PendingFaces, matches: Matches) -> None:
        """Give each pending face's gallery answer to its track (the track's vote)."""
        self._stream.record(pending, matches)

    def observations(
        self, pending: PendingFaces, matches: Matches, at: float
    ) -> list[TrackObservation]:
        """What the door policy is told of each pending face: the match within tau (or, when
        this encoding matched nobody, the identity the whole track names, with its mean's
        ``track_distance``: call after ``record``), the distance to the nearest identity, and
        the track's liveness so far."""
        consensus = {track.track_id: track.consensus for track in self._stream.tracker.live_tracks}
        observations = []
        qualities = pending.qualities or (None,) * len(pending.track_ids)
        probes = matches.probes
        for row, (track_id, frame_match, nearest, quality) in enumerate(
            zip(
                pending.track_ids, matches.best(), matches.nearest_distances, qualities, strict=True
            )
        ):
            if quality is not None:
                self._observe_quality(quality)
            by_track = consensus.get(track_id) if frame_match is None else None
            within = frame_match if by_track is None else by_track
            live: bool | None = None
            cues = None
            if self._judge is not None:
                verdict = self._judge.verdict(track_id)
                live = _LIVE_OF_VERDICT.get(verdict.verdict)
                cues = {"score": round(verdict.score, 4), "frames": float(verdict.frames)}
                cues.update({name: round(value, 4) for name, value in verdict.cues.items()})
            observations.append(
                TrackObservation(
                    camera_id=self.camera_id,
                    track_id=track_id,
                    identity_id=None if within is None else within.identity_id,
                    name=None if within is None else within.name,
                    distance=nearest,
                    live=live,
                    at=at,
                    liveness=cues,
                    track_distance=None if by_track is None else by_track.distance,
                    quality=quality,
                    template_id=None if frame_match is None else frame_match.template_id,
                    probe=None if probes is None or frame_match is None else probes.vectors[row],
                    galleries=() if within is None else within.galleries,
                )
            )
        return observations

    def _observe_quality(self, quality: Quality) -> None:
        """Export one encoded face's quality (the figures a door's minimums are set against)."""
        metrics = self._parts.metrics
        metrics.face_interocular_px.labels(camera=self.camera_id).observe(quality.interocular_px)
        metrics.face_sharpness.labels(camera=self.camera_id).observe(quality.sharpness)

    def labels(self, frame: Frame) -> tuple[TrackLabel, ...]:
        """The tracks seen in ``frame`` (on a frame the detector skipped: the tracks seen in the
        last detected one), for the preview."""
        since = frame.sequence if self._last_detected is None else self._last_detected
        labels = []
        for track in self._stream.tracker.live_tracks:
            if track.last_frame < since:
                continue  # not seen in this frame: coasting until the tracker ends it
            x1, y1, x2, y2 = (float(value) for value in track.box)
            latest = track.matches[-1] if track.matches else None
            labels.append(
                TrackLabel(
                    track_id=track.track_id,
                    box=(x1, y1, x2, y2),
                    name=None if latest is None else latest.name,
                    distance=track.distances[-1] if track.distances else None,
                    liveness=None
                    if self._judge is None
                    else self._judge.verdict(track.track_id).verdict,
                )
            )
        return tuple(labels)

    def with_verdict(self, finished: TrackResult) -> TrackResult:
        """A finished track with its final liveness verdict; the judge forgets the track."""
        if self._judge is None:
            return finished
        verdict = self._judge.verdict(finished.track_id).verdict
        self._judge.forget(finished.track_id)
        return replace(finished, live=_LIVE_OF_VERDICT.get(verdict))

    def restart(self, origin: tuple[Camera, int]) -> list[TrackResult]:
        """After a reconnect, or when a new camera took the id: end the open tracks and start
        the counts and liveness history afresh. The tracker stays, so its track ids keep
        counting (the door policy knows tracks by camera id and track id, and a new track 1
        must not inherit an old track 1's votes)."""
        ended = self.finish()
        self.origin = origin
        self._judge = self._new_judge()
        return ended

    def finish(self) -> list[TrackResult]:
        """End every open track: their results, each with its final verdict."""
        self._taken = 0
        self._last_detected = None
        return [self.with_verdict(result) for result in self._stream.finish()]
