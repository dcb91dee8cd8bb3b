"""Live recognition when things go wrong: a failing decision handler, a camera link that drops
and comes back, a camera replaced under the same id, and a worker that does not stop in time.

Real parts throughout: the public-domain sample video (a face that pans and zooms), the real
detector and encoder, and an embedded Redis gallery with the sample face enrolled. Where a
camera must misbehave on cue, ``SharedVideo`` plays the real video through the OpenCV backend
and ends a connection when told to; the next connection continues the same video, as a live
camera's scene goes on while its link is down.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy.typing as npt
import pytest
from live_support import SAMPLE_NAME, enrolled_services, frames_processed
from waiting import wait_until

from pipeline.access.policy import DoorConfig, DoorPolicy
from pipeline.capture import CameraConfig, CameraSet, FrameSource
from pipeline.capture.opencv_source import OpenCvSource
from pipeline.errors import AuditLogCorruptError, StreamEndedError
from pipeline.recognition.live import CameraTrack, LiveOutputs, LiveRecognition
from pipeline.recognition.offline import RecognitionConfig
from pipeline.service.app import Services
from pipeline.service.sample import SampleFiles, make_sample
from pipeline.types import Decision, RecognizedFrame

DEADLINE_SECONDS = 60.0
SWITCH_AFTER_FRAMES = 30  # frames of the first connection (or camera) before it goes away


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> SampleFiles:
    """The public-domain sample video and gallery (no shared data needed)."""
    return make_sample(tmp_path_factory.mktemp("sample"), seconds=8.0)


@pytest.fixture
def services(tmp_path: Path, sample: SampleFiles) -> Iterator[Services]:
    """Services with the astronaut enrolled, on a private data dir and embedded Redis."""
    with enrolled_services(tmp_path / "data", sample) as built:
        yield built


class SharedVideo:
    """The sample video, read in real time by OpenCV, shared by every connection made through
    ``source``: after ``drop_after_frames`` frames the current connection ends (the camera
    reconnects), and closing a connection leaves the video where it was."""

    backend = "opencv"

    def __init__(self, video: Path, drop_after_frames: int | None = None) -> None:
        self._video = OpenCvSource(CameraConfig(id="video", url=str(video), realtime=True))
        self._opened = False
        self._drop_after_frames = drop_after_frames
        self.frames = 0

    def source(self, config: CameraConfig) -> FrameSource:
        """The source factory of the camera(s) under test."""
        return self

    def open(self) -> None:
        """Open the video the first time; later connections continue it."""
        if not self._opened:
            self._video.open()
            self._opened = True

    def read(self, timeout_seconds: float) -> npt.NDArray[Any] | None:
        """The next frame of the video, or the end of this connection when it is due."""
        if self.frames == self._drop_after_frames:
            self._drop_after_frames = None
            raise StreamEndedError("camera link dropped (test)")
        self.frames += 1
        return self._video.read(timeout_seconds)

    def close(self) -> None:
        """End a connection; the video stays open for the next one."""

    def release(self) -> None:
        """Close the video itself."""
        self._video.close()


def _camera(camera_id: str, **overrides: Any) -> CameraConfig:
    settings: dict[str, Any] = {
        "id": camera_id,
        "url": "rtsp://127.0.0.1/test",  # never opened: SharedVideo serves the frames
        "reconnect_initial_seconds": 0.05,
        "reconnect_max_seconds": 0.1,
    }
    return CameraConfig(**{**settings, **overrides})


def _live(services: Services, cameras: CameraSet, outputs: LiveOutputs) -> LiveRecognition:
    return LiveRecognition(
        services.analyzer,
        services.gallery,
        cameras,
        config=RecognitionConfig(),
        metrics=services.metrics,
        outputs=outputs,
    )


def test_a_failing_decision_handler_does_not_stop_recognition(
    services: Services, sample: SampleFiles
) -> None:
    """The decision handler raises on every decision (as an audit log that refuses appends
    did): the failures are logged, the worker keeps running, and the other camera's face is
    still decided (one exception used to end recognition for every camera)."""
    decisions: list[Decision] = []

    def refusing_handler(decision: Decision) -> None:
        decisions.append(decision)
        raise AuditLogCorruptError("audit log damaged (test): appends refused")

    doors = [  # a door each: one door would hold the second grant back (anti-passback)
        DoorConfig(
            id=f"lab-{camera_id}", cameras=[camera_id], required_matches=2, require_liveness=False
        )
        for camera_id in ("door-a", "door-b")
    ]
    outputs = LiveOutputs(policy=DoorPolicy(doors), on_decision=refusing_handler)
    with CameraSet(services.metrics) as cameras:
        for camera_id in ("door-a", "door-b"):
            cameras.add(CameraConfig(id=camera_id, url=str(sample.video), loop=True, realtime=True))
        live = _live(services, cameras, outputs)
        live.start()
        try:
            wait_until(
                lambda: {decision.camera_id for decision in decisions} == {"door-a", "door-b"},
                DEADLINE_SECONDS,
                "a decision on each camera",
            )
            assert live.running
            before = frames_processed(services, "door-a")
            wait_until(
                lambda: frames_processed(services, "door-a") > before + 5,
                DEADLINE_SECONDS,
                "more frames processed",
            )
        finally:
            live.stop()
    assert all(decision.name == SAMPLE_NAME for decision in decisions)


def test_a_persistent_fault_is_logged_sparingly_and_shows_in_failing_seconds(
    services: Services, sample: SampleFiles, caplog: pytest.LogCaptureFixture
) -> None:
    """A frame callback that raises on every frame: one traceback is logged, not one per
    frame; ``failing_seconds`` (what readiness turns on) grows while the fault lasts and is 0
    again after the first clean round."""
    failing = threading.Event()
    failing.set()
    calls = 0

    def on_frame(frame: RecognizedFrame) -> None:
        nonlocal calls
        calls += 1
        if failing.is_set():
            raise RuntimeError("preview encoder broken (test)")

    outputs = LiveOutputs(on_frame=on_frame)
    with CameraSet(services.metrics) as cameras:
        cameras.add(CameraConfig(id="faulty", url=str(sample.video), loop=True, realtime=True))
        live = _live(services, cameras, outputs)
        live.start()
        try:
            wait_until(
                lambda: calls >= 20 and live.failing_seconds > 0.5,
                DEADLINE_SECONDS,
                "20 failing frames",
            )
            assert live.running
            logged = [r for r in caplog.records if "frame output failed" in r.getMessage()]
            assert len(logged) == 1, [r.getMessage() for r in logged]
            assert logged[0].exc_info is not None
            failing.clear()
            wait_until(lambda: live.failing_seconds == 0.0, DEADLINE_SECONDS, "a clean round")
        finally:
            live.stop()


def test_a_reconnect_finishes_the_open_tracks(services: Services, sample: SampleFiles) -> None:
    """The camera's link drops after 30 frames and comes back at once, the face where it was:
    the track from before the drop is finished and reported then (it used to go on, frame
    numbers and all, as if nothing happened), and the face gets a new track."""
    finished: list[CameraTrack] = []
    video = SharedVideo(sample.video, drop_after_frames=SWITCH_AFTER_FRAMES)
    try:
        with CameraSet(services.metrics, source_factory=video.source) as cameras:
            cameras.add(_camera("door"))
            live = _live(services, cameras, LiveOutputs(on_track=finished.append))
            live.start()
            try:
                wait_until(
                    lambda: video.frames >= SWITCH_AFTER_FRAMES + 40,
                    DEADLINE_SECONDS,
                    "frames after the drop",
                )
                wait_until(
                    lambda: frames_processed(services, "door") >= 40,
                    DEADLINE_SECONDS,
                    "frames recognised",
                )
                reported_while_running = list(finished)
            finally:
                live.stop()
    finally:
        video.release()
    before_drop = [
        item.track
        for item in reported_while_running
        if item.track.identity == SAMPLE_NAME and item.track.last_frame < SWITCH_AFTER_FRAMES
    ]
    assert before_drop, f"no track of {SAMPLE_NAME} ended at the drop: {reported_while_running}"
    after_drop = [item.track for item in finished if item.track.first_frame >= SWITCH_AFTER_FRAMES]
    assert any(track.identity == SAMPLE_NAME for track in after_drop), finished


def test_a_camera_replaced_under_its_id_starts_new_tracks(
    services: Services, sample: SampleFiles
) -> None:
    """Between two of the worker's reads the camera is removed and a new one added under the
    same id (its frame numbers start again at 0), the face where it was: the old camera's
    track is finished and reported at once instead of taking in the new camera's frames."""
    finished: list[CameraTrack] = []
    video = SharedVideo(sample.video)
    replaced = threading.Event()
    with CameraSet(services.metrics, source_factory=video.source) as cameras:

        def replace_once(frame: RecognizedFrame) -> None:
            # runs in the worker, after this round's reads and before the next round
            if frame.frame.sequence >= SWITCH_AFTER_FRAMES and not replaced.is_set():
                cameras.remove("door")
                cameras.add(_camera("door"))
                replaced.set()

        cameras.add(_camera("door"))
        live = _live(
            services, cameras, LiveOutputs(on_track=finished.append, on_frame=replace_once)
        )
        live.start()
        try:
            wait_until(replaced.is_set, DEADLINE_SECONDS, "the camera replaced")
            replaced_at = video.frames
            wait_until(
                lambda: video.frames >= replaced_at + 40,
                DEADLINE_SECONDS,
                "frames from the new camera",
            )
            reported_while_running = list(finished)
        finally:
            live.stop()
            video.release()
    assert any(item.track.identity == SAMPLE_NAME for item in reported_while_running), (
        f"the old camera's track of {SAMPLE_NAME} was not finished at the replacement: {finished}"
    )


