"""The HTTP API under abuse, against a real service (embedded Redis, real models) behind
uvicorn on 127.0.0.1: refusals come from the request's headers before its body is read, the
metrics' method label stays bounded, a preview viewer that leaves a silent camera frees its
place, and an enrolment's decoded pixels are bounded."""

from __future__ import annotations

import shutil
import socket
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import cv2
import httpx
import numpy as np
import pytest
from ports import free_port
from waiting import wait_until

from pipeline.capture import CaptureConfig
from pipeline.config.service import ApiConfig, FaceStreamConfig
from pipeline.service.service import FaceStreamService, run_service

ServeApi = Callable[[FaceStreamService, str], AbstractContextManager[str]]
TOKEN = "hardening-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
UPLOAD_LIMIT = 512 * 1024
FORM_ROOM = 1024 * 1024
PREVIEW_MAX_CLIENTS = 2
REPLY_TIMEOUT_SECONDS = 10.0
DEADLINE_SECONDS = 15.0


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaceStreamService]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    config = FaceStreamConfig(
        data_dir=tmp_path_factory.mktemp("data"),
        # the silent camera below is on 127.0.0.1, which the API refuses unless allowed
        capture=CaptureConfig(api_allowed_networks=["127.0.0.1/32"]),
        api=ApiConfig(
            analysis_per_minute=100_000,
            analysis_burst=1000,  # no 429s here
            max_upload_bytes=UPLOAD_LIMIT,
            max_images_per_request=4,
            max_request_pixels=1_000_000,
            preview_max_clients=PREVIEW_MAX_CLIENTS,
        ),
    )
    with run_service(config) as running:
        yield running


@pytest.fixture(scope="module")
def base_url(service: FaceStreamService, serve_api: ServeApi) -> Iterator[str]:
    with serve_api(service, TOKEN) as url:
        yield url


def _address(base_url: str) -> tuple[str, int]:
    url = httpx.URL(base_url)
    assert url.port is not None
    return url.host, url.port


def _reply_to_headers_alone(base_url: str, head: str) -> bytes:
    """Send only ``head`` (request line and headers; the declared body is never sent) and
    return what the server answers; socket.timeout when it waits for the body instead."""
    with socket.create_connection(_address(base_url), timeout=REPLY_TIMEOUT_SECONDS) as raw:
        raw.sendall(head.encode())
        reply = b""
        while b"\r\n\r\n" not in reply:
            chunk = raw.recv(65536)
            if not chunk:
                break
            reply += chunk
        return reply


def _metric_lines(base_url: str, name: str) -> list[str]:
    text = httpx.get(f"{base_url}/metrics", timeout=REPLY_TIMEOUT_SECONDS).text
    return [line for line in text.splitlines() if line.startswith(name)]


def test_an_unauthenticated_upload_is_refused_before_its_body_is_sent(base_url: str) -> None:
    """A 400 MB form without a token is answered 401 from its headers alone (the old API read
    the whole body first), and the connection is closed rather than drained."""
    head = (
        "POST /v1/identities HTTP/1.1\r\nHost: test\r\n"
        "Content-Type: multipart/form-data; boundary=x\r\nContent-Length: 400000000\r\n\r\n"
    )
    reply = _reply_to_headers_alone(base_url, head)
    assert reply.startswith(b"HTTP/1.1 401 "), reply[:200]
    assert b"connection: close" in reply.lower()
    assert b"www-authenticate: bearer" in reply.lower()


def test_a_small_refused_body_is_read_so_the_client_gets_its_answer(base_url: str) -> None:
    """A small form with a wrong token is read and dropped before the 401, on a connection
    kept open: closing with the body unread makes the kernel reset the connection, and the
    client saw "connection reset" instead of the answer (a 401 or a 429)."""
    body = b"x" * 60_000  # under the 64 KiB read before a refusal
    with httpx.Client(base_url=base_url, timeout=REPLY_TIMEOUT_SECONDS) as client:
        for _ in range(3):
            refused = client.post(
                "/v1/identities",
                content=body,
                headers={"Authorization": "Bearer wrong-token-0123456789",
                         "Content-Type": "application/octet-stream"},
            )  # fmt: skip
            assert refused.status_code == 401
            assert refused.headers.get("connection", "").lower() != "close"


