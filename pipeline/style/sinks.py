"""Where stylized frames go: an mp4 file, MJPEG over HTTP, or an RTSP server (H.264).

``FileSink`` here is the MPEG-4 Part 2 writer (OpenCV, no audio: ``out_codec = "mpeg4"``); the
default H.264 file with the source's audio is ``pipeline.style.h264_sink.H264FileSink``.

Every sink takes BGR uint8 (H, W, 3) frames of one size through ``write(image, pts_seconds)``
and is closed once. Opening is done in the constructor, so a sink that exists can be written:
a port in use or an unwritable path is a SinkError when the sink is opened, never on a write
(the stream opens the MJPEG sink and checks the RTSP port before the first frame, and opens
the file and RTSP sinks on it, as they need its size). Sinks never block the stream: the MJPEG
and RTSP sinks keep only the newest frame for their clients.

The RTSP sink can require a user name and password (``RtspCredentials``: RTSP Basic
authentication through gst-rtsp-server's ``RTSPAuth``); a client without them is answered 401
and gets no stream. Basic sends the password base64-encoded, not encrypted: use it on networks
you trust, or behind a TLS/VPN tunnel.
"""

from __future__ import annotations

import logging
import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
import numpy.typing as npt
from pydantic import SecretStr

from engines.errors import BackendUnavailableError
from pipeline.capture.gstreamer_source import require_gstreamer
from pipeline.style.errors import SinkError
from pipeline.style.h264_sink import pad_to_even, to_gst_bgrx

__all__ = ["FileSink", "FrameSink", "MjpegSink", "RtspCredentials", "RtspSink", "port_is_free"]

_log = logging.getLogger(__name__)
_CLIENT_WAIT_SECONDS = 0.5  # a client thread re-checks for shutdown this often
_RTSP_VIEWER_ROLE = "viewer"  # the one role an authenticated RTSP client gets


@dataclass(frozen=True, slots=True)
class RtspCredentials:
    """The user name and password an RTSP client must send (Basic authentication)."""

    username: str
    password: SecretStr

    def __post_init__(self) -> None:
        if not self.username or ":" in self.username:
            # Basic joins them as "user:password", so a colon would split the name
            raise ValueError(f"RTSP user name must be non-empty without ':', got {self.username!r}")
        if not self.password.get_secret_value():
            raise ValueError("RTSP password must not be empty")


class FrameSink(Protocol):
    """A destination of stylized frames."""

    name: str  # "file", "mjpeg" or "rtsp": the metrics' sink label

    def write(self, image: npt.NDArray[np.uint8], pts_seconds: float) -> bool | None:
        """Take one BGR uint8 (H, W, 3) frame; True when it went out, False when the sink
        dropped it, None when nobody was there to send it to (counted as neither)."""
        ...

    def close(self) -> None:
        """Flush and release; safe to call twice."""
        ...


