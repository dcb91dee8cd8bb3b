"""Capture: drop-oldest queues, both backends on a real video and a real RTSP server, and
cameras that survive a killed server, a frozen server, a URL that never answers and garbage.

The RTSP server is tests/rtsp_server.py (GstRtspServer) run as a subprocess on 127.0.0.1; it
binds port 0 and prints the port. Every wait is a poll with a deadline.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from capture_support import ScriptedSource, TimingOutSource, grey_image
from pydantic import ValidationError
from script_servers import RtspServer, ScriptServer
from waiting import wait_until

from engines.convert.parity import read_rgb
from engines.errors import BackendUnavailableError, ConfigError, FaceStreamError
from pipeline.capture.camera import Camera, CameraSet, backoff_seconds
from pipeline.capture.config import CameraConfig, CaptureConfig, source_kind
from pipeline.capture.gstreamer_source import require_gstreamer
from pipeline.capture.opencv_source import OpenCvSource
from pipeline.capture.queue import DropOldestQueue
from pipeline.capture.source import FrameSource, make_source
from pipeline.config.service import FaceStreamConfig
from pipeline.errors import (
    CameraError,
    CameraFrameError,
    CameraTimeoutError,
    QueueClosedError,
    StreamEndedError,
    UnknownCameraError,
)
from pipeline.metrics import PipelineMetrics
from pipeline.recognition.live import CameraTrack, LiveOutputs, LiveRecognition
from pipeline.recognition.offline import RecognitionConfig
from pipeline.service.app import open_services
from pipeline.types import Frame

VIDEO_NAME = "video/faces/short_hamilton_clip.mp4"
VIDEO_SIZE_PX = (640, 360)  # width, height of the clip
VIDEO_FRAME_COUNT = 275
BACKENDS = ["opencv", "gstreamer"]


# Helpers.


def sample(metrics: PipelineMetrics, name: str, camera_id: str) -> float:
    """The current value of metric ``name`` for ``camera_id`` (0 when never set)."""
    value = metrics.registry.get_sample_value(name, {"camera": camera_id})
    return 0.0 if value is None else value


def camera_up(metrics: PipelineMetrics, camera_id: str) -> float:
    """facestream_camera_up for ``camera_id``."""
    return sample(metrics, "facestream_camera_up", camera_id)


def reconnects(metrics: PipelineMetrics, camera_id: str) -> float:
    """facestream_camera_reconnects_total for ``camera_id``."""
    return sample(metrics, "facestream_camera_reconnects_total", camera_id)


def captured(metrics: PipelineMetrics, camera_id: str) -> float:
    """facestream_frames_captured_total for ``camera_id``."""
    return sample(metrics, "facestream_frames_captured_total", camera_id)


def next_frame(camera: Camera, timeout_seconds: float) -> Frame:
    """The next frame from ``camera``'s queue, or a failure after ``timeout_seconds``."""
    frame = camera.frames.get(timeout_seconds)
    if frame is None:
        pytest.fail(f"camera {camera.camera_id}: no frame within {timeout_seconds:g} s")
    return frame


def drain(camera: Camera) -> None:
    """Empty ``camera``'s queue without waiting."""
    while camera.frames.get(0) is not None:
        pass


# Fixtures.


@pytest.fixture(scope="module")
def video(shared_data: Path) -> Path:
    """The short face clip from ../shared/data, or a skip."""
    path = shared_data / VIDEO_NAME
    if not path.is_file():
        pytest.skip(f"test video not found at {path}")
    return path


@pytest.fixture(scope="module")
def gstreamer() -> None:
    """Skip unless PyGObject, GStreamer and gst-rtsp-server are installed."""
    try:
        require_gstreamer()
        import gi  # noqa: PLC0415  # PyGObject ships no types

        gi.require_version("GstRtspServer", "1.0")
    except (BackendUnavailableError, ValueError) as exc:
        pytest.skip(f"GStreamer is not available: {exc}")


@pytest.fixture
def rtsp_server(gstreamer: None, video: Path, tmp_path: Path) -> Iterator[RtspServer]:
    """A running RTSP server streaming the face clip; killed in teardown."""
    server = RtspServer(video, tmp_path / "rtsp_server.log")
    server.start()
    try:
        yield server
    finally:
        server.kill()


