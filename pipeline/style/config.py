"""The ``[stylize]`` config section: one style stream, its source, style and sinks.

Example (TOML)::

    [stylize]
    source = "rtsp://10.0.0.5:554/stream1"
    style = "starry_night"
    strength = 0.9
    mjpeg_port = 8090
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from pipeline.configbase import StrictModel

__all__ = ["StyleStreamConfig"]


class StyleStreamConfig(StrictModel):
    """One style stream: source -> style network (batch 1, fixed size) -> sinks."""

    stream_id: str = Field(
        default="style",
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="stream name: the metrics' stream label and the capture camera id",
    )
    source: str = Field(description="rtsp://..., http(s):// MJPEG, a video file, or /dev/videoN")
    capture_backend: Literal["opencv", "gstreamer"] = Field(
        default="opencv", description="capture library for live sources"
    )
    style: str = Field(description="name of an installed style model (see `facestream style list`)")
    models_dir: Path | None = Field(
        default=None, description="model store holding models/<style>.onnx; None: the shipped ones"
    )
    device: Literal["cpu", "cuda"] = Field(default="cpu", description="ONNX Runtime device")
    threads: int = Field(
        default=1,
        ge=0,
        le=64,
        description="ONNX Runtime threads (0: one per core). 1 was fastest end to end on 2 "
        "cores: decoding and the sinks get the other core (docs/style.md)",
    )
    strength: float = Field(
        default=1.0, ge=0.0, le=1.0, description="1: stylized only; 0: the input unchanged"
    )
    temporal_smoothing: float = Field(
        default=0.6,
        ge=0.0,
        lt=1.0,
        description="runtime flicker filter: share of the previous output kept where the input "
        "did not change (0 turns it off)",
    )
    out_file: Path | None = Field(default=None, description="write an mp4 file here")
    mjpeg_host: str = Field(default="127.0.0.1", description="MJPEG-over-HTTP sink address")
    mjpeg_port: int | None = Field(
        default=None, ge=0, le=65535, description="MJPEG sink port (0: any free one; None: off)"
    )
    rtsp_host: str = Field(default="127.0.0.1", description="RTSP sink address")
    rtsp_port: int | None = Field(
        default=None, ge=1, le=65535, description="RTSP sink port (None: off); needs GStreamer"
    )
    rtsp_mount: str = Field(default="/style", pattern=r"^/[A-Za-z0-9_./-]*$")
    max_frames: int | None = Field(
        default=None, ge=1, description="stop after this many frames (None: until the source ends)"
    )
    stall_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        le=300,
        description="live sources: reconnect after this long without a frame",
    )

    @model_validator(mode="after")
    def _some_sink(self) -> StyleStreamConfig:
        if self.out_file is None and self.mjpeg_port is None and self.rtsp_port is None:
            raise ValueError("choose at least one sink: out_file, mjpeg_port or rtsp_port")
        if self.out_file is not None and self.out_file.suffix.lower() != ".mp4":
            raise ValueError(f"out_file must end in .mp4, got {self.out_file}")
        return self
