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
from dataclasses import dataclass, replace

import cv2
import numpy as np

from engines.base import Engine
from pipeline.access.policy import Decision, DoorPolicy, TrackObservation
from pipeline.capture import Camera, CameraSet
from pipeline.errors import QueueClosedError
from pipeline.gallery.store import Gallery, Match
from pipeline.liveness import LivenessConfig, LivenessJudge, Verdict
from pipeline.metrics import PipelineMetrics
from pipeline.recognition.analyzer import FaceAnalyzer
from pipeline.recognition.offline import (
    PendingFaces,
    ProcessConfig,
    StreamRecognizer,
    TrackResult,
    identify_batch,
)
from pipeline.types import Frame

__all__ = [
    "UNHEALTHY_AFTER_SECONDS",
    "CameraTrack",
    "LiveOutputs",
    "LiveRecognition",
    "RecognizedFrame",
    "TrackLabel",
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
class TrackLabel:
    """What is known about one face track at a frame, for previews and overlays.

    box: x1, y1, x2, y2 in frame pixels; name: the identity of its latest encoding when within
    tau, else None; distance: that encoding's distance to its nearest identity (None before the
    first encoding, or with an empty gallery); liveness: the track's verdict so far.
    """

    track_id: int
    box: tuple[float, float, float, float]
    name: str | None
    distance: float | None
    liveness: Verdict | None = None  # None: liveness is off


@dataclass(frozen=True, slots=True)
class RecognizedFrame:
    """A frame taken from a camera, with the tracks seen in it after identification."""

    frame: Frame
    tracks: tuple[TrackLabel, ...]


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
    """Runs recognition on the cameras of a ``CameraSet`` until ``stop``.

    outputs: finished tracks and door decisions go there (see ``LiveOutputs``).
    """

    def __init__(
        self,
        analyzer: FaceAnalyzer,
        gallery: Gallery,
        cameras: CameraSet,
        *,
        config: ProcessConfig,
        metrics: PipelineMetrics,
        outputs: LiveOutputs | None = None,
        liveness: LivenessConfig | None = None,
        liveness_engine: Engine | None = None,
    ) -> None:
        self._analyzer = analyzer
        self._gallery = gallery
        self._cameras = cameras
        self._config = config
        self._metrics = metrics
        outputs = outputs if outputs is not None else LiveOutputs()
        self._on_track = outputs.on_track
        self._policy = outputs.policy
        self._on_decision = outputs.on_decision
        self._on_frame = outputs.on_frame
        self._recognizers: dict[str, StreamRecognizer] = {}
        self._liveness = liveness if liveness is not None and liveness.enabled else None
        self._liveness_engine = liveness_engine
        self._judges: dict[str, LivenessJudge] = {}  # per camera, like the trackers
        self._taken: dict[str, int] = {}  # frames taken from each camera's queue
        self._last_detected: dict[str, int] = {}  # sequence of each camera's last detected frame
        # the camera object and session the state above comes from, per camera id
        self._origins: dict[str, tuple[Camera, int]] = {}
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
        """Take one frame of every camera and process them; False when none had faces due."""
        observed: list[tuple[str, float, PendingFaces]] = []
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
                pending = self._observe(camera, frame)
            except Exception:  # one bad frame must not end recognition for every camera
                self._failures.caught(
                    "recognition failed on a frame of camera %s", camera.camera_id
                )
                continue
            if pending is not None:
                observed.append((camera.camera_id, frame.captured_at, pending))
        if observed:
            self._identify(observed)
        if self._on_frame is not None:
            for frame in taken:
                try:
                    self._on_frame(RecognizedFrame(frame, self._labels(frame)))
                except Exception:
                    self._failures.caught("frame output failed for camera %s", frame.camera_id)
        for camera_id in set(self._recognizers) - set(self._cameras.ids()):
            self._removed(camera_id)
        self._failures.round_ended(took_frames=bool(taken))
        return bool(observed)

    def _observe(self, camera: Camera, frame: Frame) -> PendingFaces | None:
        """Detect and track one frame; None when the frame is skipped by detect_every_frames."""
        camera_id = camera.camera_id
        origin = (camera, frame.session)
        if self._origins.get(camera_id, origin) != origin:
            self._restart(camera_id)
        self._origins[camera_id] = origin
        recognizer = self._recognizers.get(camera_id)
        if recognizer is None:
            recognizer = StreamRecognizer(self._analyzer, self._gallery, self._config)
            self._recognizers[camera_id] = recognizer
        # count frames taken, not capture sequence numbers: under load the queue drops frames,
        # and a rule on sequence numbers could skip every frame that survives for one camera
        taken = self._taken.get(camera_id, 0)
        self._taken[camera_id] = taken + 1
        if taken % self._config.detect_every_frames:
            return None
        self._last_detected[camera_id] = frame.sequence
        image_rgb = np.ascontiguousarray(
            cv2.cvtColor(frame.image, cv2.COLOR_BGR2RGB), dtype=np.uint8
        )
        observed = recognizer.observe(frame.sequence, image_rgb)
        self._metrics.faces_detected.labels(camera=camera_id).inc(len(observed.faces))
        if self._liveness is not None:
            judge = self._judges.get(camera_id)
            if judge is None:
                judge = LivenessJudge(self._liveness, self._liveness_engine)
                self._judges[camera_id] = judge
            started = time.perf_counter()
            judge.observe(frame.image, observed.faces, np.asarray(observed.track_ids, np.int64))
            self._metrics.stage_seconds.labels(stage="liveness", backend="cpu").observe(
                time.perf_counter() - started
            )
        self._report(camera_id, observed.ended)
        return observed.pending

    def _identify(self, observed: list[tuple[str, float, PendingFaces]]) -> None:
        """Encode the due faces of every camera in one engine call, then update each track."""
        try:
            results = identify_batch(
                self._analyzer, self._gallery, [pending for _, _, pending in observed]
            )
        except Exception:
            self._failures.caught("encoding or identification failed for %d frames", len(observed))
            return
        now = time.monotonic()
        for (camera_id, captured_at, pending), matches in zip(observed, results, strict=True):
            try:
                recognizer = self._recognizers.get(camera_id)
                if recognizer is not None:
                    recognizer.record(pending, matches)
                self._count_matches(camera_id, matches)
                self._decide(camera_id, pending, matches)
                self._metrics.capture_to_decision_seconds.labels(camera=camera_id).observe(
                    now - captured_at
                )
                self._metrics.frames_processed.labels(camera=camera_id).inc()
            except Exception:  # the other cameras of this batch still get their matches
                self._failures.caught(
                    "recognition failed after identification on camera %s", camera_id
                )

    def _count_matches(self, camera_id: str, matches: tuple[tuple[Match, ...], ...]) -> None:
        tau = self._config.match.max_distance
        for nearest in matches:
            if not nearest:
                result = "empty"
            else:
                distance = nearest[0].distance
                self._metrics.match_distance.labels(camera=camera_id).observe(distance)
                result = "known" if distance <= tau else "unknown"
            self._metrics.matches.labels(camera=camera_id, result=result).inc()

    def _labels(self, frame: Frame) -> tuple[TrackLabel, ...]:
        """The tracks seen in ``frame`` (on a frame the detector skipped: the tracks seen in the
        last detected one)."""
        recognizer = self._recognizers.get(frame.camera_id)
        if recognizer is None:
            return ()
        since = self._last_detected.get(frame.camera_id, frame.sequence)
        labels = []
        for track in recognizer.tracker.live_tracks:
            if track.last_frame < since:
                continue  # not seen in this frame: coasting until the tracker ends it
            x1, y1, x2, y2 = (float(value) for value in track.box)
            judge = self._judges.get(frame.camera_id)
            labels.append(
                TrackLabel(
                    track_id=track.track_id,
                    box=(x1, y1, x2, y2),
                    name=track.matches[-1].name if track.matches and track.matches[-1] else None,
                    distance=track.distances[-1] if track.distances else None,
                    liveness=None if judge is None else judge.verdict(track.track_id).verdict,
                )
            )
        return tuple(labels)

    def _decide(
        self, camera_id: str, pending: PendingFaces, matches: tuple[tuple[Match, ...], ...]
    ) -> None:
        """Feed each encoding to the door policy and pass on the decisions it makes."""
        if self._policy is None:
            return
        tau = self._config.match.max_distance
        now = time.time()
        judge = self._judges.get(camera_id)
        for track_id, nearest in zip(pending.track_ids, matches, strict=True):
            match = nearest[0] if nearest else None
            known = match if match is not None and match.distance <= tau else None
            live: bool | None = None  # liveness off or undecided: doors requiring it wait
            cues = None
            if judge is not None:
                verdict = judge.verdict(track_id)
                live = {"live": True, "spoof": False}.get(verdict.verdict)
                cues = {"score": round(verdict.score, 4), "frames": float(verdict.frames)}
                cues.update({name: round(value, 4) for name, value in verdict.cues.items()})
            observation = TrackObservation(
                camera_id=camera_id,
                track_id=track_id,
                identity_id=None if known is None else known.identity_id,
                name=None if known is None else known.name,
                distance=None if match is None else match.distance,
                live=live,
                at=now,
                liveness=cues,
            )
            for decision in self._policy.observe(observation):
                self._metrics.decisions.labels(
                    door=decision.door_id, outcome=decision.outcome
                ).inc()
                self._deliver(decision)

    def _deliver(self, decision: Decision) -> None:
        """Hand a decision to ``on_decision``; if that fails the decision is lost, loudly.

        Fail closed: a decision whose handler failed (not audited, not published) opens no
        door, and the policy has marked its track decided, so it is not made again.
        """
        if self._on_decision is None:
            return
        try:
            self._on_decision(decision)
        except Exception:
            self._failures.caught(
                "decision %s for door %s (camera %s, track %d) was not delivered; no door acts "
                "on it",
                decision.outcome,
                decision.door_id,
                decision.camera_id,
                decision.track_id,
            )

    def _restart(self, camera_id: str) -> None:
        """After a reconnect, or when a new camera took the id: finish the open tracks. The
        tracker stays, so its track ids keep counting (the door policy knows tracks by camera
        id and track id, and a new track 1 must not inherit an old track 1's votes)."""
        _log.info("camera %s reconnected or was replaced: its open tracks end", camera_id)
        self._end_tracks(camera_id, self._recognizers.get(camera_id))

    def _forget(self, camera_id: str) -> None:
        self._origins.pop(camera_id, None)
        self._end_tracks(camera_id, self._recognizers.pop(camera_id, None))
        if self._policy is not None:  # the unreported tracks too: a new tracker reuses ids
            self._policy.end_camera(camera_id)

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

    def _end_tracks(self, camera_id: str, recognizer: StreamRecognizer | None) -> None:
        """Report the camera's open tracks as finished; drop its liveness history and counts."""
        self._taken.pop(camera_id, None)
        self._last_detected.pop(camera_id, None)
        if recognizer is not None:  # report before the judge goes: its verdicts are final
            self._report(camera_id, recognizer.finish())
        self._judges.pop(camera_id, None)

    def _report(self, camera_id: str, ended: list[TrackResult]) -> None:
        judge = self._judges.get(camera_id)
        for finished in ended:
            try:
                self._report_track(camera_id, finished, judge)
            except Exception:  # the camera's other tracks still end, in the policy too
                self._failures.caught(
                    "reporting finished track %d of camera %s failed", finished.track_id, camera_id
                )

    def _report_track(
        self, camera_id: str, finished: TrackResult, judge: LivenessJudge | None
    ) -> None:
        track = finished
        if self._policy is not None:
            self._policy.end_track(camera_id, track.track_id)
        if judge is not None:
            verdict = judge.verdict(track.track_id).verdict
            track = replace(track, live={"live": True, "spoof": False}.get(verdict))
            judge.forget(track.track_id)
        outcome = "known" if track.identity is not None else "unknown"
        self._metrics.tracks_finished.labels(camera=camera_id, outcome=outcome).inc()
        if self._on_track is not None:
            self._on_track(CameraTrack(camera_id, track))
