"""The ``[capture]`` config section: the cameras, each with its backend, queue and timeouts.

Example (TOML)::

    [[capture.cameras]]
    id = "front-door"
    url = "rtsp://10.0.0.5:554/stream1"
    backend = "gstreamer"
    stall_timeout_seconds = 5.0
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, IPvAnyNetwork, model_validator

from pipeline.config.base import StrictModel

__all__ = [
    "CameraConfig",
    "CaptureConfig",
    "SourceKind",
    "source_kind",
]

SourceKind = Literal["rtsp", "http", "device", "file"]

_DEVICE_PATH = re.compile(r"^/dev/video\d+$")
DeviceIndex = Annotated[int, Field(ge=0, le=63)]


def source_kind(url: str | int) -> SourceKind:
    """What ``url`` points at: an RTSP stream, HTTP(S) MJPEG, a V4L2 device, or a video file.

    An int (or ``/dev/videoN``) is a V4L2 device; anything without a known scheme is a file path.
    """
    if isinstance(url, int) or _DEVICE_PATH.match(url):
        return "device"
    lowered = url.lower()
    if lowered.startswith(("rtsp://", "rtsps://")):
        return "rtsp"
    if lowered.startswith(("http://", "https://")):
        return "http"
    return "file"


class CameraConfig(StrictModel):
    """One camera: where it is, which backend reads it, and how failures are handled."""

    id: str = Field(
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="camera name (letters, digits, '_', '.', '-'); the metrics' camera label",
    )
    url: str | DeviceIndex = Field(
        description="rtsp://..., http(s):// MJPEG, a video file path, /dev/videoN, or a V4L2 "
        "device index (int)",
    )
    backend: Literal["opencv", "gstreamer"] = Field(
        default="opencv",
        description="capture library; 'gstreamer' needs PyGObject and Debian's GStreamer "
        "packages. A missing backend is an error, never a cue to use the other one",
    )
    queue_frames: int = Field(
        default=4, ge=1, le=1000, description="frames held before the oldest is dropped"
    )
    open_timeout_seconds: float = Field(
        default=10.0, gt=0, le=300, description="longest wait for a camera to open (seconds)"
    )
    stall_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        le=300,
        description="watchdog: no new frame for this many seconds tears the camera down and "
        "reconnects (seconds)",
    )
    reconnect_initial_seconds: float = Field(
        default=0.5, gt=0, le=60, description="first wait before reconnecting (seconds)"
    )
    reconnect_max_seconds: float = Field(
        default=3.0,
        gt=0,
        le=3600,
        description="cap of the exponentially growing wait between reconnects (seconds); "
        "jitter only shortens a wait, so with the defaults (at most 3 s) plus the time to open "
        "a stream, a camera is back within 5 s of its source returning, however long it was away",
    )
    reconnect_jitter_fraction: float = Field(
        default=0.2,
        ge=0,
        le=1,
        description="each wait is scaled by a random factor in [1 - jitter, 1]: spread out, "
        "never longer than the cap",
    )
    decode_threads: int = Field(
        default=0,
        ge=0,
        le=64,
        description="OpenCV decoder threads; 0 lets FFmpeg choose (1 lowers latency)",
    )
    loop: bool = Field(
        default=False, description="video files only: start again at the end (demos)"
    )
    realtime: bool = Field(
        default=False,
        description="video files only: deliver frames at the file's frame rate, not as fast "
        "as they decode",
    )

    @property
    def kind(self) -> SourceKind:
        """What ``url`` points at (see ``source_kind``)."""
        return source_kind(self.url)

    @model_validator(mode="after")
    def _consistent(self) -> CameraConfig:
        if self.reconnect_initial_seconds > self.reconnect_max_seconds:
            raise ValueError("need reconnect_initial_seconds <= reconnect_max_seconds")
        if self.kind != "file" and (self.loop or self.realtime):
            raise ValueError(f"loop and realtime apply to video files only, not {self.kind} URLs")
        return self


class CaptureConfig(StrictModel):
    """The ``[capture]`` section: every camera the service reads at start, and what a camera
    added through the API (``POST /v1/streams``) may point at."""

    cameras: list[CameraConfig] = Field(
        default_factory=list,
        max_length=256,
        description="cameras read at start (trusted as written: the limits below apply to "
        "cameras added through the API only)",
    )
    media_dir: Path | None = Field(
        default=None,
        description="video files a camera added through the API may read: only regular files "
        "under this folder (symbolic links resolved); none: the API takes no file path at all",
    )
    api_allowed_networks: list[IPvAnyNetwork] = Field(
        default_factory=list,
        max_length=1024,
        description="address ranges (CIDR) a camera added through the API may reach although "
        "they are not public: loopback, private (10/8, 172.16/12, 192.168/16, fc00::/7), "
        "link-local (169.254/16: cloud metadata) and other special ranges are refused unless "
        'listed here, e.g. ["10.20.0.0/16"] for the camera network',
    )

    shards: int = Field(
        default=1,
        ge=1,
        le=4096,
        description="how many workers share the configured cameras (a StatefulSet's replica "
        "count); each camera belongs to exactly one shard, by rendezvous hashing of its id "
        "(pipeline/capture/sharding.py), so adding a shard moves only ~1/(shards+1) of the "
        "cameras; FACESTREAM_CAPTURE_SHARDS overrides it",
    )
    shard: int | Literal["ordinal"] = Field(
        default=0,
        description='which shard this worker is, 0 .. shards-1, or "ordinal": the number '
        "ending the pod's host name (a StatefulSet pod facestream-worker-3 is shard 3); a "
        "configured camera of another shard is not started here and shows as not assigned in "
        "/healthz and /readyz",
    )

    @model_validator(mode="after")
    def _shard_in_range(self) -> CaptureConfig:
        if isinstance(self.shard, int) and not 0 <= self.shard < self.shards:
            raise ValueError(
                f"capture.shard {self.shard} is outside 0 .. {self.shards - 1} "
                f"(capture.shards = {self.shards})"
            )
        return self

    @model_validator(mode="after")
    def _unique_ids(self) -> CaptureConfig:
        ids = [camera.id for camera in self.cameras]
        duplicates = sorted({camera_id for camera_id in ids if ids.count(camera_id) > 1})
        if duplicates:
            raise ValueError(f"camera ids must be unique; repeated: {', '.join(duplicates)}")
        return self
