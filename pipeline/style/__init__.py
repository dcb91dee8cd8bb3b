"""Neural style transfer: fast style networks, their training and the runtime pieces.

Runtime (no torch needed)::

    catalog = StyleCatalog()                                   # the shipped models
    network = load_style_network(catalog.path("udnie"), StyleEngineSettings())
    stylized = network.stylize(frame_640x360_bgr)

The video stream itself is ``pipeline.style.stream.StyleStream``. Training (``train``), the loss
network (``losses``), the nets (``nets``) and Gatys optimisation (``gatys``) need the
``[torch]`` extra and are imported from their modules.
"""

from pipeline.metrics import StyleMetrics
from pipeline.style.config import StyleStreamConfig
from pipeline.style.engine import (
    SHIPPED_STORE,
    StyleCatalog,
    StyleEngineSettings,
    StyleNetwork,
    load_style_network,
)
from pipeline.style.errors import SinkError, UnknownStyleError
from pipeline.style.frames import Letterbox, TemporalFilter, blend
from pipeline.style.h264_sink import H264FileSink, VideoFileSpec
from pipeline.style.sinks import FileSink, FrameSink, MjpegSink, RtspCredentials, RtspSink

__all__ = [
    "SHIPPED_STORE",
    "FileSink",
    "FrameSink",
    "H264FileSink",
    "Letterbox",
    "MjpegSink",
    "RtspCredentials",
    "RtspSink",
    "SinkError",
    "StyleCatalog",
    "StyleEngineSettings",
    "StyleMetrics",
    "StyleNetwork",
    "StyleStreamConfig",
    "TemporalFilter",
    "UnknownStyleError",
    "VideoFileSpec",
    "blend",
    "load_style_network",
]
