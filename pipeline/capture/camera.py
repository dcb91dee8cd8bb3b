"""Cameras that keep reading: one reader thread each, reconnecting with capped backoff.

A ``Camera`` owns one reader thread that opens its source, puts ``Frame``s into a drop-oldest
queue and, when the source fails, stalls (no new frame for ``stall_timeout_seconds``) or hands
back garbage, closes it and opens a new one after a capped, jittered exponential backoff. The
stall watchdog lives in the reader loop: every source read is bounded in time (see each
backend), so a frozen camera is noticed within about ``stall_timeout_seconds``. Waits are on a
stop ``Event``, so ``stop()`` is immediate except while a backend call is in progress (bounded
by the open and read timeouts). Nothing raises out of the thread; state changes are logged once
and exported as ``camera_up`` and ``camera_reconnects_total``.

``CameraSet`` holds the running cameras by id; cameras can be added and removed at runtime.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from engines.errors import BackendUnavailableError, ConfigError
from pipeline.capture.config import CameraConfig, CaptureConfig
from pipeline.capture.queue import DropOldestQueue
from pipeline.capture.source import FrameSource, SourceFactory, make_source
from pipeline.errors import (
    CameraError,
    CameraFrameError,
    CameraTimeoutError,
    StreamEndedError,
    UnknownCameraError,
)
from pipeline.metrics import PipelineMetrics
from pipeline.redact import redact_credentials
from pipeline.types import Frame

__all__ = [
    "Camera",
    "CameraSet",
    "CameraState",
    "CameraStatus",
    "StateListener",
    "backoff_seconds",
]

logger = logging.getLogger(__name__)

CameraState = Literal["idle", "connecting", "up", "waiting", "finished", "failed", "stopped"]

_READ_SLICE_SECONDS = 0.25  # longest single wait in a read, so stop() is seen quickly
_JOIN_MARGIN_SECONDS = 2.0


def backoff_seconds(config: CameraConfig, failures: int, rng: random.Random) -> float:
    """Seconds to wait before reconnect attempt number ``failures`` (1 = first after a failure).

    ``reconnect_initial_seconds * 2 ** (failures - 1)``, capped at ``reconnect_max_seconds``,
    scaled by a random factor in ``[1 - jitter, 1]``. Jitter only shortens a wait: scaling up and
    capping again would put about half of all capped waits exactly on the cap, in step.
    """
    exponent = min(max(failures - 1, 0), 32)  # 2**32 * any initial wait is far past any cap
    capped = min(config.reconnect_max_seconds, config.reconnect_initial_seconds * 2.0**exponent)
    jitter = config.reconnect_jitter_fraction
    return capped * rng.uniform(1.0 - jitter, 1.0)


def _checked_image(camera_id: str, image: object) -> npt.NDArray[np.uint8]:
    """``image`` when it is a non-empty BGR uint8 (H, W, 3) array; else CameraFrameError."""
    if (
        isinstance(image, np.ndarray)
        and image.dtype == np.uint8
        and image.ndim == 3
        and image.shape[2] == 3
        and image.size > 0
    ):
        return image
    found = (
        f"{image.dtype} array of shape {image.shape}"
        if isinstance(image, np.ndarray)
        else type(image).__name__
    )
    raise CameraFrameError(f"camera {camera_id}: expected a BGR uint8 (H, W, 3) image, got {found}")


@dataclass(frozen=True, slots=True)
class CameraStatus:
    """A snapshot of one camera for /healthz: state, backend, counts and the last error."""

    camera_id: str
    backend: str
    state: CameraState
    frames_captured: int
    reconnects: int
    last_error: str | None


StateListener = Callable[[CameraStatus, CameraState], None]
"""Called with a camera's new status and its previous state, from the camera's thread (or the
caller of ``stop``), after every state change; it must not block."""


class Camera:
    """One camera read by its own thread into ``frames``, a drop-oldest queue of ``Frame``s.

    Frames are BGR uint8 (H, W, 3); ``Frame.captured_at`` is ``time.monotonic()`` seconds when
    the frame came out of the source. A stopped camera stays stopped (make a new one).
    """

    def __init__(
        self,
        config: CameraConfig,
        metrics: PipelineMetrics,
        *,
        source_factory: SourceFactory = make_source,
        rng: random.Random | None = None,
        on_state: StateListener | None = None,
    ) -> None:
        self.config = config
        self._on_state = on_state
        labels = {"camera": config.id}
        self._up = metrics.camera_up.labels(**labels)
        self._reconnects_metric = metrics.camera_reconnects.labels(**labels)
        self._captured_metric = metrics.frames_captured.labels(**labels)
        self.frames: DropOldestQueue[Frame] = DropOldestQueue(
            config.queue_frames,
            metrics.frames_dropped.labels(**labels),
            metrics.queue_frames.labels(**labels),
        )
        self._source_factory = source_factory
        self._rng = rng if rng is not None else random.Random()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._state: CameraState = "idle"
        self._backend: str = config.backend
        self._last_error: str | None = None
        self._sequence = 0
        self._session_number = -1  # connection attempts so far, less one: Frame.session
        self._session_frames = 0
        self._reconnects = 0
        self._up.set(0)

    @property
    def camera_id(self) -> str:
        """The camera's id (its metrics label)."""
        return self.config.id

    @property
    def state(self) -> CameraState:
        """idle, connecting, up, waiting (before a reconnect), finished, failed or stopped."""
        with self._lock:
            return self._state

    def status(self) -> CameraStatus:
        """A consistent snapshot of the camera's state and counts."""
        with self._lock:
            return CameraStatus(
                camera_id=self.config.id,
                backend=self._backend,
                state=self._state,
                frames_captured=self._sequence,
                reconnects=self._reconnects,
                last_error=self._last_error,
            )

    def start(self) -> None:
        """Start the reader thread (once; a second call does nothing)."""
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(
                target=self._run, name=f"camera-{self.config.id}", daemon=True
            )
            self._thread.start()

    def request_stop(self) -> None:
        """Ask the reader to end without waiting for it (``stop`` then joins it)."""
        self._stop.set()

    def stop(self, timeout_seconds: float | None = None) -> bool:
        """Stop the reader, join it and close ``frames``; True when the thread has ended.

        ``timeout_seconds`` defaults to the longest a backend call can block (the open or read
        timeout) plus a margin; a thread still inside such a call is left to end by itself.
        """
        self._stop.set()
        with self._lock:
            thread = self._thread
        if timeout_seconds is None:
            timeout_seconds = _JOIN_MARGIN_SECONDS + max(
                self.config.open_timeout_seconds, self.config.stall_timeout_seconds
            )
        ended = True
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_seconds)
            ended = not thread.is_alive()
            if not ended:
                logger.warning(
                    "camera %s: reader still inside a backend call after %.1f s; left to end",
                    self.config.id,
                    timeout_seconds,
                )
        self.frames.close()
        self._set_state("stopped", up=False)
        return ended

    def __enter__(self) -> Camera:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # The reader thread.

    def _run(self) -> None:
        failures = 0
        try:
            while not self._stop.is_set():
                error = self._session()
                if error is None or self._stop.is_set():
                    return
                failures = 1 if self._session_frames > 0 else failures + 1
                delay_seconds = backoff_seconds(self.config, failures, self._rng)
                self._set_state("waiting", error=error, up=False)
                logger.warning(
                    "camera %s down (%s); reconnecting in %.2f s (attempt %d)",
                    self.config.id,
                    error,
                    delay_seconds,
                    failures,
                )
                if self._stop.wait(delay_seconds):
                    return
                with self._lock:
                    self._reconnects += 1
                self._reconnects_metric.inc()
        except BaseException:  # the thread must never die with an exception
            logger.exception("camera %s: reader crashed; the camera is stopped", self.config.id)
            self._set_state("failed", error="reader crashed (see log)")
        finally:
            self._up.set(0)

    def _session(self) -> str | None:
        """Open, read until failure or stop, close. The failure as text (no credentials: it
        becomes last_error, camera_down events and log lines), or None to end."""
        self._session_number += 1
        self._session_frames = 0
        source: FrameSource | None = None
        try:
            source = self._source_factory(self.config)
            with self._lock:
                self._backend = source.backend
            self._set_state("connecting")
            source.open()
            self._read_frames(source)
        except StreamEndedError as exc:
            if self.config.kind == "file" and not self.config.loop:
                logger.info(
                    "camera %s: end of file %s", self.config.id, redact_credentials(self.config.url)
                )
                self._set_state("finished")
                return None
            return redact_credentials(str(exc))
        except BackendUnavailableError as exc:
            # a missing library does not come back by retrying; never switch backends either
            error = redact_credentials(str(exc))
            logger.error(
                "camera %s: backend %s unavailable: %s", self.config.id, self._backend, error
            )
            self._set_state("failed", error=error)
            return None
        except CameraError as exc:
            return redact_credentials(str(exc))
        except Exception as exc:  # a backend bug or garbage we did not foresee: reconnect
            logger.exception("camera %s: unexpected error from the source", self.config.id)
            return redact_credentials(f"{type(exc).__name__}: {exc}")
        finally:
            if source is not None:
                self._close_quietly(source)
        return None  # stop requested

    def _close_quietly(self, source: FrameSource) -> None:
        try:
            source.close()
        except Exception:
            logger.exception("camera %s: error while closing the source", self.config.id)

    def _read_frames(self, source: FrameSource) -> None:
        """Put frames into the queue until stop; raise on failure, stall or garbage."""
        stall_seconds = self.config.stall_timeout_seconds
        last_frame_at = time.monotonic()
        size: tuple[int, int] | None = None
        while not self._stop.is_set():
            raw = source.read(min(stall_seconds, _READ_SLICE_SECONDS))
            now = time.monotonic()
            if raw is None:
                if now - last_frame_at > stall_seconds:
                    raise CameraTimeoutError(
                        f"camera {self.config.id}: no new frame for {stall_seconds:g} s (stalled)"
                    )
                continue
            frame = self._frame(raw, now)
            last_frame_at = now
            if frame.size_px != size:
                self._announce(size, frame.size_px)
                size = frame.size_px
            self.frames.put(frame)
            self._captured_metric.inc()
            self._session_frames += 1

    def _frame(self, raw: npt.NDArray[Any], captured_at: float) -> Frame:
        image = _checked_image(self.config.id, raw)
        with self._lock:
            sequence = self._sequence
            self._sequence += 1
        return Frame(
            camera_id=self.config.id,
            sequence=sequence,
            captured_at=captured_at,
            image=image,
            session=self._session_number,
        )

    def _announce(self, old_size: tuple[int, int] | None, new_size: tuple[int, int]) -> None:
        width, height = new_size
        if old_size is None:
            self._set_state("up", up=True)
            logger.info(
                "camera %s up via %s: %dx%d px", self.config.id, self._backend, width, height
            )
        else:
            logger.info(
                "camera %s: resolution changed from %dx%d to %dx%d px",
                self.config.id,
                *old_size,
                width,
                height,
            )

    def _set_state(
        self, state: CameraState, error: str | None = None, *, up: bool | None = None
    ) -> None:
        """Change state (and the camera_up gauge, when ``up`` is given) and tell the listener.

        Once stop is requested only ``stop`` itself changes anything: a reader still inside a
        backend call must not bring a stopped camera back "up" (gauge and camera_up event).
        """
        with self._lock:
            if self._stop.is_set() and state != "stopped":
                return
            previous, self._state = self._state, state
            if error is not None:
                self._last_error = error
            if up is not None:  # under the lock, so a late "up" cannot land after stop's 0
                self._up.set(1 if up else 0)
        if self._stop.is_set() and state != "stopped":
            return  # stop came meanwhile: its own change is the one to announce
        if self._on_state is not None and state != previous:
            try:
                self._on_state(self.status(), previous)
            except Exception:  # a listener's bug must not stop the camera
                logger.exception("camera %s: state listener failed", self.config.id)


