"""Live preview: the latest frame of each camera with its tracks drawn, as JPEG or MJPEG.

Recognition hands every frame it takes to ``PreviewHub.publish``, which only keeps a reference
(frames are immutable): drawing and JPEG encoding happen in the viewers' threads, at most
``max_fps`` times a second each, so a camera nobody watches costs nothing. A stream is
``multipart/x-mixed-replace`` (MJPEG), which browsers show in a plain ``<img>``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from pipeline.errors import PreviewBusyError, UnknownCameraError
from pipeline.live import RecognizedFrame, TrackLabel
from pipeline.metrics import PipelineMetrics

__all__ = ["MJPEG_BOUNDARY", "PreviewHub", "draw_tracks"]

MJPEG_BOUNDARY = "facestreamframe"
_WAIT_SLICE_SECONDS = 0.5  # a viewer re-checks for shutdown at least this often
# BGR: known faces green, unknown red, not yet encoded grey
_KNOWN_BGR = (60, 200, 60)
_UNKNOWN_BGR = (40, 40, 230)
_PENDING_BGR = (170, 170, 170)
_SPOOF_BGR = (0, 140, 255)  # orange: whoever it looks like, this face seems not to be live


def _label(track: TrackLabel) -> tuple[str, tuple[int, int, int]]:
    if track.liveness == "spoof":
        return f"SPOOF? {track.name or 'unknown'}", _SPOOF_BGR
    if track.distance is None:
        return f"#{track.track_id}", _PENDING_BGR
    if track.name is None:
        return f"unknown {track.distance:.2f}", _UNKNOWN_BGR
    return f"{track.name} {track.distance:.2f}", _KNOWN_BGR


def draw_tracks(
    image_bgr: npt.NDArray[np.uint8], tracks: tuple[TrackLabel, ...]
) -> npt.NDArray[np.uint8]:
    """A copy of ``image_bgr`` with each track's box and label (name and distance) drawn."""
    canvas = image_bgr.copy()
    height = canvas.shape[0]
    thickness = max(1, round(height / 360))
    scale = 0.5 * height / 360
    for track in tracks:
        text, colour = _label(track)
        x1, y1, x2, y2 = (round(value) for value in track.box)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, thickness)
        (width, text_height), baseline = cv2.getTextSize(
            text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness
        )
        top = max(0, y1 - text_height - baseline - 4)  # above the box, or inside at the top edge
        bottom = top + text_height + baseline + 4
        cv2.rectangle(canvas, (x1, top), (x1 + width + 4, bottom), colour, cv2.FILLED)
        cv2.putText(
            canvas,
            text,
            (x1 + 2, top + text_height + 2),
            cv2.FONT_HERSHEY_SIMPLEX,
            scale,
            (255, 255, 255),
            thickness,
            cv2.LINE_AA,
        )
    return canvas


@dataclass(slots=True)
class _Latest:
    frame: RecognizedFrame | None = None
    version: int = 0
    clients: int = 0


class PreviewHub:
    """The latest recognised frame of each camera, for any number of viewers.

    max_fps: frame rate cap of one viewer's stream; jpeg_quality: 10..100; max_clients: streams
    per camera at once (each costs a JPEG encode per frame), beyond it PreviewBusyError.
    """

    def __init__(
        self,
        metrics: PipelineMetrics,
        *,
        max_fps: float = 10.0,
        jpeg_quality: int = 80,
        max_clients: int = 8,
    ) -> None:
        self._metrics = metrics
        self._interval_seconds = 1.0 / max_fps
        self._jpeg_quality = jpeg_quality
        self._max_clients = max_clients
        self._cameras: dict[str, _Latest] = {}
        self._changed = threading.Condition()
        self._closed = False

    def add(self, camera_id: str) -> None:
        """Expect frames from ``camera_id`` (its preview exists, black until the first)."""
        with self._changed:
            self._cameras.setdefault(camera_id, _Latest())

    def remove(self, camera_id: str) -> None:
        """Forget a camera; its viewers' streams end."""
        with self._changed:
            self._cameras.pop(camera_id, None)
            self._changed.notify_all()

    def publish(self, recognized: RecognizedFrame) -> None:
        """Keep ``recognized`` as its camera's latest frame (the ``on_frame`` of recognition)."""
        with self._changed:
            latest = self._cameras.get(recognized.frame.camera_id)
            if latest is None:
                return  # a camera being removed
            latest.frame = recognized
            latest.version += 1
            self._changed.notify_all()

    def close(self) -> None:
        """End every stream (service shutdown)."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def tracks(self, camera_id: str) -> tuple[TrackLabel, ...]:
        """The tracks of the camera's latest frame; UnknownCameraError for an unknown camera."""
        with self._changed:
            frame = self._latest(camera_id).frame
        return () if frame is None else frame.tracks

    def snapshot(self, camera_id: str) -> bytes | None:
        """The latest frame with its tracks drawn, as JPEG; None before the first frame."""
        with self._changed:
            frame = self._latest(camera_id).frame
        return None if frame is None else self._encode(frame)

    def stream(self, camera_id: str) -> Iterator[bytes]:
        """MJPEG parts (boundary ``MJPEG_BOUNDARY``) of the camera's frames as they come,
        until the camera is removed or the hub closes. Raises UnknownCameraError or
        PreviewBusyError before the first part (so an HTTP handler can still answer 4xx/5xx).
        """
        with self._changed:
            latest = self._latest(camera_id)
            if latest.clients >= self._max_clients:
                raise PreviewBusyError(
                    f"camera {camera_id!r} already has {latest.clients} preview viewers "
                    f"(api.preview_max_clients)"
                )
            latest.clients += 1
        return self._parts(camera_id, latest)

    def _parts(self, camera_id: str, latest: _Latest) -> Iterator[bytes]:
        gauge = self._metrics.preview_clients.labels(camera=camera_id)
        gauge.inc()
        seen = -1
        next_at = 0.0
        try:
            while True:
                with self._changed:
                    if latest.version == seen and not self._closed:
                        self._changed.wait(_WAIT_SLICE_SECONDS)
                    if self._closed or self._cameras.get(camera_id) is not latest:
                        return
                    frame, version = latest.frame, latest.version
                if frame is None or version == seen:
                    continue
                seen = version
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                next_at = time.monotonic() + self._interval_seconds
                jpeg = self._encode(frame)
                yield (
                    (
                        f"--{MJPEG_BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                        f"Content-Length: {len(jpeg)}\r\n\r\n"
                    ).encode()
                    + jpeg
                    + b"\r\n"
                )
        finally:
            with self._changed:
                latest.clients -= 1
            gauge.dec()

    def _latest(self, camera_id: str) -> _Latest:
        latest = self._cameras.get(camera_id)
        if latest is None:
            raise UnknownCameraError(f"no camera with id {camera_id!r}")
        return latest

    def _encode(self, frame: RecognizedFrame) -> bytes:
        canvas = draw_tracks(frame.frame.image, frame.tracks)
        ok, encoded = cv2.imencode(
            ".jpg", canvas, [int(cv2.IMWRITE_JPEG_QUALITY), self._jpeg_quality]
        )
        if not ok:
            raise RuntimeError("OpenCV could not encode a preview frame as JPEG")
        return bytes(encoded.tobytes())