def test_stop_leaves_the_tracks_of_a_worker_that_is_still_running(
    services: Services, sample: SampleFiles
) -> None:
    """stop() times out while the worker is busy (its frame callback blocks): the worker's
    trackers are left alone (they used to be finished and reported from the stopping thread
    while the worker still used them); once the worker has ended, stop() reports them."""
    finished: list[CameraTrack] = []
    blocking = threading.Event()
    release = threading.Event()

    def blocks_when_told(frame: RecognizedFrame) -> None:
        # late enough for the track to have the detections it needs to be reported
        named = any(label.name == SAMPLE_NAME for label in frame.tracks)
        if named and frame.frame.sequence >= SWITCH_AFTER_FRAMES and not blocking.is_set():
            blocking.set()
            release.wait(DEADLINE_SECONDS)

    outputs = LiveOutputs(on_track=finished.append, on_frame=blocks_when_told)
    with CameraSet(services.metrics) as cameras:
        cameras.add(CameraConfig(id="door", url=str(sample.video), loop=True, realtime=True))
        live = _live(services, cameras, outputs)
        live.start()
        try:
            wait_until(blocking.is_set, DEADLINE_SECONDS, f"a frame with {SAMPLE_NAME} named")
            live.stop(timeout_seconds=0.2)
            assert live.running
            assert finished == []
        finally:
            release.set()
            live.stop()
    assert not live.running
    assert any(item.track.identity == SAMPLE_NAME for item in finished)
