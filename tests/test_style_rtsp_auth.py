"""The style stream's RTSP output behind a user name and password, on rtsp://127.0.0.1 (a real
gst-rtsp-server and real clients), the password from a secret (environment, ``*_FILE``, config
file path), the config's refusal of an anonymous RTSP output on a network address, and the
style metrics that the deploy alerts read (engine errors, target frame rate)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from ports import free_port
from prometheus_client import CollectorRegistry
from pydantic import SecretStr, ValidationError

from engines.errors import BackendUnavailableError, ConfigError, InputSpecError
from pipeline.metrics import PipelineMetrics, StyleMetrics
from pipeline.style.config import StyleStreamConfig
from pipeline.style.sinks import RtspCredentials, RtspSink
from pipeline.style.stream import StyleStream, rtsp_credentials

SOCKET_TIMEOUT_SECONDS = 5.0
OPEN_TIMEOUT_MSEC = 5000


@pytest.fixture
def served_frames() -> Iterator[RtspSink]:
    """An RtspSink on 127.0.0.1 that wants user "viewer" with password "s3cret-pass", fed a
    grey 160x120 frame every 40 ms; skips where GStreamer's RTSP server is missing."""
    credentials = RtspCredentials(username="viewer", password=SecretStr("s3cret-pass"))
    try:
        sink = RtspSink(
            width_px=160,
            height_px=120,
            fps=25.0,
            host="127.0.0.1",
            port=free_port(),
            credentials=credentials,
        )
    except BackendUnavailableError as exc:
        pytest.skip(f"no GStreamer RTSP server here: {exc}")
    stop = threading.Event()
    frame = np.full((120, 160, 3), 128, dtype=np.uint8)

    def feed() -> None:
        while not stop.wait(0.04):
            sink.write(frame, 0.0)

    feeder = threading.Thread(target=feed, name="rtsp-feed")
    feeder.start()
    try:
        yield sink
    finally:
        stop.set()
        feeder.join()
        sink.close()


def _describe_status(url: str, authorization: str | None) -> str:
    """The status line the server answers a raw RTSP DESCRIBE with."""
    host_port = url.removeprefix("rtsp://").split("/", 1)[0]
    host, port = host_port.rsplit(":", 1)
    request = f"DESCRIBE {url} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\n"
    if authorization is not None:
        request += f"Authorization: {authorization}\r\n"
    with socket.create_connection((host, int(port)), timeout=SOCKET_TIMEOUT_SECONDS) as client:
        client.sendall((request + "\r\n").encode("ascii"))
        reply = b""
        while b"\r\n" not in reply:
            chunk = client.recv(4096)
            if not chunk:
                break
            reply += chunk
    return reply.split(b"\r\n", 1)[0].decode("ascii")


def _first_frame(url: str) -> npt.NDArray[np.uint8] | None:
    """The first frame OpenCV/FFmpeg reads from ``url``, or None when it cannot open or read."""
    capture = cv2.VideoCapture(
        url,
        cv2.CAP_FFMPEG,
        [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, OPEN_TIMEOUT_MSEC, cv2.CAP_PROP_READ_TIMEOUT_MSEC, 5000],
    )
    try:
        if not capture.isOpened():
            return None
        ok, image = capture.read()
        return np.asarray(image) if ok else None
    finally:
        capture.release()


def test_rtsp_client_without_the_password_is_refused(served_frames: RtspSink) -> None:
    """A DESCRIBE without credentials, or with a wrong password, is answered 401 and carries no
    stream description; OpenCV/FFmpeg without the password gets no frame."""
    import base64  # noqa: PLC0415

    assert _describe_status(served_frames.url, None) == "RTSP/1.0 401 Unauthorized"
    wrong = base64.b64encode(b"viewer:not-the-password").decode("ascii")
    assert _describe_status(served_frames.url, f"Basic {wrong}") == "RTSP/1.0 401 Unauthorized"
    assert _first_frame(served_frames.url) is None


def test_rtsp_client_with_the_password_plays(served_frames: RtspSink) -> None:
    """With the right user name and password OpenCV/FFmpeg (credentials in the URL) decodes
    frames of the sink's size and colour, and a raw DESCRIBE is answered 200."""
    import base64  # noqa: PLC0415

    with_password = served_frames.url.replace("rtsp://", "rtsp://viewer:s3cret-pass@", 1)
    image = _first_frame(with_password)
    assert image is not None
    assert image.shape == (120, 160, 3)
    np.testing.assert_allclose(image.reshape(-1, 3).mean(axis=0), (128, 128, 128), atol=8)
    # last: a DESCRIBE-only client that leaves makes gst-rtsp-server answer the next one 503
    # while it tears the shared media down
    right = base64.b64encode(b"viewer:s3cret-pass").decode("ascii")
    assert _describe_status(served_frames.url, f"Basic {right}") == "RTSP/1.0 200 OK"