def backend_ready(backend: str, request: pytest.FixtureRequest) -> None:
    """Skip a gstreamer-parametrised test when GStreamer is missing."""
    if backend == "gstreamer":
        request.getfixturevalue("gstreamer")


def live_config(camera_id: str, url: str, backend: str, **overrides: Any) -> CameraConfig:
    """A camera config with short timeouts and backoff suited to tests."""
    settings: dict[str, Any] = {
        "id": camera_id,
        "url": url,
        "backend": backend,
        "open_timeout_seconds": 3.0,
        "stall_timeout_seconds": 1.5,
        "reconnect_initial_seconds": 0.1,
        "reconnect_max_seconds": 0.5,
    }
    return CameraConfig(**{**settings, **overrides})


# The queue.


def test_queue_drops_oldest_first_and_counts_each_drop(metrics: PipelineMetrics) -> None:
    """A full queue evicts the oldest item on put; each eviction adds 1 to frames_dropped."""
    queue: DropOldestQueue[int] = DropOldestQueue(
        2, metrics.frames_dropped.labels(camera="q"), metrics.queue_frames.labels(camera="q")
    )
    for item in range(5):
        queue.put(item)
    assert sample(metrics, "facestream_frames_dropped_total", "q") == 3
    assert sample(metrics, "facestream_queue_frames", "q") == 2
    assert [queue.get(0), queue.get(0)] == [3, 4]
    assert queue.get(0) is None
    assert sample(metrics, "facestream_queue_frames", "q") == 0


def test_queue_get_waits_for_an_item_and_times_out(metrics: PipelineMetrics) -> None:
    """get returns None after its timeout, and wakes when another thread puts an item."""
    queue: DropOldestQueue[str] = DropOldestQueue(1, metrics.frames_dropped.labels(camera="q"))
    assert queue.get(0.05) is None
    putter = threading.Timer(0.05, queue.put, args=("item",))
    putter.start()
    try:
        assert queue.get(10.0) == "item"
    finally:
        putter.cancel()


def test_queue_close_wakes_waiters_and_keeps_earlier_items(metrics: PipelineMetrics) -> None:
    """close wakes a waiting get with QueueClosedError after earlier items are handed out;
    a put after close is refused and counted as a drop."""
    queue: DropOldestQueue[int] = DropOldestQueue(4, metrics.frames_dropped.labels(camera="q"))
    queue.put(1)
    queue.close()
    assert queue.get(0) == 1
    with pytest.raises(QueueClosedError):
        queue.get(0)
    queue.put(2)
    assert sample(metrics, "facestream_frames_dropped_total", "q") == 1

    waiting: DropOldestQueue[int] = DropOldestQueue(4, metrics.frames_dropped.labels(camera="w"))
    outcome: list[BaseException] = []

    def wait_for_item() -> None:
        try:
            waiting.get(30.0)
        except QueueClosedError as exc:
            outcome.append(exc)

    waiter = threading.Thread(target=wait_for_item)
    waiter.start()
    waiting.close()
    waiter.join(10.0)
    assert not waiter.is_alive(), "get did not wake on close"
    assert len(outcome) == 1


def test_queue_loses_nothing_uncounted_under_concurrent_puts(metrics: PipelineMetrics) -> None:
    """With 4 producer threads, every item is either taken or counted as dropped."""
    queue: DropOldestQueue[int] = DropOldestQueue(3, metrics.frames_dropped.labels(camera="q"))
    taken: list[int] = []
    done = threading.Event()

    def consume() -> None:
        while not done.is_set() or len(queue):
            item = queue.get(0.01)
            if item is not None:
                taken.append(item)

    def produce(start: int) -> None:
        for item in range(start, start + 2000):
            queue.put(item)

    consumer = threading.Thread(target=consume)
    producers = [threading.Thread(target=produce, args=(start,)) for start in range(0, 8000, 2000)]
    consumer.start()
    for producer in producers:
        producer.start()
    for producer in producers:
        producer.join(30.0)
    done.set()
    consumer.join(30.0)
    dropped = sample(metrics, "facestream_frames_dropped_total", "q")
    assert len(taken) + dropped == 8000
    assert len(set(taken)) == len(taken)