class FileSink:
    """An mp4 file (MPEG-4 Part 2, OpenCV's FFmpeg writer: the pip OpenCV has no H.264 encoder).

    The codec's 4:2:0 chroma needs even sides: an odd width or height is padded by repeating
    the last column or row (``padded_size``), so nothing of the frame is cut. Frames are written
    at ``fps`` in order; their timestamps are those of a constant-rate
    stream, which matches a constant-rate source file frame for frame. The file is written under
    a temporary name and renamed into place on ``close``, so a crash leaves no half file.
    """

    name = "file"

    def __init__(self, path: Path, *, fps: float, width_px: int, height_px: int) -> None:
        if path.suffix.lower() != ".mp4":
            raise SinkError(f"{path}: the file sink writes .mp4 files")
        if fps <= 0 or width_px <= 0 or height_px <= 0:
            raise SinkError(f"{path}: need fps and size > 0, got {fps} fps {width_px}x{height_px}")
        self.path = path
        self._partial = path.with_name(f".{path.stem}.partial.mp4")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SinkError(f"{path}: cannot create its folder: {exc.strerror}") from exc
        self._size = (width_px, height_px)
        self.padded_size = (width_px + width_px % 2, height_px + height_px % 2)
        self._writer = cv2.VideoWriter(
            str(self._partial), cv2.VideoWriter.fourcc(*"mp4v"), fps, self.padded_size
        )
        if not self._writer.isOpened():
            raise SinkError(f"{path}: OpenCV cannot open an mp4 writer there")
        self._frames = 0
        self._closed = False

    def write(self, image: npt.NDArray[np.uint8], pts_seconds: float) -> bool:
        """Append one frame; a frame of another size is a SinkError (the stream fixes sizes)."""
        if (image.shape[1], image.shape[0]) != self._size:
            raise SinkError(
                f"{self.path}: frame is {image.shape[1]}x{image.shape[0]}, the file is "
                f"{self._size[0]}x{self._size[1]}"
            )
        if self.padded_size != self._size:
            image = cv2.copyMakeBorder(  # type: ignore[assignment]  # uint8 in, uint8 out
                image,
                0,
                self.padded_size[1] - self._size[1],
                0,
                self.padded_size[0] - self._size[0],
                cv2.BORDER_REPLICATE,
            )
        self._writer.write(image)
        self._frames += 1
        return True

    def close(self) -> None:
        """Finish the file and move it into place (an empty one is removed)."""
        if self._closed:
            return
        self._closed = True
        self._writer.release()
        if self._frames:
            self._partial.replace(self.path)
            _log.info("wrote %s: %d frames", self.path, self._frames)
        else:
            self._partial.unlink(missing_ok=True)


class _LatestJpeg:
    """The newest JPEG and its number; client threads wait on it for the next one."""

    def __init__(self) -> None:
        self.changed = threading.Condition()
        self.jpeg = b""
        self.number = 0  # 0: no frame yet
        self.closed = False


class _MjpegServer(ThreadingHTTPServer):
    daemon_threads = True
    latest: _LatestJpeg
    path: str


class _MjpegHandler(BaseHTTPRequestHandler):
    server: _MjpegServer
    boundary = "facestreamframe"

    def do_GET(self) -> None:
        """Serve ``/stream.mjpg`` as multipart JPEG parts, ``/frame.jpg`` as one JPEG."""
        latest = self.server.latest
        if self.path == "/frame.jpg":
            with latest.changed:
                latest.changed.wait_for(lambda: latest.number > 0 or latest.closed, 5.0)
                jpeg = latest.jpeg
            self._send_one(jpeg)
            return
        if self.path != self.server.path:
            self.send_error(404, f"the stream is at {self.server.path}")
            return
        self.send_response(200)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={self.boundary}")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        seen = 0
        try:
            while True:
                news = self._next_jpeg(latest, seen)
                if news is None:
                    return
                if news[0] == seen:
                    continue
                seen, jpeg = news
                header = (
                    f"--{self.boundary}\r\nContent-Type: image/jpeg\r\n"
                    f"Content-Length: {len(jpeg)}\r\n\r\n"
                )
                self.wfile.write(header.encode() + jpeg + b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            return  # the client went away

    @staticmethod
    def _next_jpeg(latest: _LatestJpeg, seen: int) -> tuple[int, bytes] | None:
        """The newest (number, JPEG), waiting up to a slice for one after ``seen``; None once
        the sink is closed."""
        with latest.changed:
            latest.changed.wait_for(
                lambda: latest.number != seen or latest.closed, _CLIENT_WAIT_SECONDS
            )
            return None if latest.closed else (latest.number, latest.jpeg)

    def _send_one(self, jpeg: bytes) -> None:
        if not jpeg:
            self.send_error(503, "no frame yet")
            return
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(jpeg)))
        self.end_headers()
        self.wfile.write(jpeg)

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("mjpeg %s: " + format, self.client_address[0], *args)


