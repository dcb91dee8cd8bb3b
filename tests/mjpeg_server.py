"""A real HTTP MJPEG server for tests: a video file as JPEG frames on 127.0.0.1, looping.

Run as a subprocess: ``python tests/mjpeg_server.py --port 0 --video FILE``. It prints
``READY <port>`` on stdout once listening (``--port 0`` lets the kernel pick a free port), then
serves ``http://127.0.0.1:<port>/stream.mjpg`` until killed, like an IP camera: one producer
thread decodes the file with OpenCV (rewinding at its end) and JPEG-encodes a frame every
1 / ``--fps`` seconds; each client gets every new frame as one part of a
``multipart/x-mixed-replace`` response. The listening socket sets SO_REUSEADDR, so a server
killed mid-stream can be started again on the same port at once.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2

STREAM_PATH = "/stream.mjpg"
BOUNDARY = "facestreamframe"
JPEG_QUALITY = 80
_CLIENT_WAIT_SECONDS = 1.0  # longest a client thread waits for a frame before checking again


class _LatestJpeg:
    """The newest JPEG and its number; client threads wait on it for the next one."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._jpeg = b""
        self._number = 0  # 0: no frame yet

    def publish(self, jpeg: bytes) -> None:
        """Make ``jpeg`` the newest frame and wake every waiting client."""
        with self._changed:
            self._jpeg = jpeg
            self._number += 1
            self._changed.notify_all()

    def after(self, number: int, timeout_seconds: float) -> tuple[int, bytes] | None:
        """The first frame newer than ``number`` as (number, jpeg); None after the timeout."""
        with self._changed:
            if not self._changed.wait_for(lambda: self._number > number, timeout_seconds):
                return None
            return self._number, self._jpeg


def _produce(video: Path, fps: float, latest: _LatestJpeg) -> None:
    """Decode ``video`` forever (rewinding at its end), publishing one JPEG every 1/fps s."""
    capture = cv2.VideoCapture(str(video))
    period_seconds = 1.0 / fps
    due = time.monotonic()
    while True:
        ok, image = capture.read()
        if not ok:
            capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, image = capture.read()
        if not ok:
            print(f"cannot decode {video}", file=sys.stderr, flush=True)
            return
        encoded, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if encoded:
            latest.publish(jpeg.tobytes())
        due += period_seconds
        time.sleep(max(0.0, due - time.monotonic()))


class _Server(ThreadingHTTPServer):
    """One thread per client; SO_REUSEADDR so a restart can bind the port a kill freed."""

    allow_reuse_address = True
    daemon_threads = True


def _handler(latest: _LatestJpeg) -> type[BaseHTTPRequestHandler]:
    class MjpegHandler(BaseHTTPRequestHandler):
        """GET /stream.mjpg: the multipart stream until the client goes away; else 404."""

        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] != STREAM_PATH:
                self.send_error(404, f"only {STREAM_PATH} is served")
                return
            self.send_response(200)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
            self.send_header("Cache-Control", "no-cache, no-store")
            self.send_header("Connection", "close")
            self.end_headers()
            number = 0
            try:
                while True:
                    newest = latest.after(number, _CLIENT_WAIT_SECONDS)
                    if newest is None:
                        continue
                    number, jpeg = newest
                    head = (
                        f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                        f"Content-Length: {len(jpeg)}\r\n\r\n"
                    )
                    self.wfile.write(head.encode("ascii") + jpeg + b"\r\n")
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                return  # the client went away

    return MjpegHandler


def main() -> int:
    """Serve ``--video`` as HTTP MJPEG on 127.0.0.1:``--port`` until the process is killed."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="TCP port; 0 picks a free one")
    parser.add_argument("--video", type=Path, required=True, help="video file to stream")
    parser.add_argument("--fps", type=float, default=15.0, help="frames per second sent")
    arguments = parser.parse_args()
    if not arguments.video.is_file():
        parser.error(f"video not found: {arguments.video}")
    if arguments.fps <= 0:
        parser.error("--fps must be positive")
    latest = _LatestJpeg()
    try:
        server = _Server(("127.0.0.1", arguments.port), _handler(latest))
    except OSError as exc:
        print(f"cannot listen on port {arguments.port}: {exc}", file=sys.stderr)
        return 1
    producer = threading.Thread(
        target=_produce, args=(arguments.video, arguments.fps, latest), daemon=True
    )
    producer.start()
    print(f"READY {server.server_address[1]}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