# Config and errors.


def test_config_rejects_bad_camera_settings() -> None:
    """Unknown keys, loop on a live URL, initial > max backoff and repeated ids are errors."""
    with pytest.raises(ValidationError, match="extra"):
        CameraConfig.model_validate({"id": "a", "url": "x.mp4", "fps": 5})
    with pytest.raises(ValidationError, match="video files only"):
        CameraConfig(id="a", url="rtsp://127.0.0.1/stream", loop=True)
    with pytest.raises(ValidationError, match="reconnect_initial_seconds"):
        CameraConfig(id="a", url="x.mp4", reconnect_initial_seconds=5, reconnect_max_seconds=1)
    with pytest.raises(ValidationError, match="backend"):
        CameraConfig.model_validate({"id": "a", "url": "x.mp4", "backend": "ffmpeg"})
    with pytest.raises(ValidationError, match="repeated: a"):
        CaptureConfig.model_validate({"cameras": [{"id": "a", "url": "1.mp4"}] * 2})


def test_source_kind_recognises_each_url_form() -> None:
    """rtsp, http(s), /dev/videoN, device index and file paths each map to their kind."""
    assert source_kind("rtsp://10.0.0.5:554/s") == "rtsp"
    assert source_kind("HTTPS://cam/mjpeg") == "http"
    assert source_kind("/dev/video2") == "device"
    assert source_kind(0) == "device"
    assert source_kind("recordings/door.mp4") == "file"
    assert CameraConfig(id="usb", url=1).kind == "device"


@pytest.mark.parametrize(
    ("error", "builtin"),
    [
        (CameraError, ConnectionError),
        (CameraTimeoutError, TimeoutError),
        (StreamEndedError, EOFError),
        (CameraFrameError, ValueError),
        (QueueClosedError, RuntimeError),
        (UnknownCameraError, KeyError),
    ],
)
def test_capture_errors_have_project_root_and_builtin(
    error: type[Exception], builtin: type[Exception]
) -> None:
    """Each capture error derives from FaceStreamError and the builtin a caller would catch."""
    assert issubclass(error, FaceStreamError)
    assert issubclass(error, builtin)


def test_backoff_doubles_up_to_the_cap_with_bounded_jitter() -> None:
    """Waits double from the initial one, stop at the cap, and jitter stays in its bounds."""
    config = CameraConfig(
        id="a",
        url="x.mp4",
        reconnect_initial_seconds=0.5,
        reconnect_max_seconds=4.0,
        reconnect_jitter_fraction=0.0,
    )
    rng = random.Random(0)
    assert [backoff_seconds(config, failures, rng) for failures in range(1, 7)] == [
        0.5,
        1.0,
        2.0,
        4.0,
        4.0,
        4.0,
    ]
    jittered = config.model_copy(update={"reconnect_jitter_fraction": 0.25})
    waits = [backoff_seconds(jittered, 2, rng) for _ in range(200)]
    assert min(waits) >= 0.75
    assert max(waits) <= 1.0  # jitter only shortens a wait
    assert max(waits) - min(waits) > 0.1, "jitter did not spread the waits"


# Files.


