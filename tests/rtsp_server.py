"""A real RTSP server for tests: GstRtspServer streaming a video file on 127.0.0.1, looping.

Run as a subprocess: ``python tests/rtsp_server.py --port 0 --video FILE``. It prints
``READY <port>`` on stdout once listening (``--port 0`` lets the kernel pick a free port), then
serves ``rtsp://127.0.0.1:<port>/stream`` until killed. The file is decoded with OpenCV, fed
through appsrc at the file's frame rate (rewinding at its end) and encoded with x264
(zerolatency, a keyframe every 15 frames), so a client that connects at any time gets pictures.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import cv2
import gi  # PyGObject ships no type information

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

MOUNT_PATH = "/stream"


LAUNCH = (
    "( appsrc name=source is-live=true format=time ! videoconvert ! video/x-raw,format=I420 "
    "! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=15 "
    "! rtph264pay name=pay0 pt=96 config-interval=1 )"
)


class _LoopingFeeder:
    """Pushes the video's BGR frames into an appsrc, rewinding at the end of the file."""

    def __init__(self, video: Path) -> None:
        self._capture = cv2.VideoCapture(str(video))
        fps = self._capture.get(cv2.CAP_PROP_FPS)
        self._frame_nanoseconds = int(Gst.SECOND / (fps if fps > 0 else 25.0))
        self._index = 0

    def configure(self, _factory: Any, media: Any) -> None:
        """media-configure handler: set the appsrc caps and start feeding it on demand."""
        source = media.get_element().get_by_name("source")
        width = int(self._capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(self._capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        rate = round(Gst.SECOND / self._frame_nanoseconds)
        source.set_property(
            "caps",
            Gst.Caps.from_string(
                f"video/x-raw,format=BGR,width={width},height={height},framerate={rate}/1"
            ),
        )
        self._index = 0
        source.connect("need-data", self._push)

    def _push(self, source: Any, _length: int) -> None:
        ok, image = self._capture.read()
        if not ok:
            self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, image = self._capture.read()
        if not ok:
            source.emit("end-of-stream")
            return
        buffer = Gst.Buffer.new_wrapped(image.tobytes())
        buffer.pts = self._index * self._frame_nanoseconds
        buffer.duration = self._frame_nanoseconds
        self._index += 1
        source.emit("push-buffer", buffer)


def main() -> int:
    """Serve ``--video`` over RTSP on 127.0.0.1:``--port`` until the process is killed."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="TCP port; 0 picks a free one")
    parser.add_argument("--video", type=Path, required=True, help="video file to stream")
    arguments = parser.parse_args()
    if not arguments.video.is_file():
        parser.error(f"video not found: {arguments.video}")
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(arguments.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(LAUNCH)
    feeder = _LoopingFeeder(arguments.video)
    factory.connect("media-configure", feeder.configure)
    factory.set_shared(True)
    server.get_mount_points().add_factory(MOUNT_PATH, factory)
    if server.attach(None) == 0:
        print(f"cannot listen on port {arguments.port}", file=sys.stderr)
        return 1
    print(f"READY {server.get_bound_port()}", flush=True)
    GLib.MainLoop().run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