class CameraSet:
    """The running cameras by id; add and remove them while the service runs."""

    def __init__(
        self,
        metrics: PipelineMetrics,
        *,
        source_factory: SourceFactory = make_source,
        on_state: StateListener | None = None,
    ):
        self._metrics = metrics
        self._source_factory = source_factory
        self._on_state = on_state
        self._cameras: dict[str, Camera] = {}
        self._lock = threading.Lock()

    @classmethod
    def start_all(
        cls,
        config: CaptureConfig,
        metrics: PipelineMetrics,
        *,
        source_factory: SourceFactory = make_source,
        on_state: StateListener | None = None,
    ) -> CameraSet:
        """A set running every camera of the ``[capture]`` section."""
        cameras = cls(metrics, source_factory=source_factory, on_state=on_state)
        for camera_config in config.cameras:
            cameras.add(camera_config)
        return cameras

    def add(self, config: CameraConfig) -> Camera:
        """Start a camera; ConfigError when a camera with its id already runs."""
        with self._lock:
            if config.id in self._cameras:
                raise ConfigError(f"camera {config.id} already exists")
            # built under the lock: its metric series must not be made while ``remove`` of an
            # earlier camera of this id is deleting them (see there)
            camera = Camera(
                config, self._metrics, source_factory=self._source_factory, on_state=self._on_state
            )
            self._cameras[config.id] = camera
        camera.start()
        logger.info("camera %s added (%s, %s)", config.id, config.backend, config.kind)
        return camera

    def remove(self, camera_id: str) -> None:
        """Stop a camera and forget it, with every capture metric series of its id (so cameras
        added and removed at run time do not pile up series); UnknownCameraError when absent.
        """
        with self._lock:
            camera = self._cameras.pop(camera_id, None)
        if camera is None:
            raise UnknownCameraError(f"no camera with id {camera_id!r}")
        camera.stop()
        metrics = self._metrics
        with self._lock:
            if camera_id not in self._cameras:  # a new camera of this id now owns the series
                for metric in (
                    metrics.camera_up,
                    metrics.queue_frames,
                    metrics.frames_captured,
                    metrics.frames_dropped,
                    metrics.camera_reconnects,
                ):
                    metric.remove(camera_id)
        logger.info("camera %s removed", camera_id)

    def get(self, camera_id: str) -> Camera:
        """The camera with ``camera_id``; UnknownCameraError when absent."""
        with self._lock:
            camera = self._cameras.get(camera_id)
        if camera is None:
            raise UnknownCameraError(f"no camera with id {camera_id!r}")
        return camera

    def ids(self) -> list[str]:
        """The ids of the running cameras, sorted."""
        with self._lock:
            return sorted(self._cameras)

    def __iter__(self) -> Iterator[Camera]:
        with self._lock:
            return iter(list(self._cameras.values()))

    def __len__(self) -> int:
        with self._lock:
            return len(self._cameras)

    def stop_all(self) -> None:
        """Stop every camera: signal all first, then join each, so shutdown takes one wait."""
        with self._lock:
            cameras = list(self._cameras.values())
            self._cameras.clear()
        for camera in cameras:
            camera.request_stop()
        for camera in cameras:
            camera.stop()

    def __enter__(self) -> CameraSet:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop_all()
