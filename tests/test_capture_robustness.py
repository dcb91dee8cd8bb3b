"""Capture under trouble: reconnect jitter, credentials kept out of errors, frames numbered by
connection, a reader that outlives stop(), metric series of removed cameras, and a looping file
with no video frame (real GStreamer).

Scripted sources stand in for a camera only where a real one cannot be made to misbehave on
cue (a read that hangs until released); every wait is a poll with a deadline.
"""

from __future__ import annotations

import random
import statistics
import threading
from pathlib import Path
from typing import Any

import numpy.typing as npt
import pytest
from capture_support import TimingOutSource, grey_image
from waiting import wait_until

from engines.errors import BackendUnavailableError
from pipeline.capture import CameraStatus
from pipeline.capture.camera import Camera, CameraSet, CameraState, backoff_seconds
from pipeline.capture.config import CameraConfig
from pipeline.capture.gstreamer_source import GstreamerSource, require_gstreamer
from pipeline.capture.source import FrameSource
from pipeline.errors import StreamEndedError
from pipeline.metrics import PipelineMetrics
from pipeline.redact import redact_credentials

CAPTURE_SERIES = (
    "facestream_camera_up",
    "facestream_queue_frames",
    "facestream_frames_captured_total",
    "facestream_frames_dropped_total",
    "facestream_camera_reconnects_total",
)


def series(metrics: PipelineMetrics, name: str, camera_id: str) -> float | None:
    """The value of metric ``name`` for ``camera_id``, None when it has no such series."""
    return metrics.registry.get_sample_value(name, {"camera": camera_id})


class HangingReadSource:
    """A source whose first read hangs inside the "backend" until ``release`` is set, then
    returns a frame: the reader thread of a camera stuck in a backend call."""

    backend = "scripted"

    def __init__(self) -> None:
        self.reading = threading.Event()
        self.release = threading.Event()

    def open(self) -> None:
        """Connect (instantly)."""

    def read(self, timeout_seconds: float) -> npt.NDArray[Any] | None:
        """Hang until released (at most 10 s), then return a frame."""
        self.reading.set()
        self.release.wait(10.0)
        return grey_image(32, 24)

    def close(self) -> None:
        """Disconnect (instantly)."""


def test_backoff_jitter_only_shortens_waits() -> None:
    """Jitter scales each wait by a factor in [1 - jitter, 1]: capped waits spread below the
    cap (before, about half of them sat exactly on it), and no wait is longer than its step."""
    config = CameraConfig(
        id="a",
        url="x.mp4",
        reconnect_initial_seconds=0.5,
        reconnect_max_seconds=3.0,
        reconnect_jitter_fraction=0.2,
    )
    rng = random.Random(1)
    capped = [backoff_seconds(config, 10, rng) for _ in range(2000)]
    assert min(capped) >= 3.0 * 0.8
    assert max(capped) <= 3.0
    assert sum(wait == 3.0 for wait in capped) <= 2, "waits pile up on the cap"
    assert statistics.fmean(capped) == pytest.approx(2.7, abs=0.03)  # uniform on [2.4, 3.0]
    second = [backoff_seconds(config, 2, rng) for _ in range(2000)]  # the 1.0 s step
    assert min(second) >= 0.8
    assert max(second) <= 1.0


def test_redact_credentials_hides_every_password() -> None:
    """Passwords and credential query values in URLs, alone or inside a message, become ***;
    hosts, paths, other query values and addresses that are not URL userinfo stay."""
    assert redact_credentials("rtsp://admin:secret@10.0.0.5:554/s1") == (
        "rtsp://admin:***@10.0.0.5:554/s1"
    )
    assert redact_credentials("rtsp://token123@cam/live") == "rtsp://***@cam/live"
    assert redact_credentials("rtsp://admin:p@ss@cam/s") == "rtsp://admin:***@cam/s"
    assert redact_credentials("open rtsp://a:b@h and http://c:d@k/x failed; bob@example.com") == (
        "open rtsp://a:***@h and http://c:***@k/x failed; bob@example.com"
    )
    assert redact_credentials("http://cam/mjpeg?user=admin&pwd=hunter2&fps=5") == (
        "http://cam/mjpeg?user=admin&pwd=***&fps=5"
    )
    assert redact_credentials("http://cam/v?Token=abc#top") == "http://cam/v?Token=***#top"
    for untouched in ("rtsp://cam/a@b", "/videos/door.mp4", "http://cam:8080/mjpeg"):
        assert redact_credentials(untouched) == untouched
    assert redact_credentials(3) == "3"  # a V4L2 device index


@pytest.mark.parametrize("backend", ["opencv", "gstreamer"])
def test_camera_errors_do_not_show_the_url_password(
    backend: str, metrics: PipelineMetrics, silent_port: int
) -> None:
    """A camera whose URL holds credentials times out opening (a server on 127.0.0.1 that
    never answers): its last_error (what /v1/streams and camera_down events show) names the
    URL without the password, and the state listener never sees it either."""
    if backend == "gstreamer":
        try:
            require_gstreamer()
        except BackendUnavailableError as exc:
            pytest.skip(f"GStreamer is not available: {exc}")
    url = f"rtsp://viewer:hunter2secret@127.0.0.1:{silent_port}/stream"
    config = CameraConfig(
        id="private",
        url=url,
        backend=backend,
        open_timeout_seconds=1.0,
        reconnect_initial_seconds=0.05,
        reconnect_max_seconds=0.1,
    )
    heard: list[str] = []

    def listener(status: CameraStatus, previous: CameraState) -> None:
        heard.append(status.last_error or "")

    with Camera(config, metrics, on_state=listener) as camera:
        wait_until(lambda: camera.status().last_error is not None, 20.0, "a connection error")
        last_error = camera.status().last_error or ""
    assert f"rtsp://viewer:***@127.0.0.1:{silent_port}/stream" in last_error
    assert not any("hunter2secret" in error for error in heard)


