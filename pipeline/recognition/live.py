"""Live recognition: frames from every camera's queue through one recognition worker.

One worker thread serves all cameras in rounds: each round takes one queued frame per camera
(the queue itself drops the oldest when the worker falls behind, and counts it), detects and
tracks each, then encodes every due face of every camera in one engine call. One worker on
purpose: the engines already use every core inside each call, and more threads would only
compete for them. Each camera keeps its own tracker; cameras added or removed from the
``CameraSet`` at run time are picked up on the next round. When a camera reconnects (a new
``Frame.session``) or its id comes back as a new camera, its open tracks are finished and its
liveness history dropped: the scene after a gap does not continue the one before it.

An error in one camera's work (a bad frame, a failing callback such as the decision handler)
is logged with the camera's id and skips that step for that camera only; the worker and the
other cameras go on.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from engines.base import Engine
from pipeline.access.policy import DoorPolicy
from pipeline.capture import Camera, CameraSet
from pipeline.errors import QueueClosedError
from pipeline.gallery.store import Gallery
from pipeline.liveness import LivenessConfig
from pipeline.metrics import PipelineMetrics
from pipeline.recognition.analyzer import FaceAnalyzer
from pipeline.recognition.camera import CameraRecognizer, RecognitionParts
from pipeline.recognition.offline import RecognitionConfig, identify_batch
from pipeline.types import (
    Decision,
    Frame,
    Matches,
    PendingFaces,
    RecognizedFrame,
    TrackObservation,
    TrackResult,
)

__all__ = [
    "UNHEALTHY_AFTER_SECONDS",
    "CameraTrack",
    "LiveOutputs",
    "LiveRecognition",
]

_log = logging.getLogger(__name__)
_IDLE_WAIT_SECONDS = 0.005  # no frame in any queue: wait this long before the next round
_FAILURE_LOG_SECONDS = 10.0  # while steps keep failing, one traceback per this many seconds
UNHEALTHY_AFTER_SECONDS = 10.0  # failing this long without a clean round: not healthy


class _FailureLog:
    """Failures the worker caught and lived on after. A persistent fault (a broken engine, a
    callback that always raises) would otherwise log a traceback on every round, hundreds a
    second; here the first is logged at once and then one every ``_FAILURE_LOG_SECONDS``, with
    the number left out. ``failing_since`` is when the current run of failures began (None
    after a round that took frames and failed nowhere): readiness turns on it."""

    def __init__(self) -> None:
        self.failing_since: float | None = None
        self._last_logged = -math.inf
        self._not_logged = 0
        self._round_failed = False

    def caught(self, message: str, *args: object) -> None:
        """Call in an ``except`` block: log the exception (rate-limited), count the round as
        failed."""
        now = time.monotonic()
        self._round_failed = True
        if self.failing_since is None:
            self.failing_since = now
        if now - self._last_logged < _FAILURE_LOG_SECONDS:
            self._not_logged += 1
            return
        if self._not_logged:
            message += f" ({self._not_logged} more failures since the last one logged)"
        _log.exception(message, *args)
        self._last_logged, self._not_logged = now, 0

    def round_ended(self, *, took_frames: bool) -> None:
        if took_frames and not self._round_failed:
            self.failing_since = None
        self._round_failed = False


@dataclass(frozen=True, slots=True)
class CameraTrack:
    """A finished track and the camera it was seen on."""

    camera_id: str
    track: TrackResult


@dataclass(frozen=True, slots=True)
class LiveOutputs:
    """Where live recognition sends its results (each callback runs in the worker thread and
    must not block long): finished tracks, door decisions made by ``policy``, and every frame
    taken from a camera with its labelled tracks (for previews)."""

    on_track: Callable[[CameraTrack], None] | None = None
    policy: DoorPolicy | None = None
    on_decision: Callable[[Decision], None] | None = None
    on_frame: Callable[[RecognizedFrame], None] | None = None


class LiveRecognition:
    """Runs recognition on the cameras of a ``CameraSet`` until ``stop``: schedules the
    cameras (one frame of each per round) and batches their encodes; everything per camera
    is in its ``CameraRecognizer``.

    outputs: finished tracks and door decisions go there (see ``LiveOutputs``).
    """

    def __init__(
        self,
        analyzer: FaceAnalyzer,
        gallery: Gallery,
        cameras: CameraSet,
        *,
        config: RecognitionConfig,
        metrics: PipelineMetrics,
        outputs: LiveOutputs | None = None,
        liveness: LivenessConfig | None = None,
        liveness_engine: Engine | None = None,
    ) -> None:
        self._parts = RecognitionParts(
            analyzer=analyzer,
            gallery=gallery,
            config=config,
            metrics=metrics,
            liveness=liveness if liveness is not None and liveness.enabled else None,
            liveness_engine=liveness_engine,
        )
        self._cameras = cameras
        self._metrics = metrics
        self._outputs = outputs if outputs is not None else LiveOutputs()
        self._recognizers: dict[str, CameraRecognizer] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failures = _FailureLog()

    @property
    def running(self) -> bool:
        """True while the worker thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def failing_seconds(self) -> float:
        """How long the worker's steps have been failing with no clean round between (0 when
        the last round that took frames failed nowhere)."""
        since = self._failures.failing_since
        return 0.0 if since is None else time.monotonic() - since

    def start(self) -> None:
        """Start the worker thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="recognition", daemon=True)
            self._thread.start()

    def stop(self, timeout_seconds: float = 10.0) -> None:
        """Stop the worker, join it, and report the tracks still open as finished (only once
        the worker has ended: its trackers are not safe to touch while it runs)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_seconds)
            if self._thread.is_alive():
                _log.warning(
                    "recognition worker did not stop within %.1f s; its open tracks are not "
                    "reported",
                    timeout_seconds,
                )
                return
        for camera_id in list(self._recognizers):
            self._forget(camera_id)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self._round()
            except Exception:  # a step not guarded per camera failed: the worker must live on
                self._failures.caught("a recognition round failed")
                self._failures.round_ended(took_frames=True)
                busy = False
            if not busy:
                self._stop.wait(_IDLE_WAIT_SECONDS)

    def _round(self) -> bool:
        """Take one frame of every camera and process them; False when no queue had a frame."""
        observed: list[tuple[CameraRecognizer, float, PendingFaces]] = []
        taken: list[Frame] = []
        for camera in list(self._cameras):
            try:
                frame = camera.frames.get(timeout_seconds=0.0)
            except QueueClosedError:  # the camera was removed: forget its tracks
                self._removed(camera.camera_id)
                continue
            if frame is None:
                continue
            taken.append(frame)
            try:
                recognizer = self._recognizer(camera, frame)
                result = recognizer.observe(frame)
                if result is not None:
                    pending, ended = result
                    self._report(recognizer, ended)
                    observed.append((recognizer, frame.captured_at, pending))
            except Exception:  # one bad frame must not end recognition for every camera
                self._failures.caught(
                    "recognition failed on a frame of camera %s", camera.camera_id
                )
        if observed:
            self._identify(observed)
        on_frame = self._outputs.on_frame
        if on_frame is not None:
            for frame in taken:
                try:
                    known = self._recognizers.get(frame.camera_id)
                    labels = () if known is None else known.labels(frame)
                    on_frame(RecognizedFrame(frame, labels))
                except Exception:
                    self._failures.caught("frame output failed for camera %s", frame.camera_id)
        for camera_id in set(self._recognizers) - set(self._cameras.ids()):
            self._removed(camera_id)
        self._failures.round_ended(took_frames=bool(taken))
        # Waiting after a round that took frames (a skipped detection, a frame with no face)
        # would let queued frames age and be evicted while the worker sleeps.
        return bool(taken)

    def _recognizer(self, camera: Camera, frame: Frame) -> CameraRecognizer:
        """The camera's recognizer; after a reconnect (a new session) or when a new camera
        took the id, its open tracks end first."""
        origin = (camera, frame.session)
        recognizer = self._recognizers.get(camera.camera_id)
        if recognizer is None:
            policy = self._outputs.policy
            galleries = None if policy is None else policy.galleries_for(camera.camera_id)
            recognizer = CameraRecognizer(camera.camera_id, origin, self._parts, galleries)
            self._recognizers[camera.camera_id] = recognizer
        elif recognizer.origin != origin:
            _log.info(
                "camera %s reconnected or was replaced: its open tracks end", camera.camera_id
            )
            self._report(recognizer, recognizer.restart(origin), with_verdicts=True)
        return recognizer

    def _identify(self, observed: list[tuple[CameraRecognizer, float, PendingFaces]]) -> None:
        """Encode the due faces of every camera in one engine call and query the gallery once
        per distinct set of galleries searched (tau applied there), then give each camera its
        answers."""
        try:
            results = identify_batch(
                self._parts.analyzer,
                self._parts.gallery,
                [pending for _, _, pending in observed],
                self._parts.config.match,
                galleries=[recognizer.galleries for recognizer, _, _ in observed],
            )
        except Exception:
            self._failures.caught("encoding or identification failed for %d frames", len(observed))
            return
        now = time.monotonic()
        for (recognizer, captured_at, pending), matches in zip(observed, results, strict=True):
            camera_id = recognizer.camera_id
            try:
                recognizer.record(pending, matches)
                self._count_matches(camera_id, matches)
                self._decide(recognizer.observations(pending, matches, time.time()))
                self._metrics.capture_to_decision_seconds.labels(camera=camera_id).observe(
                    now - captured_at
                )
                self._metrics.frames_processed.labels(camera=camera_id).inc()
            except Exception:  # the other cameras of this batch still get their matches
                self._failures.caught(
                    "recognition failed after identification on camera %s", camera_id
                )

    def _count_matches(self, camera_id: str, matches: Matches) -> None:
        for within, nearest in zip(matches.best(), matches.nearest_distances, strict=True):
            if nearest is None:
                result = "empty"
            else:
                self._metrics.match_distance.labels(camera=camera_id).observe(nearest)
                result = "unknown" if within is None else "known"
            self._metrics.matches.labels(camera=camera_id, result=result).inc()

    def _decide(self, observations: list[TrackObservation]) -> None:
        """Feed each encoding to the door policy and pass on the decisions it makes."""
        policy = self._outputs.policy
        if policy is None:
            return
        for observation in observations:
            for decision in policy.observe(observation):
                self._metrics.decisions.labels(
                    door=decision.door_id, outcome=decision.outcome
                ).inc()
                self._deliver(decision)

    def _deliver(self, decision: Decision) -> None:
        """Hand a decision to ``on_decision``; if that fails the decision is lost, loudly.

        Fail closed: a decision whose handler failed (not audited, not published) opens no
        door, and the policy has marked its track decided, so it is not made again.
        """
        on_decision = self._outputs.on_decision
        if on_decision is None:
            return
        try:
            on_decision(decision)
        except Exception:
            self._failures.caught(
                "decision %s for door %s (camera %s, track %d) was not delivered; no door acts "
                "on it",
                decision.outcome,
                decision.door_id,
                decision.camera_id,
                decision.track_id,
            )

    def _forget(self, camera_id: str) -> None:
        recognizer = self._recognizers.pop(camera_id, None)
        if recognizer is not None:
            self._report(recognizer, recognizer.finish(), with_verdicts=True)
        policy = self._outputs.policy
        if policy is not None:  # the unreported tracks too: a new tracker reuses ids
            policy.end_camera(camera_id)

    def _removed(self, camera_id: str) -> None:
        """Forget a camera that left the set, with its recognition metric series (cameras
        added and removed at run time must not pile up series)."""
        self._forget(camera_id)
        if camera_id not in self._cameras.ids():  # else a new camera of this id owns them
            for metric in (
                self._metrics.faces_detected,
                self._metrics.frames_processed,
                self._metrics.capture_to_decision_seconds,
                self._metrics.matches,
                self._metrics.match_distance,
                self._metrics.tracks_finished,
            ):
                metric.remove_by_labels({"camera": camera_id})

    def _report(
        self, recognizer: CameraRecognizer, ended: list[TrackResult], *, with_verdicts: bool = False
    ) -> None:
        """Report finished tracks: the door policy forgets them, metrics and ``on_track`` hear
        them. ``with_verdicts``: their liveness verdicts are already attached."""
        camera_id = recognizer.camera_id
        for finished in ended:
            try:
                track = finished if with_verdicts else recognizer.with_verdict(finished)
                self._report_track(camera_id, track)
            except Exception:  # the camera's other tracks still end, in the policy too
                self._failures.caught(
                    "reporting finished track %d of camera %s failed", finished.track_id, camera_id
                )

    def _report_track(self, camera_id: str, track: TrackResult) -> None:
        policy = self._outputs.policy
        if policy is not None:
            policy.end_track(camera_id, track.track_id)
        outcome = "known" if track.identity is not None else "unknown"
        self._metrics.tracks_finished.labels(camera=camera_id, outcome=outcome).inc()
        on_track = self._outputs.on_track
        if on_track is not None:
            on_track(CameraTrack(camera_id, track))
