"""The style stream: capture -> style network (batch 1, fixed size) -> sinks.

    config = StyleStreamConfig(source="clip.mp4", style="starry_night", out_file=Path("out.mp4"))
    with StyleStream(config, StyleMetrics.create(), PipelineMetrics.create()) as stream:
        stream.run()                      # until the source ends, max_frames, or stop()
        stream.switch_style("udnie")      # from another thread (the API): next frame uses it
        stream.stop()                     # from another thread or a signal handler

A video *file* is transcoded: every frame is read in order, as fast as the network runs (not
at the file's own rate), nothing is dropped, and the output file keeps the source's frame rate
and frame count. Live sources go through ``pipeline.capture.Camera`` (reconnect with backoff,
drop-oldest queue, stall watchdog): a stream that falls behind drops the oldest frames, counted
per camera. Frames of any size are fitted to the model (see ``pipeline.style.frames``); the
sinks keep the first frame's size, and a live source that reconnects at another resolution
is scaled into it with black bars (``fit_to_output``).

A file source keeps its timestamps: each frame carries the presentation time the decoder reports
(relative to the start of the video track), and the H.264 file sink writes them as they are and
carries the source's first audio track over on the same timeline (``pipeline.style.h264_sink``).
Live sources have no audio here.

A frame the style engine fails on (a FaceStreamError or a runtime's RuntimeError) is counted in
``facestream_style_engine_errors_total`` and skipped, so one bad frame does not end a live
stream; ``engine_error_limit_frames`` failures in a row end the run with the last error.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import cv2
import numpy as np
import numpy.typing as npt

from engines.errors import FaceStreamError
from pipeline.capture import Camera, CameraConfig, source_kind
from pipeline.config.secrets import SecretSpec, resolve_secret
from pipeline.errors import RecordingError
from pipeline.metrics import PipelineMetrics, StyleMetrics
from pipeline.style.config import StyleStreamConfig
from pipeline.style.engine import (
    SHIPPED_STORE,
    StyleCatalog,
    StyleEngineSettings,
    StyleNetwork,
    load_style_network,
)
from pipeline.style.errors import SinkError
from pipeline.style.frames import Letterbox, TemporalFilter, blend, fit_to_output
from pipeline.style.h264_sink import H264FileSink, VideoFileSpec
from pipeline.style.sinks import (
    FileSink,
    FrameSink,
    MjpegSink,
    RtspCredentials,
    RtspSink,
    port_is_free,
)

__all__ = ["StreamReport", "StyleStream", "Stylizer", "TimedFrame", "rtsp_credentials"]

_log = logging.getLogger(__name__)
_DEFAULT_LIVE_FPS = 25.0  # sinks of live sources are opened before any rate is known
_POLL_SECONDS = 0.25


@dataclass(frozen=True, slots=True)
class TimedFrame:
    """A BGR uint8 frame with its presentation time (seconds from the stream's start) and the
    ``time.monotonic()`` at which it left the decoder."""

    image: npt.NDArray[np.uint8]
    pts_seconds: float
    captured_at: float


@dataclass(frozen=True, slots=True)
class StreamReport:
    """What one ``run`` did."""

    frames_in: int
    frames_out: int
    seconds: float
    style: str

    @property
    def fps(self) -> float:
        """Frames out per second of wall time."""
        return self.frames_out / self.seconds if self.seconds > 0 else 0.0


def rtsp_credentials(config: StyleStreamConfig) -> RtspCredentials | None:
    """The login the RTSP sink asks for: ``rtsp_username`` with the password from
    ``rtsp_password_file`` (read now) or else ``rtsp_password``; None without a user name.
    ConfigError (a ValueError) for a password file that cannot be read or is empty."""
    if config.rtsp_username is None:
        return None
    spec = SecretSpec(
        what="rtsp_password",
        environment=None,  # the CLI reads the environment; nothing here does
        file=config.rtsp_password_file,
        inline=config.rtsp_password,
    )
    password = resolve_secret(spec)
    if password is None:  # the config's validator requires one of the two
        raise ValueError("rtsp_username is set without a password")
    return RtspCredentials(username=config.rtsp_username, password=password)


class Stylizer:
    """Frame in, stylized frame of the same size out; the style and strength can change live.

    Thread-safe: ``switch_style`` and ``set_strength`` may be called from any thread while
    another calls ``process``; a switch loads the new model first, then swaps it in.
    """

    def __init__(
        self,
        catalog: StyleCatalog,
        settings: StyleEngineSettings,
        *,
        style: str,
        strength: float = 1.0,
        temporal_smoothing: float = 0.0,
    ) -> None:
        self._catalog = catalog
        self._settings = settings
        self._lock = threading.Lock()
        self._network = load_style_network(catalog.path(style), settings)
        self._style = style
        self._strength = self._checked_strength(strength)
        self._filter = TemporalFilter(temporal_smoothing)
        self._letterbox: Letterbox | None = None

    @staticmethod
    def _checked_strength(strength: float) -> float:
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"style strength must be in [0, 1], got {strength}")
        return strength

    @property
    def network(self) -> StyleNetwork:
        """The style model in use now."""
        with self._lock:
            return self._network

    @property
    def style(self) -> str:
        """The name of the style in use now."""
        with self._lock:
            return self._style

    @property
    def strength(self) -> float:
        """The blend strength in use now."""
        with self._lock:
            return self._strength

    @property
    def catalog(self) -> StyleCatalog:
        """Where styles are looked up."""
        return self._catalog

    def switch_style(self, style: str) -> StyleNetwork:
        """Load ``style`` and use it from the next frame; UnknownStyleError or ModelFileError
        leave the current style running. Returns the new network."""
        network = load_style_network(self._catalog.path(style), self._settings)
        with self._lock:
            old, self._network = self._network, network
            self._style = style
            self._filter.reset()
            self._letterbox = None
        old.close()
        _log.info("style switched to %s (%s)", style, network.model_id)
        return network

    def set_strength(self, strength: float) -> None:
        """Blend strength for the next frames: 1 stylized only, 0 the input unchanged."""
        checked = self._checked_strength(strength)
        with self._lock:
            self._strength = checked

    def process(self, image: npt.NDArray[np.uint8]) -> tuple[npt.NDArray[np.uint8], float]:
        """Stylize a BGR uint8 (H, W, 3) frame of any size; returns it (same size) and the
        seconds spent in the network."""
        with self._lock:
            network, strength = self._network, self._strength
            height, width = image.shape[:2]
            letterbox = self._letterbox
            if letterbox is None or (letterbox.frame_width_px, letterbox.frame_height_px) != (
                width,
                height,
            ):
                letterbox = Letterbox(width, height, network.width_px, network.height_px)
                self._letterbox = letterbox
                self._filter.reset()
            fitted = letterbox.fit(image)
            started = time.perf_counter()
            stylized = network.stylize(fitted)
            inference_seconds = time.perf_counter() - started
            smoothed = self._filter.apply(fitted, stylized)
        restored = letterbox.unfit(smoothed)
        return blend(restored, image, strength), inference_seconds

    def close(self) -> None:
        """Release the model."""
        with self._lock:
            self._network.close()


class _FileFrames:
    """Every frame of a video file, in order, with the decoder's presentation times.

    The time of a frame is FFmpeg's, relative to the start of the video track (OpenCV's
    ``CAP_PROP_POS_MSEC``), so a variable frame rate is kept; a time that does not increase
    (a file without timestamps) is replaced by the previous one plus one frame at ``fps``.
    """

    def __init__(self, path: str) -> None:
        self._capture = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
        if not self._capture.isOpened():
            raise RecordingError(f"{path}: OpenCV cannot open it as a video")
        fps = float(self._capture.get(cv2.CAP_PROP_FPS))
        self.fps = fps if 0 < fps < 1000 else _DEFAULT_LIVE_FPS
        self.path = path

    def frames(self, stop: threading.Event) -> Iterator[TimedFrame]:
        index = 0
        previous = -1.0
        while not stop.is_set():
            ok, image = self._capture.read()
            if not ok:
                return
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise RecordingError(f"{self.path}: frame {index} is not BGR uint8")
            pts = float(self._capture.get(cv2.CAP_PROP_POS_MSEC)) / 1000.0
            if not pts > previous:
                pts = previous + 1.0 / self.fps if index else 0.0
            previous = pts
            yield TimedFrame(np.asarray(image), pts, time.monotonic())
            index += 1

    def close(self) -> None:
        self._capture.release()


class _LiveFrames:
    """Frames of a live source through a reconnecting ``Camera``."""

    def __init__(self, config: CameraConfig, metrics: PipelineMetrics) -> None:
        self._camera = Camera(config, metrics)
        self._camera.start()
        self.fps = _DEFAULT_LIVE_FPS
        self._started = time.monotonic()

    def frames(self, stop: threading.Event) -> Iterator[TimedFrame]:
        while not stop.is_set():
            frame = self._camera.frames.get(timeout_seconds=_POLL_SECONDS)
            if frame is None:
                if self._camera.state in ("finished", "failed", "stopped"):
                    return
                continue
            yield TimedFrame(frame.image, frame.captured_at - self._started, frame.captured_at)

    def close(self) -> None:
        self._camera.stop()


@dataclass(slots=True)
class _EngineFailures:
    """Frames the engine failed on in a row, during one ``run``."""

    in_a_row: int = 0


class StyleStream:
    """Runs one ``StyleStreamConfig``: opens the model and the MJPEG sink at construction (so a
    bad model or a port in use fails at once), the file and RTSP sinks on the first frame (they
    need its size), and ``run`` moves frames until the source ends or ``stop``."""

    def __init__(
        self,
        config: StyleStreamConfig,
        metrics: StyleMetrics,
        capture_metrics: PipelineMetrics,
    ) -> None:
        self.config = config
        self._metrics = metrics
        self._capture_metrics = capture_metrics
        self._stop = threading.Event()
        # one switch at a time, so the active-style gauge marks the model that won
        self._switch_lock = threading.Lock()
        catalog = StyleCatalog(
            config.models_dir if config.models_dir is not None else SHIPPED_STORE
        )
        settings = StyleEngineSettings(
            backend=config.backend,
            device=config.device,
            threads=config.threads,
            precision=config.precision,
            plan_dir=config.plan_dir,
        )
        self.stylizer = Stylizer(
            catalog,
            settings,
            style=config.style,
            strength=config.strength,
            temporal_smoothing=config.temporal_smoothing,
        )
        self._sinks: list[FrameSink] = []
        self.mjpeg: MjpegSink | None = None
        self.rtsp: RtspSink | None = None
        self.file_sink: H264FileSink | None = None
        self._output_size: tuple[int, int] | None = None  # the first frame's: the sinks' size
        try:
            # read the password file now, so a missing secret fails before any frame
            self._rtsp_credentials = rtsp_credentials(config)
            rtsp_port = config.rtsp_port
            if rtsp_port is not None and not port_is_free(config.rtsp_host, rtsp_port):
                raise SinkError(f"RTSP sink: {config.rtsp_host}:{rtsp_port} is in use")
            if config.mjpeg_port is not None:
                self.mjpeg = MjpegSink(host=config.mjpeg_host, port=config.mjpeg_port)
                self._sinks.append(self.mjpeg)
        except BaseException:
            self.stylizer.close()
            raise
        self._mark_style(None)
        if config.target_fps is not None:
            metrics.target_fps.labels(stream=config.stream_id).set(config.target_fps)
        # at 0 from the start, so an alert's increase() sees the first error too
        backend = self.stylizer.network.engine.backend
        metrics.engine_errors.labels(stream=config.stream_id, backend=backend)

    def _mark_style(self, previous_model_id: str | None) -> None:
        gauge = self._metrics.active_style
        if previous_model_id is not None:
            gauge.labels(stream=self.config.stream_id, model_id=previous_model_id).set(0)
        model_id = self.stylizer.network.model_id
        gauge.labels(stream=self.config.stream_id, model_id=model_id).set(1)

    def switch_style(self, style: str) -> None:
        """Use another installed style from the next frame (see ``Stylizer.switch_style``)."""
        with self._switch_lock:
            previous = self.stylizer.network.model_id
            self.stylizer.switch_style(style)
            self._mark_style(previous)

    def stop(self) -> None:
        """Ask ``run`` to return after the frame in progress."""
        self._stop.set()

    def _open_source(self) -> _FileFrames | _LiveFrames:
        source = self.config.source
        if source_kind(source) == "file":
            return _FileFrames(source)
        camera = CameraConfig(
            id=self.config.stream_id,
            url=source,
            backend=self.config.capture_backend,
            queue_frames=2,
            stall_timeout_seconds=self.config.stall_timeout_seconds,
        )
        return _LiveFrames(camera, self._capture_metrics)

    def _open_file_sink(self, path: Path, *, fps: float, width_px: int, height_px: int) -> None:
        config = self.config
        if config.out_codec == "mpeg4":
            self._sinks.append(FileSink(path, fps=fps, width_px=width_px, height_px=height_px))
            return
        audio_from = None
        if config.out_audio == "copy":
            if source_kind(config.source) == "file":
                audio_from = Path(config.source)
            else:
                _log.info("%s: a live source's audio is not carried over", config.stream_id)
        spec = VideoFileSpec(path, fps, width_px, height_px, audio_from=audio_from)
        self.file_sink = H264FileSink(spec)
        self._sinks.append(self.file_sink)

    def _open_frame_sinks(self, image: npt.NDArray[np.uint8], fps: float) -> None:
        height, width = image.shape[:2]
        self._output_size = (width, height)
        if self.config.out_file is not None:
            self._open_file_sink(self.config.out_file, fps=fps, width_px=width, height_px=height)
        if self.config.rtsp_port is not None:
            self.rtsp = RtspSink(
                width_px=width,
                height_px=height,
                fps=fps,
                host=self.config.rtsp_host,
                port=self.config.rtsp_port,
                mount=self.config.rtsp_mount,
                credentials=self._rtsp_credentials,
            )
            self._sinks.append(self.rtsp)

    def _stylize(
        self, image: npt.NDArray[np.uint8], failures: _EngineFailures
    ) -> tuple[npt.NDArray[np.uint8], float] | None:
        """``Stylizer.process``, or None when the engine failed on the frame (counted; the
        error is raised once ``engine_error_limit_frames`` failed in a row)."""
        stream = self.config.stream_id
        try:
            processed = self.stylizer.process(image)
        except (FaceStreamError, RuntimeError):  # RuntimeError: the runtimes' own errors
            failures.in_a_row += 1
            backend = self.stylizer.network.engine.backend
            self._metrics.engine_errors.labels(stream=stream, backend=backend).inc()
            if failures.in_a_row >= self.config.engine_error_limit_frames:
                raise
            if failures.in_a_row == 1:  # once per run of failures, not per frame
                _log.exception("%s: the style engine failed; frame skipped", stream)
            return None
        if failures.in_a_row:
            _log.info("%s: the style engine works again", stream)
            failures.in_a_row = 0
        return processed

    def _reached_max_frames(self, frames_in: int) -> bool:
        return self.config.max_frames is not None and frames_in >= self.config.max_frames

    def run(self) -> StreamReport:
        """Move frames until the source ends, ``max_frames`` or ``stop()``; returns counts.

        Whenever the run ends before the source does (``max_frames``, ``stop()``, an error,
        KeyboardInterrupt), the file sink is told to cut the audio at the last frame.
        """
        stream = self.config.stream_id
        frames_in_metric = self._metrics.frames_in.labels(stream=stream)
        started = time.monotonic()
        frames_in = frames_out = 0
        failures = _EngineFailures()
        source_ended = False
        source = self._open_source()
        try:
            for frame in source.frames(self._stop):
                if frames_in == 0:
                    self._open_frame_sinks(frame.image, source.fps)
                frames_in += 1
                frames_in_metric.inc()
                processed = self._stylize(frame.image, failures)
                if processed is None:  # the engine failed on it: skipped, counted
                    if self._reached_max_frames(frames_in):
                        break
                    continue
                stylized, inference_seconds = processed
                if self._output_size is not None:  # a reconnect may bring another resolution
                    stylized = fit_to_output(stylized, *self._output_size)
                network = self.stylizer.network
                backend = network.engine.backend
                self._metrics.inference_seconds.labels(
                    backend=backend, model_id=network.model_id
                ).observe(inference_seconds)
                for sink in self._sinks:
                    labels = {"stream": stream, "sink": sink.name}
                    written = sink.write(stylized, frame.pts_seconds)
                    if written is True:
                        self._metrics.frames_out.labels(**labels).inc()
                    elif written is False:  # None: no client to send it to, not a drop
                        self._metrics.frames_dropped.labels(**labels).inc()
                frames_out += 1
                self._metrics.frame_latency_seconds.labels(stream=stream, backend=backend).observe(
                    time.monotonic() - frame.captured_at
                )
                if self._reached_max_frames(frames_in):
                    break
            else:  # frames() also returns on stop(): then the source has not ended
                source_ended = not self._stop.is_set()
        finally:
            source.close()
            if not source_ended and self.file_sink is not None:  # or its audio would go on
                self.file_sink.cut_audio_at_last_frame()
        return StreamReport(
            frames_in=frames_in,
            frames_out=frames_out,
            seconds=time.monotonic() - started,
            style=self.stylizer.network.name,
        )

    def close(self) -> None:
        """Close every sink (the file is finished and moved into place) and the model; the
        first sink that failed to close (a file that could not be finished) is raised after
        all are closed."""
        failures: list[Exception] = []
        for sink in self._sinks:
            try:
                sink.close()
            except Exception as exc:
                _log.exception("closing the %s sink failed", sink.name)
                failures.append(exc)
        self._sinks.clear()
        self.stylizer.close()
        if failures:
            raise failures[0]

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            self.close()
        except Exception:
            if exc is None:  # otherwise the error in flight wins; this one is logged
                raise