def test_opencv_file_source_reads_bgr_frames_of_the_video_size(video: Path) -> None:
    """OpenCV reads the clip as BGR uint8 frames of 360x640 and ends with StreamEndedError."""
    source = OpenCvSource(CameraConfig(id="file", url=str(video)))
    images: list[npt.NDArray[Any] | None] = []

    def read_to_the_end() -> None:
        while True:
            images.append(source.read(1.0))

    source.open()
    try:
        with pytest.raises(StreamEndedError):
            read_to_the_end()
    finally:
        source.close()
    assert abs(len(images) - VIDEO_FRAME_COUNT) <= 2
    for image in images:
        assert image is not None
        assert image.dtype == np.uint8
        assert image.shape == (VIDEO_SIZE_PX[1], VIDEO_SIZE_PX[0], 3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_file_camera_counts_every_frame_and_finishes(
    backend: str, video: Path, metrics: PipelineMetrics, request: pytest.FixtureRequest
) -> None:
    """A file camera (no loop) reads the whole clip, numbers frames 0.., counts each frame
    as captured and each eviction as dropped, then finishes without reconnecting."""
    backend_ready(backend, request)
    with Camera(CameraConfig(id="file", url=str(video), backend=backend), metrics) as camera:
        wait_until(lambda: camera.state == "finished", 30.0, "the file camera to finish")
        held = list(iter(lambda: camera.frames.get(0), None))
    total = captured(metrics, "file")
    assert abs(total - VIDEO_FRAME_COUNT) <= 2
    assert sample(metrics, "facestream_frames_dropped_total", "file") == total - len(held)
    assert [frame.sequence for frame in held] == list(range(int(total) - len(held), int(total)))
    assert all(frame.size_px == VIDEO_SIZE_PX for frame in held)
    assert reconnects(metrics, "file") == 0
    assert camera_up(metrics, "file") == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_looping_realtime_file_is_paced_and_replays(
    backend: str, video: Path, metrics: PipelineMetrics, request: pytest.FixtureRequest
) -> None:
    """loop + realtime: frames arrive at about the file's rate and keep coming past its end."""
    backend_ready(backend, request)
    config = CameraConfig(id="demo", url=str(video), backend=backend, loop=True, realtime=True)
    with Camera(config, metrics) as camera:
        first = next_frame(camera, 10.0)
        wait_until(lambda: captured(metrics, "demo") >= 31, 10.0, "31 paced frames")
        last = next_frame(camera, 5.0)
    # 30 frames at 29.97 fps take ~1 s; unpaced decoding would take a few ms
    assert last.captured_at - first.captured_at > 0.5

    loop_config = CameraConfig(id="loop", url=str(video), backend=backend, loop=True)
    with Camera(loop_config, metrics) as camera:
        wait_until(
            lambda: captured(metrics, "loop") > VIDEO_FRAME_COUNT + 20, 30.0, "a second pass"
        )
        assert camera.state == "up"
    assert reconnects(metrics, "loop") == 0


# RTSP.


@pytest.mark.parametrize("backend", BACKENDS)
def test_rtsp_stream_is_read_by_each_backend(
    backend: str, rtsp_server: RtspServer, metrics: PipelineMetrics
) -> None:
    """Both backends read the real RTSP stream: BGR frames of the clip's size, camera_up 1."""
    with Camera(live_config("door", rtsp_server.url, backend), metrics) as camera:
        frames = [next_frame(camera, 15.0) for _ in range(10)]
        assert camera_up(metrics, "door") == 1
        assert camera.status().backend == backend
    assert all(frame.size_px == VIDEO_SIZE_PX for frame in frames)
    assert all(frame.image.dtype == np.uint8 for frame in frames)
    assert [frame.captured_at for frame in frames] == sorted(frame.captured_at for frame in frames)
    assert camera_up(metrics, "door") == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_camera_reconnects_after_server_is_killed_and_restarted(
    backend: str, rtsp_server: RtspServer, metrics: PipelineMetrics
) -> None:
    """SIGKILL the server mid-stream: camera_up drops to 0 and reconnects are counted; after a
    restart on the same port frames flow again and camera_up is back to 1."""
    with Camera(live_config("door", rtsp_server.url, backend), metrics) as camera:
        next_frame(camera, 15.0)
        assert camera_up(metrics, "door") == 1
        rtsp_server.kill()
        wait_until(lambda: camera_up(metrics, "door") == 0, 10.0, "camera_up 0 after the kill")
        wait_until(lambda: reconnects(metrics, "door") >= 1, 10.0, "a reconnect attempt")
        rtsp_server.start()
        wait_until(lambda: camera_up(metrics, "door") == 1, 20.0, "camera_up 1 after restart")
        drain(camera)
        before = captured(metrics, "door")
        next_frame(camera, 10.0)
        assert captured(metrics, "door") > before
        assert camera.state == "up"


@pytest.mark.parametrize("backend", BACKENDS)
def test_stall_watchdog_reconnects_a_frozen_server(
    backend: str, rtsp_server: RtspServer, metrics: PipelineMetrics
) -> None:
    """SIGSTOP the server (connection open, no data): the watchdog marks the camera down after
    about stall_timeout_seconds and retries; after SIGCONT frames flow again."""
    config = live_config("door", rtsp_server.url, backend, open_timeout_seconds=2.0)
    with Camera(config, metrics) as camera:
        next_frame(camera, 15.0)
        rtsp_server.freeze()
        frozen_at = time.monotonic()
        wait_until(
            lambda: camera_up(metrics, "door") == 0,
            config.stall_timeout_seconds + 5.0,
            "the stall watchdog",
        )
        assert time.monotonic() - frozen_at >= config.stall_timeout_seconds * 0.5
        assert "no new frame" in (camera.status().last_error or "")
        wait_until(lambda: reconnects(metrics, "door") >= 1, 10.0, "a reconnect attempt")
        rtsp_server.thaw()
        wait_until(lambda: camera_up(metrics, "door") == 1, 20.0, "camera_up 1 after SIGCONT")
        drain(camera)
        next_frame(camera, 10.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_url_that_never_answers_backs_off_without_crashing(
    backend: str, silent_port: int, metrics: PipelineMetrics, request: pytest.FixtureRequest
) -> None:
    """A server that accepts but never answers: open times out, attempts repeat with backoff,
    camera_up stays 0, nothing is queued, and stop() ends the thread."""
    backend_ready(backend, request)
    config = live_config(
        "silent", f"rtsp://127.0.0.1:{silent_port}/stream", backend, open_timeout_seconds=0.5
    )
    camera = Camera(config, metrics)
    camera.start()
    try:
        wait_until(lambda: reconnects(metrics, "silent") >= 2, 15.0, "two reconnect attempts")
        assert camera_up(metrics, "silent") == 0
        assert camera.state in ("connecting", "waiting")
        assert "0.5 s" in (camera.status().last_error or "")
        assert len(camera.frames) == 0
    finally:
        assert camera.stop(timeout_seconds=10.0), "the reader thread did not end"
    assert camera.status().state == "stopped"


# Garbage, resolution changes, a missing backend.


def test_garbage_frames_reconnect_and_resolution_changes_just_work(
    metrics: PipelineMetrics,
) -> None:
    """Float, empty, grayscale and missing images each tear the source down and reopen it;
    a resolution change mid-stream is accepted; nothing raises out of the reader."""
    scripts: list[list[object]] = [
        [grey_image(64, 48), grey_image(32, 24), np.zeros((48, 64, 3), np.float32)],
        [grey_image(64, 48), np.zeros((0, 0, 3), np.uint8)],
        [grey_image(64, 48), np.zeros((48, 64), np.uint8)],
        [grey_image(64, 48), CameraFrameError("OpenCV returned no image")],
        [RuntimeError("a backend bug")],
    ]
    sessions = iter(scripts)

    def factory(config: CameraConfig) -> FrameSource:
        script = next(sessions, None)
        return TimingOutSource(
            script if script is not None else [grey_image(80, 60)] + [None] * 1000
        )

    config = CameraConfig(
        id="garbage",
        url="rtsp://127.0.0.1/none",
        reconnect_initial_seconds=0.01,
        reconnect_max_seconds=0.02,
        queue_frames=100,
    )
    with Camera(config, metrics, source_factory=factory) as camera:
        wait_until(lambda: reconnects(metrics, "garbage") >= 5, 10.0, "five reconnects")
        wait_until(lambda: camera.state == "up", 10.0, "the camera up again")
        sizes = [frame.size_px for frame in iter(lambda: camera.frames.get(0), None)]
    assert sizes == [(64, 48), (32, 24), (64, 48), (64, 48), (64, 48), (80, 60)]
    assert reconnects(metrics, "garbage") == 5
    assert camera.state == "stopped"


def test_stall_is_detected_when_a_source_only_times_out(metrics: PipelineMetrics) -> None:
    """A source whose reads keep returning None (no new frame) is torn down after
    stall_timeout_seconds, and the camera records why."""
    first_session: list[object] = [grey_image(16, 16)]

    def factory(config: CameraConfig) -> FrameSource:
        script = first_session + [None] * 100_000
        first_session.clear()
        return TimingOutSource(script)

    config = CameraConfig(
        id="stall", url="rtsp://127.0.0.1/none", stall_timeout_seconds=0.3, queue_frames=1
    )
    with Camera(config, metrics, source_factory=factory) as camera:
        next_frame(camera, 5.0)
        wait_until(lambda: reconnects(metrics, "stall") >= 1, 10.0, "a reconnect after the stall")
        assert "no new frame for 0.3 s" in (camera.status().last_error or "")


def test_stop_is_immediate_during_a_reconnect_wait(metrics: PipelineMetrics) -> None:
    """The backoff wait is on the stop Event: stop() ends a reader that would otherwise wait
    60 s before its next attempt."""
    config = CameraConfig(
        id="wait",
        url="rtsp://127.0.0.1/none",
        reconnect_initial_seconds=60.0,
        reconnect_max_seconds=60.0,
    )
    camera = Camera(config, metrics, source_factory=lambda config: ScriptedSource([]))
    camera.start()
    try:
        wait_until(lambda: camera.state == "waiting", 5.0, "the camera to wait for a reconnect")
    finally:
        ended = camera.stop(timeout_seconds=5.0)
    assert ended, "stop() did not end the reader during its 60 s backoff wait"
    assert reconnects(metrics, "wait") == 0


def test_missing_gstreamer_is_an_error_not_a_fallback(
    metrics: PipelineMetrics, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without gi, the gstreamer backend raises BackendUnavailableError naming the packages,
    and a camera on it fails once (no retry loop, no switch to OpenCV)."""
    monkeypatch.setitem(sys.modules, "gi", None)  # makes `import gi` raise ImportError
    with pytest.raises(BackendUnavailableError, match=r"gir1\.2-gstreamer-1\.0"):
        require_gstreamer()
    config = CameraConfig(id="gst", url="rtsp://127.0.0.1/none", backend="gstreamer")
    with Camera(config, metrics) as camera:
        wait_until(lambda: camera.state == "failed", 5.0, "the camera to fail")
        assert "PyGObject" in (camera.status().last_error or "")
    assert reconnects(metrics, "gst") == 0


DLIB_AFTER_GSTREAMER = """
import numpy as np
from pipeline.capture.gstreamer_source import require_gstreamer
require_gstreamer()
import dlib
rectangles, scores, _ = dlib.get_frontal_face_detector().run(np.zeros((64, 64, 3), np.uint8))
for _rectangle, _score in zip(rectangles, scores):  # pybind11's iterator ends by a C++ throw
    pass
"""


def test_gstreamer_in_the_process_does_not_break_dlib(gstreamer: None) -> None:
    """With GStreamer loaded (it drags libunwind into the global symbol scope), dlib's C++
    exceptions still unwind: the process exits 0 instead of aborting."""
    pytest.importorskip("dlib")
    result = subprocess.run(
        [sys.executable, "-c", DLIB_AFTER_GSTREAMER],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]


# Many cameras.


def test_camera_set_adds_and_removes_cameras_at_runtime(
    video: Path, metrics: PipelineMetrics, silent_port: int
) -> None:
    """Cameras are added and removed while others run; a dead camera does not stop a live one;
    duplicate ids and unknown ids are errors; stop_all ends every reader."""
    live = CameraConfig(id="live", url=str(video), loop=True, realtime=True)
    dead = live_config(
        "dead", f"rtsp://127.0.0.1:{silent_port}/x", "opencv", open_timeout_seconds=0.5
    )
    with CameraSet(metrics) as cameras:
        cameras.add(live)
        cameras.add(dead)
        assert cameras.ids() == ["dead", "live"]
        with pytest.raises(ConfigError, match="already exists"):
            cameras.add(live)
        next_frame(cameras.get("live"), 10.0)
        removed = cameras.get("dead")
        cameras.remove("dead")
        assert removed.state == "stopped"
        assert metrics.registry.get_sample_value("facestream_camera_up", {"camera": "dead"}) is None
        with pytest.raises(UnknownCameraError):
            cameras.remove("dead")
        before = captured(metrics, "live")
        wait_until(lambda: captured(metrics, "live") > before + 5, 10.0, "live frames")
        running = list(cameras)
    assert len(cameras) == 0
    assert all(camera.state == "stopped" for camera in running)


def test_make_source_uses_the_configured_backend_only() -> None:
    """The backend table gives each configured backend its own source class."""
    assert make_source(CameraConfig(id="a", url="x.mp4")).backend == "opencv"
    gst = CameraConfig(id="a", url="x.mp4", backend="gstreamer")
    assert make_source(gst).backend == "gstreamer"


# Recognition over a camera that dies and comes back.


def test_recognition_continues_after_the_rtsp_server_restarts(
    rtsp_server: RtspServer, shared_data: Path, tmp_path: Path
) -> None:
    """Live recognition of the hamilton clip over RTSP: the server is killed and restarted, and
    afterwards frames are processed again and new face tracks are encoded and compared with
    the gallery (recognition keeps going; whether a re-encoded RTSP frame is within tau of the
    enrolment photo is not asserted)."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    photo = shared_data / "faces" / "face_recognition" / "examples" / "lin-manuel-miranda.png"
    finished: list[CameraTrack] = []
    with open_services(FaceStreamConfig(data_dir=tmp_path / "data")) as services:
        found = services.enrolment_templates([(photo.name, read_rgb(photo))])
        assert not found.rejected
        services.enroll("lin_manuel_miranda", found.templates)
        metrics = services.metrics

        def processed() -> float:
            return sample(metrics, "facestream_frames_processed_total", "stage")

        cameras = CameraSet(metrics)
        camera = cameras.add(live_config("stage", rtsp_server.url, "opencv"))
        live = LiveRecognition(
            services.analyzer,
            services.gallery,
            cameras,
            config=RecognitionConfig(),
            metrics=metrics,
            outputs=LiveOutputs(on_track=finished.append),
        )
        with cameras:
            camera.start()
            live.start()
            wait_until(lambda: processed() >= 20, 30.0, "20 frames recognised")
            rtsp_server.kill()
            wait_until(lambda: camera_up(metrics, "stage") == 0, 10.0, "camera_up 0")
            restart_sequence = camera.status().frames_captured
            rtsp_server.start()
            wait_until(lambda: camera_up(metrics, "stage") == 1, 20.0, "camera_up 1")
            before = processed()
            wait_until(lambda: processed() >= before + 40, 30.0, "40 more frames recognised")
            live.stop()
    after = [item.track for item in finished if item.track.first_frame >= restart_sequence]
    # faces seen after the restart were detected, encoded and compared with the gallery
    assert any(track.encodings >= 1 and track.distance is not None for track in after), finished


# HTTP MJPEG.

MJPEG_SERVER_SCRIPT = Path(__file__).resolve().parent / "mjpeg_server.py"
MJPEG_ELEMENTS = ("souphttpsrc", "multipartdemux", "jpegdec")  # the gstreamer backend's HTTP path
THUMBNAIL_BLOCK_PX = 4  # frames are compared as 4x4-pixel block means (JPEG noise averages out)


class MjpegServer(ScriptServer):
    """tests/mjpeg_server.py: the clip as HTTP MJPEG at 15 fps."""

    script = MJPEG_SERVER_SCRIPT
    url_template = "http://127.0.0.1:{port}/stream.mjpg"
    extra_arguments = ("--fps", "15")


@pytest.fixture
def mjpeg_server(video: Path, tmp_path: Path) -> Iterator[MjpegServer]:
    """A running HTTP MJPEG server streaming the face clip at 15 fps; killed in teardown."""
    server = MjpegServer(video, tmp_path / "mjpeg_server.log")
    server.start()
    try:
        yield server
    finally:
        server.kill()


def mjpeg_backend_ready(backend: str, request: pytest.FixtureRequest) -> None:
    """Skip unless ``backend`` can read HTTP MJPEG here (gstreamer: GStreamer and the soup,
    multipart and jpeg plugins of gstreamer1.0-plugins-good)."""
    backend_ready(backend, request)
    if backend != "gstreamer":
        return
    gst, _ = require_gstreamer()
    missing = [name for name in MJPEG_ELEMENTS if gst.ElementFactory.find(name) is None]
    if missing:
        pytest.skip(
            f"GStreamer cannot read HTTP MJPEG here: no {', '.join(missing)} element "
            "(apt-get install gstreamer1.0-plugins-good)"
        )


def thumbnail(image: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """``image`` (HxWx3) shrunk by block means of THUMBNAIL_BLOCK_PX pixels, as float32."""
    height, width, channels = image.shape
    block = THUMBNAIL_BLOCK_PX
    blocks = image[: height - height % block, : width - width % block].reshape(
        height // block, block, width // block, block, channels
    )
    means: npt.NDArray[np.float32] = blocks.mean(axis=(1, 3), dtype=np.float32)
    return means


@pytest.fixture(scope="module")
def clip_thumbnails(video: Path) -> npt.NDArray[np.float32]:
    """Every frame of the clip as decoded by OpenCV (BGR), as thumbnails: (N, h, w, 3)."""
    source = OpenCvSource(CameraConfig(id="clip", url=str(video)))
    thumbnails: list[npt.NDArray[np.float32]] = []
    source.open()
    try:
        while True:
            image = source.read(1.0)
            assert image is not None
            thumbnails.append(thumbnail(image))
    except StreamEndedError:
        pass
    finally:
        source.close()
    return np.stack(thumbnails)


def closest_clip_distance(
    image: npt.NDArray[np.uint8], clip_thumbnails: npt.NDArray[np.float32]
) -> float:
    """The mean absolute difference (0-255 levels) between ``image`` and the clip frame most
    like it, on thumbnails."""
    differences = np.abs(clip_thumbnails - thumbnail(image)[np.newaxis])
    return float(differences.mean(axis=(1, 2, 3)).min())


@pytest.mark.parametrize("backend", BACKENDS)
def test_mjpeg_stream_is_read_by_each_backend(
    backend: str,
    mjpeg_server: MjpegServer,
    clip_thumbnails: npt.NDArray[np.float32],
    metrics: PipelineMetrics,
    request: pytest.FixtureRequest,
) -> None:
    """Both backends read a real HTTP MJPEG stream (multipart/x-mixed-replace of JPEGs): frames
    of the clip's size, in BGR order (each matches a frame of the clip as OpenCV decodes the
    file, and matches it worse with red and blue swapped), camera_up 1."""
    mjpeg_backend_ready(backend, request)
    with Camera(live_config("webcam", mjpeg_server.url, backend), metrics) as camera:
        frames = [next_frame(camera, 15.0) for _ in range(10)]
        assert camera_up(metrics, "webcam") == 1
        assert camera.status().backend == backend
    assert all(frame.size_px == VIDEO_SIZE_PX for frame in frames)
    assert all(frame.image.dtype == np.uint8 for frame in frames)
    assert [frame.captured_at for frame in frames] == sorted(frame.captured_at for frame in frames)
    for frame in frames[::3]:
        distance = closest_clip_distance(frame.image, clip_thumbnails)
        swapped = closest_clip_distance(frame.image[:, :, ::-1], clip_thumbnails)
        assert distance < 4.0, f"frame {frame.sequence} is no frame of the clip ({distance:.1f})"
        assert swapped > 2 * distance, f"frame {frame.sequence} may be RGB: {swapped:.1f}"
    assert camera_up(metrics, "webcam") == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_mjpeg_camera_reconnects_after_server_is_killed_and_restarted(
    backend: str,
    mjpeg_server: MjpegServer,
    metrics: PipelineMetrics,
    request: pytest.FixtureRequest,
) -> None:
    """SIGKILL the MJPEG server mid-stream: camera_up drops to 0 and reconnects are counted
    while the port refuses connections; after a restart on the same port frames flow again and
    camera_up is back to 1."""
    mjpeg_backend_ready(backend, request)
    port = mjpeg_server.port
    with Camera(live_config("webcam", mjpeg_server.url, backend), metrics) as camera:
        next_frame(camera, 15.0)
        assert camera_up(metrics, "webcam") == 1
        mjpeg_server.kill()
        wait_until(lambda: camera_up(metrics, "webcam") == 0, 10.0, "camera_up 0 after the kill")
        wait_until(lambda: reconnects(metrics, "webcam") >= 2, 10.0, "two reconnect attempts")
        assert camera.status().last_error
        mjpeg_server.start()
        assert mjpeg_server.port == port
        wait_until(lambda: camera_up(metrics, "webcam") == 1, 20.0, "camera_up 1 after restart")
        drain(camera)
        before = captured(metrics, "webcam")
        frame = next_frame(camera, 10.0)
        assert captured(metrics, "webcam") > before
        assert frame.size_px == VIDEO_SIZE_PX
        assert camera.state == "up"
