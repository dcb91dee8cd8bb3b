"""GStreamer capture backend through PyGObject: a decoding pipeline ending in an appsink.

RTSP: ``rtspsrc latency=0 ! decodebin ! videoconvert ! video/x-raw,format=BGR ! appsink
max-buffers=1 drop=true sync=false`` (the freshest frame, ~3 ms on localhost). HTTP MJPEG:
``souphttpsrc is-live=true ! multipartdemux single-stream=true ! decodebin``, not
``uridecodebin``: its decodebin waits for multipartdemux's no-more-pads (sent only with
``single-stream=true``) or a full preroll queue before it exposes the stream, and no frame of a
15 fps MJPEG stream came out of it within 15 s. Files go through ``uridecodebin``, V4L2 devices
through ``v4l2src``; decodebin picks hardware decoders where the platform has them. ``gi`` is
imported inside this module's functions only, so the package imports without it; a missing
``gi`` or GStreamer is a BackendUnavailableError.
"""

from __future__ import annotations

import ctypes
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from engines.errors import BackendUnavailableError
from pipeline.capture.config import CameraConfig
from pipeline.errors import CameraError, CameraTimeoutError, StreamEndedError
from pipeline.redact import redact_credentials

__all__ = ["GstreamerSource", "require_gstreamer"]

logger = logging.getLogger(__name__)

APT_PACKAGES = (
    "gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0 gstreamer1.0-plugins-base "
    "gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly "
    "gstreamer1.0-libav"
)
_POLL_SECONDS = 0.05  # bus checks between appsink waits; bounds how late an error is seen
_NANOSECONDS_PER_SECOND = 1_000_000_000

_DECODE_TO_BGR = (
    "videoconvert ! video/x-raw,format=BGR ! appsink name=sink max-buffers=1 emit-signals=false"
)


def _prefer_gcc_unwinder() -> None:
    """Put libgcc_s's C++ unwinder into the global symbol scope before GStreamer is loaded.

    gi opens libgstreamer-1.0 with RTLD_GLOBAL, and Debian's build links libunwind.so.8, whose
    ``_Unwind_Resume`` then wins over libgcc_s's for every C++ extension in the process: dlib
    aborts the interpreter on its first C++ exception (e.g. the end of a pybind11 iterator).
    Loading libgcc_s globally first keeps the compatible unwinder in front.
    """
    try:
        ctypes.CDLL("libgcc_s.so.1", mode=ctypes.RTLD_GLOBAL)
    except OSError as exc:  # not glibc/gcc: nothing to protect
        logger.debug("libgcc_s.so.1 not preloaded: %s", exc)


def require_gstreamer() -> tuple[Any, Any]:
    """The ``Gst`` and ``GstVideo`` modules, initialised; BackendUnavailableError when absent.

    Call it before anything else loads GStreamer (see ``_prefer_gcc_unwinder``).
    """
    _prefer_gcc_unwinder()
    try:
        import gi  # noqa: PLC0415  # optional; PyGObject ships no types

        gi.require_version("Gst", "1.0")
        gi.require_version("GstVideo", "1.0")
        from gi.repository import Gst, GstVideo  # noqa: PLC0415
    except (ImportError, ValueError) as exc:
        raise BackendUnavailableError(
            "the gstreamer capture backend needs PyGObject (pip install PyGObject==3.50.2) and "
            f"GStreamer (apt-get install {APT_PACKAGES}): {exc}"
        ) from exc
    Gst.init(None)  # idempotent
    return Gst, GstVideo


def _description(config: CameraConfig) -> str:
    """The pipeline text; the URL is set as a property afterwards, never spliced in."""
    kind = config.kind
    if kind == "rtsp":
        head = "rtspsrc name=source latency=0 ! decodebin"
    elif kind == "device":
        head = "v4l2src name=source ! decodebin"
    elif kind == "http":
        # a live source: no preroll wait; single-stream: link the JPEG pad at the first part
        head = (
            "souphttpsrc name=source is-live=true do-timestamp=true "
            "! multipartdemux single-stream=true ! decodebin"
        )
    else:
        head = "uridecodebin name=source"
    # live sources keep only the newest frame; files keep every frame (the queue drops later)
    live = kind in ("rtsp", "device", "http")
    sink = f"drop={'true' if live else 'false'} sync={'true' if config.realtime else 'false'}"
    return f"{head} ! {_DECODE_TO_BGR} {sink}"


def _source_property(config: CameraConfig) -> tuple[str, str]:
    url = config.url
    kind = config.kind
    if kind == "device":
        return "device", url if isinstance(url, str) else f"/dev/video{url}"
    if kind == "file":
        return "uri", Path(str(url)).resolve().as_uri()
    return "location", str(url)  # rtspsrc and souphttpsrc


