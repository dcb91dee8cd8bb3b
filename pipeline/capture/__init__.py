"""Camera capture: sources (OpenCV, GStreamer), reconnecting cameras, drop-oldest queues.

cameras = CameraSet.start_all(config.capture, metrics)   # one reader thread per camera
frame = cameras.get("front-door").frames.get(timeout_seconds=0.5)   # Frame or None
cameras.stop_all()
"""

from pipeline.capture.camera import (
    Camera,
    CameraSet,
    CameraState,
    CameraStatus,
    StateListener,
    backoff_seconds,
)
from pipeline.capture.config import (
    CameraConfig,
    CaptureConfig,
    SourceKind,
    source_kind,
)
from pipeline.capture.queue import DropOldestQueue
from pipeline.capture.source import BACKENDS, FrameSource, SourceFactory, make_source

__all__ = [
    "BACKENDS",
    "Camera",
    "CameraConfig",
    "CameraSet",
    "CameraState",
    "CameraStatus",
    "CaptureConfig",
    "DropOldestQueue",
    "FrameSource",
    "SourceFactory",
    "SourceKind",
    "StateListener",
    "backoff_seconds",
    "make_source",
    "source_kind",
]
