"""OpenCV capture backend: ``cv2.VideoCapture`` on FFmpeg (RTSP, HTTP MJPEG, files) or V4L2.

The pip OpenCV wheel has FFmpeg but no GStreamer. FFmpeg's reads are bounded by
CAP_PROP_READ_TIMEOUT_MSEC, set at open to the camera's ``stall_timeout_seconds``: a frozen
camera otherwise blocks ``read()`` for 30 s. A read that ran into that timeout still returns True
with a frame the decoder was holding back, so such a read is reported as "no new frame": the
stream has stalled, and the camera's watchdog must see it.

FFmpeg opens whatever protocol a URL or a nested reference names (an HTTP "camera" that
serves an HLS playlist listing ``file:`` segments reads local files; ``tcp:``, ``ftp:``,
``concat:`` reach anywhere). Each open therefore sets FFmpeg's ``protocol_whitelist`` to the
protocols of the camera's kind, and for HTTP MJPEG also ``format_whitelist`` (no playlists).
OpenCV takes such options only from the environment variable OPENCV_FFMPEG_CAPTURE_OPTIONS,
read at the start of each open, so ``_FFMPEG_OPTIONS`` sets it for the opening thread and
lets other cameras open at the same time only with the same value. The operator's own value
of that variable (read once, at import) is kept, with the whitelists added after it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import cv2
import numpy.typing as npt

from pipeline.capture.config import CameraConfig, SourceKind
from pipeline.errors import CameraError, CameraFrameError, CameraTimeoutError, StreamEndedError
from pipeline.redact import redact_credentials

__all__ = ["OpenCvSource"]

logger = logging.getLogger(__name__)

_MILLISECONDS_PER_SECOND = 1000.0
_TIMED_OUT_FRACTION = 0.95  # a read this close to the read timeout ran into it
_MAX_PACING_SECONDS = 1.0  # never sleep longer than this for one frame, whatever the file says
_OPTIONS_VARIABLE = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
# OpenCV's own default when the variable is unset: RTSP over TCP when the server offers it
_OPENCV_DEFAULT_OPTIONS = "rtsp_flags;prefer_tcp"
# protocols (and for HTTP, demuxers) FFmpeg may open for each kind of camera, nested opens
# included: RTSP needs its control, RTP and TLS transports; HTTP(S) MJPEG its own two; files
# the file protocol alone
_WHITELISTS: dict[SourceKind, str] = {
    "rtsp": "protocol_whitelist;rtsp,rtsps,rtp,srtp,udp,tcp,tls",
    "http": "protocol_whitelist;http,https,tcp,tls|format_whitelist;mpjpeg,mjpeg",
    "file": "protocol_whitelist;file",
    "device": "protocol_whitelist;file",  # V4L2, not FFmpeg: the variable is not read
}


class _CaptureOptionsGate:
    """OPENCV_FFMPEG_CAPTURE_OPTIONS for the opens in flight: several may hold one value at
    once; an open needing another waits until they are done (an open lasts at most its
    camera's ``open_timeout_seconds``). Once none is in flight the operator's value is put
    back, so a child process (which inherits the environment) sees no whitelist of ours."""

    def __init__(self, operator_options: str | None) -> None:
        self._operator = operator_options
        self._base = operator_options or _OPENCV_DEFAULT_OPTIONS
        self._changed = threading.Condition()
        self._value: str | None = None
        self._holders = 0

    def options(self, kind: SourceKind) -> str:
        """The variable's value for a camera of ``kind``: the operator's options (or
        OpenCV's default), then the whitelists, which win over any earlier same key."""
        return f"{self._base}|{_WHITELISTS[kind]}"

    @contextmanager
    def holding(self, kind: SourceKind) -> Iterator[None]:
        """The variable set for ``kind`` while the block (one ``cv2.VideoCapture`` open) runs."""
        value = self.options(kind)
        with self._changed:
            self._changed.wait_for(lambda: self._holders == 0 or self._value == value)
            if self._value != value:
                os.environ[_OPTIONS_VARIABLE] = value
                self._value = value
            self._holders += 1
        try:
            yield
        finally:
            with self._changed:
                self._holders -= 1
                if self._holders == 0:  # child processes inherit the environment: restore it
                    self._restore()
                self._changed.notify_all()

    def _restore(self) -> None:
        if self._operator is None:
            os.environ.pop(_OPTIONS_VARIABLE, None)
        else:
            os.environ[_OPTIONS_VARIABLE] = self._operator
        self._value = None


_FFMPEG_OPTIONS = _CaptureOptionsGate(os.environ.get(_OPTIONS_VARIABLE))


class OpenCvSource:
    """A camera read through ``cv2.VideoCapture``; see ``FrameSource`` for the protocol.

    ``read``'s ``timeout_seconds`` is not used: OpenCV cannot bound one call, so each read
    waits at most the read timeout set at open (the camera's ``stall_timeout_seconds``).
    """

    backend = "opencv"

    def __init__(self, config: CameraConfig) -> None:
        self._config = config
        self._capture: cv2.VideoCapture | None = None
        self._frame_seconds = 0.0  # 1 / fps when pacing a file in real time, else 0
        self._next_due = 0.0  # time.monotonic() seconds when the next paced frame is due

    def _target(self) -> tuple[str | int, int]:
        url = self._config.url
        if self._config.kind == "device":
            return url, cv2.CAP_V4L2
        return url, cv2.CAP_FFMPEG

    def open(self) -> None:
        """Open the capture; raises CameraTimeoutError/CameraError when it does not open."""
        self.close()
        target, api = self._target()
        parameters = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            round(self._config.open_timeout_seconds * _MILLISECONDS_PER_SECOND),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            round(self._config.stall_timeout_seconds * _MILLISECONDS_PER_SECOND),
        ]
        if self._config.decode_threads > 0:
            parameters += [cv2.CAP_PROP_N_THREADS, self._config.decode_threads]
        started = time.monotonic()
        with _FFMPEG_OPTIONS.holding(self._config.kind):
            capture = cv2.VideoCapture(target, api, parameters)
        elapsed_seconds = time.monotonic() - started
        if not capture.isOpened():
            capture.release()
            shown = redact_credentials(target)  # errors reach logs, events and the API
            if elapsed_seconds >= self._config.open_timeout_seconds * 0.9:
                raise CameraTimeoutError(
                    f"camera {self._config.id}: {shown} did not open within "
                    f"{self._config.open_timeout_seconds:g} s"
                )
            raise CameraError(f"camera {self._config.id}: OpenCV cannot open {shown}")
        self._capture = capture
        fps = float(capture.get(cv2.CAP_PROP_FPS))
        self._frame_seconds = 1.0 / fps if self._config.realtime and fps > 0 else 0.0
        self._next_due = time.monotonic()

    def read(self, timeout_seconds: float) -> npt.NDArray[Any] | None:
        """The next frame (BGR uint8 HxWx3 from FFmpeg), or None when the read timed out.

        Raises StreamEndedError at the end of a file (unless ``loop``) or of a stream, and
        CameraFrameError when OpenCV reports success without an image.
        """
        del timeout_seconds  # bounded by CAP_PROP_READ_TIMEOUT_MSEC instead (see class doc)
        capture = self._capture
        if capture is None:
            raise CameraError(f"camera {self._config.id}: read before open")
        started = time.monotonic()
        ok, image = capture.read()
        if not ok and self._config.loop:
            capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, image = capture.read()
        if not ok:
            raise StreamEndedError(f"camera {self._config.id}: the stream ended or failed")
        if image is None:
            raise CameraFrameError(f"camera {self._config.id}: OpenCV returned no image")
        if time.monotonic() - started >= self._config.stall_timeout_seconds * _TIMED_OUT_FRACTION:
            return None  # FFmpeg's read timeout fired: a held-back frame, not a live one
        self._pace()
        return image

    def _pace(self) -> None:
        if self._frame_seconds <= 0:
            return
        self._next_due += self._frame_seconds
        delay = self._next_due - time.monotonic()
        if delay > 0:
            time.sleep(min(delay, _MAX_PACING_SECONDS))
        else:
            self._next_due = time.monotonic()  # running late: do not try to catch up

    def close(self) -> None:
        """Release the capture."""
        if self._capture is not None:
            self._capture.release()
            self._capture = None