class MjpegSink:
    """MJPEG over HTTP for browsers: ``http://HOST:PORT/stream.mjpg`` (and ``/frame.jpg``).

    ``port`` 0 lets the kernel choose; the bound port is ``self.port``. A port in use is a
    SinkError. Each client gets the newest frame; a slow client skips frames, never the stream.
    """

    name = "mjpeg"

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, jpeg_quality: int = 80) -> None:
        self._quality = [int(cv2.IMWRITE_JPEG_QUALITY), jpeg_quality]
        try:
            server = _MjpegServer((host, port), _MjpegHandler)
        except OSError as exc:
            raise SinkError(f"MJPEG sink cannot listen on {host}:{port}: {exc.strerror}") from exc
        server.latest = _LatestJpeg()
        server.path = "/stream.mjpg"
        self._server = server
        self.host = host
        self.port = int(server.server_address[1])
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="mjpeg-sink"
        )
        self._thread.start()
        self._closed = False
        _log.info("MJPEG sink at %s", self.url)

    @property
    def url(self) -> str:
        """Where a browser reads the stream."""
        return f"http://{self.host}:{self.port}/stream.mjpg"

    def write(self, image: npt.NDArray[np.uint8], pts_seconds: float) -> bool:
        """JPEG-encode ``image`` and make it the newest frame."""
        ok, encoded = cv2.imencode(".jpg", image, self._quality)
        if not ok:
            return False
        latest = self._server.latest
        with latest.changed:
            latest.jpeg = encoded.tobytes()
            latest.number += 1
            latest.changed.notify_all()
        return True

    def close(self) -> None:
        """Stop serving, end every client's response and join the server thread."""
        if self._closed:
            return
        self._closed = True
        latest = self._server.latest
        with latest.changed:
            latest.closed = True
            latest.changed.notify_all()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def port_is_free(host: str, port: int) -> bool:
    """True when a TCP socket can bind ``host:port`` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


class RtspSink:
    """An RTSP server (GstRtspServer) publishing the frames as H.264 at ``rtsp://HOST:PORT/MOUNT``.

    Needs PyGObject and GStreamer (gst-rtsp-server, x264enc); without them the constructor raises
    BackendUnavailableError. Each client's media pulls from an ``appsrc``; frames written while
    no client is connected go nowhere and ``write`` returns None, so the stream counts them
    neither as sent nor as dropped. With ``credentials`` a client must authenticate (Basic) to
    see the mount; without, anyone who reaches the port can. Odd sides are padded by one
    repeated column/row (``padded_size``), as H.264's 4:2:0 needs even sides. ``close``
    disconnects the clients and frees the port.
    """

    name = "rtsp"

    def __init__(
        self,
        *,
        width_px: int,
        height_px: int,
        fps: float,
        host: str = "127.0.0.1",
        port: int = 8554,
        mount: str = "/style",
        credentials: RtspCredentials | None = None,
    ) -> None:
        try:
            # first: keeps libgcc_s's C++ unwinder in front of GStreamer's libunwind
            require_gstreamer()
            import gi  # noqa: PLC0415  (optional: GStreamer through PyGObject)

            gi.require_version("Gst", "1.0")
            gi.require_version("GstRtspServer", "1.0")
            from gi.repository import GLib, Gst, GstRtspServer  # noqa: PLC0415
        except (BackendUnavailableError, ImportError, ValueError) as exc:
            raise BackendUnavailableError(
                f"the RTSP sink needs PyGObject and gst-rtsp-server: {exc}"
            ) from exc
        if not port_is_free(host, port):
            raise SinkError(f"RTSP sink cannot listen on {host}:{port}: the port is in use")
        Gst.init(None)
        if Gst.ElementFactory.find("x264enc") is None:
            raise BackendUnavailableError("the RTSP sink needs x264enc (gstreamer1.0-plugins-ugly)")
        self._gst = Gst
        self._server_module = GstRtspServer
        self._fps = fps
        self._lock = threading.Lock()
        self._sources: list[Any] = []
        self._medias: list[Any] = []
        self.padded_size = (width_px + width_px % 2, height_px + height_px % 2)
        rate = max(1, round(fps))
        width, height = self.padded_size
        caps = f"video/x-raw,format=BGRx,width={width},height={height},framerate={rate}/1"
        launch = (
            f"( appsrc name=frames is-live=true format=time do-timestamp=true caps={caps} "
            "! queue leaky=downstream max-size-buffers=2 ! videoconvert ! video/x-raw,format=I420 "
            "! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 "
            "! rtph264pay name=pay0 pt=96 config-interval=1 )"
        )
        self._context = GLib.MainContext.new()
        self._loop = GLib.MainLoop.new(self._context, False)
        server = GstRtspServer.RTSPServer.new()
        server.set_address(host)
        server.set_service(str(port))
        factory = GstRtspServer.RTSPMediaFactory.new()
        factory.set_launch(launch)
        factory.set_shared(True)
        factory.connect("media-configure", self._on_media)
        if credentials is not None:
            _require_credentials(GstRtspServer, server, factory, credentials)
        server.get_mount_points().add_factory(mount, factory)
        self._listener_id = server.attach(self._context)
        if self._listener_id == 0:
            raise SinkError(f"RTSP sink cannot listen on {host}:{port}")
        self._server = server
        self.url = f"rtsp://{host}:{port}{mount}"
        self._thread = threading.Thread(target=self._loop.run, name="rtsp-sink", daemon=True)
        self._thread.start()
        self._closed = False
        _log.info("RTSP sink at %s", self.url)

    def _on_media(self, factory: Any, media: Any) -> None:
        source = media.get_element().get_by_name_recurse_up("frames")
        with self._lock:
            self._sources.append(source)
            self._medias.append(media)
        media.connect("unprepared", self._on_unprepared, source)

    def _on_unprepared(self, media: Any, source: Any) -> None:
        with self._lock:
            if source in self._sources:
                self._sources.remove(source)
            if media in self._medias:
                self._medias.remove(media)

    def write(self, image: npt.NDArray[np.uint8], pts_seconds: float) -> bool | None:
        """Push the frame to every connected client's pipeline; None when none is connected."""
        with self._lock:
            sources = list(self._sources)
        if not sources:
            return None
        data = to_gst_bgrx(pad_to_even(image))
        for source in sources:
            buffer = self._gst.Buffer.new_wrapped(data)
            buffer.duration = int(self._gst.SECOND / self._fps)
            source.emit("push-buffer", buffer)
        return True

    def close(self) -> None:
        """Disconnect the clients, stop their pipelines, close the listening socket (the port is
        free again), stop the server's main loop and join its thread."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            for source in self._sources:
                source.emit("end-of-stream")
            self._sources.clear()
            medias = list(self._medias)
            self._medias.clear()
        remove = self._server_module.RTSPFilterResult.REMOVE
        self._server.client_filter(lambda _server, _client: remove)
        self._server.get_session_pool().filter(lambda _pool, _session: remove)
        for media in medias:  # the pipelines to NULL
            media.unprepare()
        listener = self._context.find_source_by_id(self._listener_id)
        if listener is not None:  # destroying the source closes its socket
            listener.destroy()
        self._loop.quit()
        self._thread.join(timeout=5.0)


def _require_credentials(
    rtsp_server_module: Any, server: Any, factory: Any, credentials: RtspCredentials
) -> None:
    """Make ``server`` demand Basic authentication and let only the authenticated role reach
    ``factory``'s media: a client without the password gets 401, a wrong one too."""
    token = rtsp_server_module.RTSPToken()
    token.set_string(rtsp_server_module.RTSP_TOKEN_MEDIA_FACTORY_ROLE, _RTSP_VIEWER_ROLE)
    auth = rtsp_server_module.RTSPAuth()
    basic = rtsp_server_module.RTSPAuth.make_basic(
        credentials.username, credentials.password.get_secret_value()
    )
    auth.add_basic(basic, token)
    server.set_auth(auth)
    permissions = rtsp_server_module.RTSPPermissions()
    for permission in (
        rtsp_server_module.RTSP_PERM_MEDIA_FACTORY_ACCESS,
        rtsp_server_module.RTSP_PERM_MEDIA_FACTORY_CONSTRUCT,
    ):
        permissions.add_permission_for_role(_RTSP_VIEWER_ROLE, permission, True)
    factory.set_permissions(permissions)