def test_rtsp_password_comes_from_the_file_or_the_config(tmp_path: Path) -> None:
    """``rtsp_password_file`` wins over ``rtsp_password`` (the secrets pattern; the CLI puts
    ``FACESTREAM_STYLE_RTSP_PASSWORD``/``_FILE`` into these two); no user name: no
    credentials; an empty file is a ConfigError naming the key."""
    common = {"source": "in.mp4", "style": "udnie", "rtsp_port": 8554}
    assert rtsp_credentials(StyleStreamConfig.model_validate(common)) is None
    secret_file = tmp_path / "rtsp-password"
    secret_file.write_text("from-the-file\n", encoding="utf-8")
    config = StyleStreamConfig.model_validate(
        {
            **common,
            "rtsp_username": "viewer",
            "rtsp_password": "inline-password",
            "rtsp_password_file": secret_file,
        }
    )
    credentials = rtsp_credentials(config)
    assert credentials is not None
    assert credentials.username == "viewer"
    assert credentials.password.get_secret_value() == "from-the-file"
    assert "from-the-file" not in repr(config)
    assert "inline-password" not in repr(config)
    inline = StyleStreamConfig.model_validate(
        {**common, "rtsp_username": "viewer", "rtsp_password": "inline-password"}
    )
    inline_credentials = rtsp_credentials(inline)
    assert inline_credentials is not None
    assert inline_credentials.password.get_secret_value() == "inline-password"
    secret_file.write_text("", encoding="utf-8")
    with pytest.raises(ConfigError, match="rtsp_password_file"):
        rtsp_credentials(config)


def test_config_refuses_an_anonymous_rtsp_output_on_a_network_address() -> None:
    """RTSP on 0.0.0.0 without a user name is refused unless ``rtsp_anonymous`` says so on
    purpose; a user name without any password, or a password without a user, is refused too;
    on 127.0.0.1 anonymous output stays allowed."""
    common = {"source": "in.mp4", "style": "udnie", "rtsp_port": 8554}
    with pytest.raises(ValidationError, match="rtsp_username"):
        StyleStreamConfig.model_validate({**common, "rtsp_host": "0.0.0.0"})
    StyleStreamConfig.model_validate({**common, "rtsp_host": "0.0.0.0", "rtsp_anonymous": True})
    StyleStreamConfig.model_validate({**common, "rtsp_host": "127.0.0.1"})
    with pytest.raises(ValidationError, match="password"):
        StyleStreamConfig.model_validate({**common, "rtsp_username": "viewer"})
    with pytest.raises(ValidationError, match="rtsp_username"):
        StyleStreamConfig.model_validate({**common, "rtsp_password": "p"})
    with pytest.raises(ValidationError, match="rtsp_anonymous"):
        StyleStreamConfig.model_validate(
            {**common, "rtsp_username": "v", "rtsp_password": "p", "rtsp_anonymous": True}
        )


def _write_video(path: Path, frames: int) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 10.0, (64, 48))
    for index in range(frames):
        writer.write(np.full((48, 64, 3), 20 * index, dtype=np.uint8))
    writer.release()


def test_engine_errors_are_counted_and_the_target_rate_is_exported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An engine error on a frame is counted in facestream_style_engine_errors_total and the
    frame skipped; ``engine_error_limit_frames`` errors in a row end the run with that error;
    ``target_fps`` is exported as facestream_style_target_fps (what the alert compares to)."""
    source = tmp_path / "in.mp4"
    _write_video(source, frames=6)
    config = StyleStreamConfig(
        source=str(source),
        style="udnie",
        out_file=tmp_path / "o.mp4",
        out_codec="mpeg4",
        out_audio="none",
        target_fps=12.5,
        engine_error_limit_frames=3,
    )
    metrics = StyleMetrics.create(CollectorRegistry())
    registry = metrics.registry
    with StyleStream(config, metrics, PipelineMetrics.create(CollectorRegistry())) as stream:
        assert registry.get_sample_value("facestream_style_target_fps", {"stream": "style"}) == (
            12.5
        )
        network = stream.stylizer.network
        real_stylize = network.stylize
        calls = {"count": 0}

        def every_other_fails(image: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
            calls["count"] += 1
            if calls["count"] % 2 == 0:
                raise InputSpecError("injected engine failure")
            return real_stylize(image)

        monkeypatch.setattr(network, "stylize", every_other_fails)
        report = stream.run()
        assert (report.frames_in, report.frames_out) == (6, 3)
        labels = {"stream": "style", "backend": network.engine.backend}
        assert registry.get_sample_value("facestream_style_engine_errors_total", labels) == 3

        def always_fails(image: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
            raise InputSpecError("injected engine failure")

        monkeypatch.setattr(network, "stylize", always_fails)
    again = StyleStream(config, metrics, PipelineMetrics.create(CollectorRegistry()))
    with again:
        monkeypatch.setattr(again.stylizer.network, "stylize", always_fails)
        with pytest.raises(InputSpecError, match="injected"):
            again.run()
    assert registry.get_sample_value("facestream_style_engine_errors_total", labels) == 6
