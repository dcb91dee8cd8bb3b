"""The settings of one style stream: its source, style and sinks.

The service's config file has no style section: a style stream is a separate process. ``facestream
stylize`` builds this model from its command-line options (``--source``, ``--style``,
``--strength``, ``--mjpeg-port``, ...), and Python callers build it directly::

    StyleStreamConfig(source="rtsp://10.0.0.5:554/stream1", style="starry_night",
                      strength=0.9, mjpeg_port=8090)

The RTSP output on a network address needs a user name and password (``rtsp_username``, and
``rtsp_password`` or ``rtsp_password_file``; the CLI fills them from
``FACESTREAM_STYLE_RTSP_PASSWORD`` or ``FACESTREAM_STYLE_RTSP_PASSWORD_FILE``, the project's
secrets pattern, ``pipeline.config.secrets``) unless ``rtsp_anonymous`` says otherwise.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator

from pipeline.capture.config import source_kind
from pipeline.config.base import StrictModel

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
    backend: Literal["onnxruntime", "torch", "tensorrt"] = Field(
        default="onnxruntime",
        description="runtime of the style network: onnxruntime (CPU, or CUDA with "
        "onnxruntime-gpu), torch (the [torch] extra; CPU or CUDA) or tensorrt (CUDA, needs "
        "plan_dir); never replaced by another one",
    )
    device: Literal["cpu", "cuda"] = Field(default="cpu", description="device of the backend")
    precision: Literal["fp32", "fp16"] = Field(
        default="fp32", description="fp16 needs backend torch or tensorrt on device cuda"
    )
    plan_dir: Path | None = Field(
        default=None,
        description="tensorrt: writable store for the compiled plans (plans/...) and the "
        "batch-axis copy of the model they are built from (models/...)",
    )
    threads: int = Field(
        default=1,
        ge=0,
        le=64,
        description="CPU threads of the backend (0: one per core). 1 was fastest end to end on "
        "2 cores: decoding and the sinks get the other core (docs/style.md)",
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
    out_codec: Literal["h264", "mpeg4"] = Field(
        default="h264",
        description="video codec of out_file: h264 (GStreamer x264enc through PyGObject; "
        "carries audio) or mpeg4 (MPEG-4 Part 2 through OpenCV; no audio)",
    )
    out_audio: Literal["copy", "none"] = Field(
        default="copy",
        description="copy: carry the first audio track of a file source into out_file "
        "(remuxed unchanged; re-encoded to AAC only when mp4 cannot hold its codec); live "
        "sources have no audio here. none: video only. mpeg4 needs none",
    )
    mjpeg_host: str = Field(default="127.0.0.1", description="MJPEG-over-HTTP sink address")
    mjpeg_port: int | None = Field(
        default=None, ge=0, le=65535, description="MJPEG sink port (0: any free one; None: off)"
    )
    rtsp_host: str = Field(default="127.0.0.1", description="RTSP sink address")
    rtsp_port: int | None = Field(
        default=None, ge=1, le=65535, description="RTSP sink port (None: off); needs GStreamer"
    )
    rtsp_mount: str = Field(default="/style", pattern=r"^/[A-Za-z0-9_./-]*$")
    rtsp_username: str | None = Field(
        default=None,
        pattern=r"^[^:\s]{1,64}$",
        description="user name RTSP clients must send (Basic authentication); None: no login",
    )
    rtsp_password: SecretStr | None = Field(
        default=None, description="RTSP password (prefer rtsp_password_file or the environment)"
    )
    rtsp_password_file: Path | None = Field(
        default=None, description="file holding the RTSP password (a mounted secret)"
    )
    rtsp_anonymous: bool = Field(
        default=False,
        description="serve RTSP without a login on a non-loopback rtsp_host (on purpose only)",
    )
    target_fps: float | None = Field(
        default=None,
        gt=0,
        le=240,
        description="frame rate the stream should keep; exported as facestream_style_target_fps "
        "for the alert that fires when it falls below (None: not exported)",
    )
    engine_error_limit_frames: int = Field(
        default=25,
        ge=1,
        description="a frame the style engine fails on is counted and skipped; this many "
        "failures in a row end the stream with the error (25: 1 s at 25 fps)",
    )
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
        if self.out_codec == "mpeg4" and self.out_audio == "copy":
            raise ValueError(
                "out_codec 'mpeg4' (OpenCV) cannot carry audio: set out_audio 'none', or use h264"
            )
        if (
            self.out_codec == "mpeg4"
            and self.out_file is not None
            and source_kind(self.source) != "file"
        ):
            # OpenCV's writer has a fixed frame rate and no timestamps: a live stream that drops
            # frames would play back too fast
            raise ValueError(
                "out_codec 'mpeg4' writes no timestamps, so it is for file sources only; "
                "a live source needs h264"
            )
        if self.precision == "fp16" and (self.backend == "onnxruntime" or self.device != "cuda"):
            raise ValueError("precision fp16 needs backend torch or tensorrt on device cuda")
        if self.backend == "tensorrt" and (self.device != "cuda" or self.plan_dir is None):
            raise ValueError("backend tensorrt needs device 'cuda' and a writable plan_dir")
        self._check_rtsp_login()
        return self

    def _check_rtsp_login(self) -> None:
        has_password = self.rtsp_password is not None or self.rtsp_password_file is not None
        if self.rtsp_username is not None and not has_password:
            raise ValueError("rtsp_username needs a password: rtsp_password or rtsp_password_file")
        if self.rtsp_username is None and has_password:
            raise ValueError("an RTSP password needs rtsp_username")
        if self.rtsp_username is not None and self.rtsp_anonymous:
            raise ValueError("rtsp_anonymous and rtsp_username contradict each other")
        if (
            self.rtsp_port is not None
            and self.rtsp_username is None
            and not self.rtsp_anonymous
            and not _is_loopback(self.rtsp_host)
        ):
            raise ValueError(
                f"RTSP on {self.rtsp_host} would let anyone on the network watch: set "
                "rtsp_username and a password (FACESTREAM_STYLE_RTSP_PASSWORD[_FILE]), or "
                "rtsp_anonymous = true on purpose"
            )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to any address
        return False
