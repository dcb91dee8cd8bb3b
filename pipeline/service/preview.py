"""Live preview: the latest frame of each camera with its tracks drawn, as JPEG or MJPEG.

Recognition hands every frame it takes to ``PreviewHub.publish``, which only keeps a reference
(frames are immutable) and wakes that camera's viewers: drawing and JPEG encoding happen for
the viewers, at most ``max_fps`` times a second each, so a camera nobody watches costs
nothing. A stream is ``multipart/x-mixed-replace`` (MJPEG), which browsers show in a plain
``<img>``. Streams are async generators: a viewer waiting for a frame holds no thread, and
one that went away is noticed within ``_WAIT_SLICE_SECONDS`` even while its camera sends
nothing, freeing its place under ``max_clients``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import cv2
import numpy as np
import numpy.typing as npt

from pipeline.errors import PreviewBusyError, UnknownCameraError
from pipeline.metrics import PipelineMetrics
from pipeline.types import RecognizedFrame, TrackLabel

__all__ = ["MJPEG_BOUNDARY", "PreviewHub", "draw_tracks"]

MJPEG_BOUNDARY = "facestreamframe"
_WAIT_SLICE_SECONDS = 0.5  # a viewer re-checks for shutdown and disconnection at least this often
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


@dataclass(frozen=True, slots=True, eq=False)
class _Waiter:
    """One viewer's wakeup: set from any thread, awaited in the viewer's event loop."""

    loop: asyncio.AbstractEventLoop
    wakeup: asyncio.Event

    def wake(self) -> None:
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            self.loop.call_soon_threadsafe(self.wakeup.set)


@dataclass(slots=True)
class _Latest:
    frame: RecognizedFrame | None = None
    version: int = 0
    clients: int = 0
    waiters: set[_Waiter] = field(default_factory=set)

    def wake_all(self) -> None:
        for waiter in self.waiters:
            waiter.wake()


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
        self._lock = threading.Lock()
        self._closed = False

    def add(self, camera_id: str) -> None:
        """Expect frames from ``camera_id`` (its preview exists, black until the first)."""
        with self._lock:
            self._cameras.setdefault(camera_id, _Latest())

    def remove(self, camera_id: str) -> None:
        """Forget a camera; its viewers' streams end."""
        with self._lock:
            latest = self._cameras.pop(camera_id, None)
            if latest is not None:
                latest.wake_all()

    def publish(self, recognized: RecognizedFrame) -> None:
        """Keep ``recognized`` as its camera's latest frame (the ``on_frame`` of recognition)."""
        with self._lock:
            latest = self._cameras.get(recognized.frame.camera_id)
            if latest is None:
                return  # a camera being removed
            latest.frame = recognized
            latest.version += 1
            latest.wake_all()

    def close(self) -> None:
        """End every stream (service shutdown)."""
        with self._lock:
            self._closed = True
            for latest in self._cameras.values():
                latest.wake_all()

    def viewers(self, camera_id: str) -> int:
        """Streams of the camera open now; UnknownCameraError for an unknown camera."""
        with self._lock:
            return self._latest(camera_id).clients

    def tracks(self, camera_id: str) -> tuple[TrackLabel, ...]:
        """The tracks of the camera's latest frame; UnknownCameraError for an unknown camera."""
        with self._lock:
            frame = self._latest(camera_id).frame
        return () if frame is None else frame.tracks

    def snapshot(self, camera_id: str) -> bytes | None:
        """The latest frame with its tracks drawn, as JPEG; None before the first frame."""
        with self._lock:
            frame = self._latest(camera_id).frame
        return None if frame is None else self._encode(frame)

    def stream(
        self, camera_id: str, is_disconnected: Callable[[], Awaitable[bool]]
    ) -> AsyncIterator[bytes]:
        """MJPEG parts (boundary ``MJPEG_BOUNDARY``) of the camera's frames as they come,
        until the camera is removed, the hub closes or ``is_disconnected()`` (the viewer's
        ``Request.is_disconnected``) says the viewer left. Raises UnknownCameraError or
        PreviewBusyError before the first part (so an HTTP handler can still answer 4xx/5xx).
        """
        with self._lock:
            latest = self._latest(camera_id)
            self._check_room(camera_id, latest)
        return self._parts(camera_id, latest, is_disconnected)

    def _check_room(self, camera_id: str, latest: _Latest) -> None:
        if latest.clients >= self._max_clients:
            raise PreviewBusyError(
                f"camera {camera_id!r} already has {latest.clients} preview viewers "
                f"(api.preview_max_clients)"
            )

    async def _parts(
        self, camera_id: str, latest: _Latest, is_disconnected: Callable[[], Awaitable[bool]]
    ) -> AsyncIterator[bytes]:
        # counted here, not in stream(): only a generator that starts runs its finally
        waiter = _Waiter(asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            if latest.clients >= self._max_clients:
                return  # the last place went to another viewer since stream() checked
            latest.clients += 1
            latest.waiters.add(waiter)
        gauge = self._metrics.preview_clients.labels(camera=camera_id)
        gauge.inc()
        try:
            seen = -1
            next_at = 0.0
            while True:
                with self._lock:
                    if self._closed or self._cameras.get(camera_id) is not latest:
                        return
                    frame, version = latest.frame, latest.version
                    waiter.wakeup.clear()  # under the lock: a later publish sets it again
                if frame is not None and version != seen:
                    seen = version
                    delay = next_at - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    next_at = time.monotonic() + self._interval_seconds
                    jpeg = await asyncio.to_thread(self._encode, frame)
                    yield (
                        (
                            f"--{MJPEG_BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                            f"Content-Length: {len(jpeg)}\r\n\r\n"
                        ).encode()
                        + jpeg
                        + b"\r\n"
                    )
                    continue  # a newer frame may have come while this one was sent
                if await is_disconnected():
                    return
                with contextlib.suppress(TimeoutError):  # then look at viewer and hub again
                    await asyncio.wait_for(waiter.wakeup.wait(), _WAIT_SLICE_SECONDS)
        finally:
            with self._lock:
                latest.clients -= 1
                latest.waiters.discard(waiter)
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