class GstreamerSource:
    """A camera read through a GStreamer pipeline and an appsink; see ``FrameSource``."""

    backend = "gstreamer"

    def __init__(self, config: CameraConfig) -> None:
        self._config = config
        self._pipeline: Any = None
        self._sink: Any = None
        self._pending: npt.NDArray[np.uint8] | None = None  # the frame that proved the open
        self._gst: Any = None
        self._gst_video: Any = None

    def open(self) -> None:
        """Build and start the pipeline, and wait for its first frame.

        Waits at most ``open_timeout_seconds``; raises CameraTimeoutError when no frame came,
        CameraError when GStreamer reports an error, BackendUnavailableError without ``gi``.
        """
        self.close()
        self._gst, self._gst_video = require_gstreamer()
        gst = self._gst
        try:
            pipeline = gst.parse_launch(_description(self._config))
        except Exception as exc:  # GLib.Error: an element is missing (a plugin package)
            raise BackendUnavailableError(
                f"camera {self._config.id}: cannot build the GStreamer pipeline ({exc}); "
                f"apt-get install {APT_PACKAGES}"
            ) from exc
        name, value = _source_property(self._config)
        pipeline.get_by_name("source").set_property(name, value)
        self._pipeline = pipeline
        self._sink = pipeline.get_by_name("sink")
        shown = redact_credentials(value)  # errors reach logs, events and the API
        if pipeline.set_state(gst.State.PLAYING) == gst.StateChangeReturn.FAILURE:
            self._raise_bus_error()
            raise CameraError(f"camera {self._config.id}: GStreamer cannot start {shown}")
        image = self._pull(self._config.open_timeout_seconds)
        if image is None:
            raise CameraTimeoutError(
                f"camera {self._config.id}: no frame from {shown} within "
                f"{self._config.open_timeout_seconds:g} s"
            )
        self._pending = image

    def read(self, timeout_seconds: float) -> npt.NDArray[np.uint8] | None:
        """The next frame, BGR uint8 HxWx3, or None when none came within ``timeout_seconds``.

        Raises StreamEndedError at the end of the stream (a file without ``loop``, a server
        that went away) and CameraError on a pipeline error.
        """
        if self._pipeline is None:
            raise CameraError(f"camera {self._config.id}: read before open")
        if self._pending is not None:
            image, self._pending = self._pending, None
            return image
        return self._pull(timeout_seconds)

    def _pull(self, timeout_seconds: float) -> npt.NDArray[np.uint8] | None:
        gst = self._gst
        deadline = time.monotonic() + timeout_seconds
        rewound = False
        while True:
            self._raise_bus_error()
            if self._sink.get_property("eos"):
                if rewound:  # back at the end with no frame since the seek: nothing to loop
                    raise StreamEndedError(
                        f"camera {self._config.id}: end of stream again right after looping "
                        "back to the start (no video frame in the file)"
                    )
                if not self._rewind():
                    raise StreamEndedError(f"camera {self._config.id}: end of stream")
                rewound = True  # and fall through: the deadline still holds after a seek
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            wait_seconds = min(remaining, _POLL_SECONDS)
            sample = self._sink.emit("try-pull-sample", int(wait_seconds * _NANOSECONDS_PER_SECOND))
            if sample is not None:
                return self._to_image(sample, gst)

    def _rewind(self) -> bool:
        """Seek a looping file back to its start; False when the source does not loop."""
        if not self._config.loop:
            return False
        gst = self._gst
        flags = gst.SeekFlags.FLUSH | gst.SeekFlags.KEY_UNIT
        if not self._pipeline.seek_simple(gst.Format.TIME, flags, 0):
            raise CameraError(f"camera {self._config.id}: cannot seek back to loop the file")
        return True

    def _raise_bus_error(self) -> None:
        message = self._pipeline.get_bus().pop_filtered(self._gst.MessageType.ERROR)
        if message is not None:
            error, debug = message.parse_error()
            # GStreamer's texts can quote the location, credentials included
            raise CameraError(
                redact_credentials(
                    f"camera {self._config.id}: GStreamer error from "
                    f"{message.src.get_name()}: {error.message} ({debug})"
                )
            )

    def _to_image(self, sample: Any, gst: Any) -> npt.NDArray[np.uint8]:
        info = self._gst_video.VideoInfo.new_from_caps(sample.get_caps())
        width, height, stride = int(info.width), int(info.height), int(info.stride[0])
        buffer = sample.get_buffer()
        ok, mapped = buffer.map(gst.MapFlags.READ)
        if not ok:
            raise CameraError(f"camera {self._config.id}: cannot map a GStreamer buffer")
        try:
            rows = np.frombuffer(mapped.data, dtype=np.uint8, count=stride * height)
            # rows are padded to `stride` bytes; keep width * 3 of each, copied out of the buffer
            return rows.reshape(height, stride)[:, : width * 3].reshape(height, width, 3).copy()
        finally:
            buffer.unmap(mapped)

    def close(self) -> None:
        """Stop the pipeline and drop it."""
        if self._pipeline is not None:
            self._pipeline.set_state(self._gst.State.NULL)
            self._pipeline = None
            self._sink = None
        self._pending = None