def test_frames_carry_the_connection_they_came_from(metrics: PipelineMetrics) -> None:
    """Frame.sequence keeps counting across a reconnect while Frame.session goes up by one,
    so recognition can tell that the scene was interrupted."""
    frame = grey_image(32, 24)
    scripts: list[list[object]] = [[frame, frame], [frame, frame, *[None] * 1000]]
    sessions = iter(scripts)

    def factory(config: CameraConfig) -> FrameSource:
        return TimingOutSource(next(sessions, [None] * 1000))

    config = CameraConfig(
        id="blink",
        url="rtsp://127.0.0.1/none",
        queue_frames=10,
        reconnect_initial_seconds=0.01,
        reconnect_max_seconds=0.02,
    )
    with Camera(config, metrics, source_factory=factory) as camera:
        wait_until(lambda: len(camera.frames) >= 4, 10.0, "four frames over two connections")
        frames = [camera.frames.get(0) for _ in range(4)]
    assert [(frame.sequence, frame.session) for frame in frames if frame is not None] == [
        (0, 0),
        (1, 0),
        (2, 1),
        (3, 1),
    ]


def test_reader_outliving_stop_cannot_bring_the_camera_back_up(
    metrics: PipelineMetrics,
) -> None:
    """stop() gives up on a reader stuck in a backend call; when that call later returns a
    frame, the camera stays "stopped": no state change, no "up" for listeners, camera_up 0."""
    source = HangingReadSource()
    states: list[CameraState] = []
    config = CameraConfig(id="stuck", url="rtsp://127.0.0.1/none")
    camera = Camera(
        config,
        metrics,
        source_factory=lambda config: source,
        on_state=lambda status, previous: states.append(status.state),
    )
    camera.start()
    assert source.reading.wait(10.0), "the reader never read"
    assert not camera.stop(timeout_seconds=0.1), "the stuck reader ended early"
    assert camera.state == "stopped"
    heard_before = len(states)
    source.release.set()
    assert camera.stop(timeout_seconds=10.0), "the released reader did not end"
    assert camera.state == "stopped"
    assert "up" not in states[heard_before:]
    assert series(metrics, "facestream_camera_up", "stuck") == 0


def test_removed_camera_leaves_no_metric_series(metrics: PipelineMetrics) -> None:
    """A camera that captured, dropped and reconnected is removed: none of its capture series
    (gauges, counters) stays behind, so add/remove cycles do not pile up series."""
    frame = grey_image(16, 16)
    scripts: list[list[object]] = [[frame, frame, frame], [frame, *[None] * 1000]]
    sessions = iter(scripts)

    def factory(config: CameraConfig) -> FrameSource:
        return TimingOutSource(next(sessions, [None] * 1000))

    config = CameraConfig(
        id="temporary",
        url="rtsp://127.0.0.1/none",
        queue_frames=1,
        reconnect_initial_seconds=0.01,
        reconnect_max_seconds=0.02,
    )
    with CameraSet(metrics, source_factory=factory) as cameras:
        cameras.add(config)
        wait_until(
            lambda: (series(metrics, "facestream_frames_captured_total", "temporary") or 0) >= 4,
            10.0,
            "frames over two connections",
        )
        for name in CAPTURE_SERIES:
            assert series(metrics, name, "temporary") is not None, name
        cameras.remove("temporary")
        for name in CAPTURE_SERIES:
            assert series(metrics, name, "temporary") is None, name


def _file_without_video_frames(path: Path) -> None:
    """Write a Matroska file whose video track (MJPEG 64x48) holds no frame at all."""
    gst, _ = require_gstreamer()
    pipeline = gst.parse_launch(
        "videotestsrc num-buffers=5 ! video/x-raw,width=64,height=48,framerate=10/1 ! jpegenc "
        "! identity drop-probability=1.0 ! matroskamux ! filesink name=sink"
    )
    pipeline.get_by_name("sink").set_property("location", str(path))
    pipeline.set_state(gst.State.PLAYING)
    message = pipeline.get_bus().timed_pop_filtered(
        10 * gst.SECOND, gst.MessageType.EOS | gst.MessageType.ERROR
    )
    pipeline.set_state(gst.State.NULL)
    assert message is not None, "no end of stream while writing the file"
    assert message.type == gst.MessageType.EOS, "could not write the file"


def test_looping_file_without_frames_ends_instead_of_seeking_forever(tmp_path: Path) -> None:
    """GStreamer, loop=True, a file that is at its end again right after every rewind: open()
    raises StreamEndedError within its timeout (it used to seek back forever, deaf to its
    deadline and to stop())."""
    try:
        require_gstreamer()
    except BackendUnavailableError as exc:
        pytest.skip(f"GStreamer is not available: {exc}")
    path = tmp_path / "no-frames.mkv"
    _file_without_video_frames(path)
    source = GstreamerSource(
        CameraConfig(
            id="empty", url=str(path), backend="gstreamer", loop=True, open_timeout_seconds=1.0
        )
    )
    outcome: list[BaseException | None] = []

    def open_it() -> None:
        try:
            source.open()
            outcome.append(None)
        except BaseException as exc:  # handed to the test thread
            outcome.append(exc)

    opener = threading.Thread(target=open_it, daemon=True)
    opener.start()
    opener.join(15.0)
    try:
        assert not opener.is_alive(), "open() still seeking after 15 s"
        assert len(outcome) == 1
        assert isinstance(outcome[0], StreamEndedError), outcome
    finally:
        if not opener.is_alive():
            source.close()