def test_a_body_over_the_routes_own_cap_is_refused_before_it_is_sent(base_url: str) -> None:
    """/v1/identify takes one image: a body declared one byte over one image's cap is 413
    at once, though enrolment (four images here) would take it."""
    one_image_cap = UPLOAD_LIMIT + FORM_ROOM
    head = (
        f"POST /v1/identify HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {TOKEN}\r\n"
        "Content-Type: multipart/form-data; boundary=x\r\n"
        f"Content-Length: {one_image_cap + 1}\r\n\r\n"
    )
    reply = _reply_to_headers_alone(base_url, head)
    assert reply.startswith(b"HTTP/1.1 413 "), reply[:200]
    assert b"connection: close" in reply.lower()
    refused = httpx.post(
        f"{base_url}/v1/identify",
        files={"image": ("big.png", b"\0" * (one_image_cap + 1), "image/png")},
        headers=AUTH,
        timeout=REPLY_TIMEOUT_SECONDS,
    )
    assert refused.status_code == 413
    assert "api.max_upload_bytes" in refused.json()["detail"]


def test_made_up_methods_share_one_metrics_label(base_url: str) -> None:
    """Each new method name would be a new time series; they are all counted as "other"."""
    for method in ("BREW", "M0ZZ", "XYZZY"):
        reply = _reply_to_headers_alone(
            base_url, f"{method} /v1/identities HTTP/1.1\r\nHost: test\r\n\r\n"
        )
        assert reply.startswith(b"HTTP/1.1 "), reply[:200]
    lines = _metric_lines(base_url, "facestream_http_requests_total{")
    assert any('method="other"' in line for line in lines), lines
    assert not any(name in line for line in lines for name in ("BREW", "M0ZZ", "XYZZY"))


def _preview_viewers(base_url: str, camera_id: str) -> float:
    for line in _metric_lines(base_url, "facestream_preview_clients{"):
        if f'camera="{camera_id}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_viewers_leaving_a_silent_camera_free_their_places(base_url: str) -> None:
    """A camera that never delivers a frame (nothing listens at its address): viewers that
    connect and leave are let go while no frame comes, so later viewers are not refused."""
    camera = {"id": "silent", "url": f"rtsp://127.0.0.1:{free_port()}/none"}
    added = httpx.post(
        f"{base_url}/v1/streams", json=camera, headers=AUTH, timeout=REPLY_TIMEOUT_SECONDS
    )
    assert added.status_code == 201, added.text
    head = f"GET /v1/streams/silent/preview.mjpg HTTP/1.1\r\nHost: test\r\n{_auth_line()}\r\n"
    try:
        for _ in range(PREVIEW_MAX_CLIENTS + 2):
            reply = _reply_to_headers_alone(base_url, head)  # returns, and hangs up
            assert reply.startswith(b"HTTP/1.1 200 "), reply[:200]
            wait_until(
                lambda: _preview_viewers(base_url, "silent") == 0,
                DEADLINE_SECONDS,
                "a viewer that left giving its place back",
            )
    finally:
        httpx.delete(f"{base_url}/v1/streams/silent", headers=AUTH, timeout=30)


def _auth_line() -> str:
    return f"Authorization: Bearer {TOKEN}\r\n"


def _blank_png(width: int, height: int) -> bytes:
    return bytes(cv2.imencode(".png", np.zeros((height, width, 3), np.uint8))[1].tobytes())


def test_an_enrolment_over_the_pixel_budget_is_refused(base_url: str) -> None:
    """Two small files that decode to 0.8 MP each pass every byte limit but hold 1.6 MP
    together, over api.max_request_pixels (1 MP here): 413 naming the setting."""
    photos = [("images", (f"p{n}.png", _blank_png(1000, 800), "image/png")) for n in range(2)]
    reply = httpx.post(
        f"{base_url}/v1/identities",
        data={"name": "too-many-pixels"},
        files=photos,
        headers=AUTH,
        timeout=30,
    )
    assert reply.status_code == 413, reply.text
    assert "api.max_request_pixels" in reply.json()["detail"]
