"""The API's front and what it lets reach the machine, attacked as issue 23 did, against a real
service (embedded Redis, real models) behind uvicorn on 127.0.0.1: camera URLs that would have
made FFmpeg fetch internal URLs, scan ports or read the service user's files (refused with 422
and a reason, and never fetched); camera routes under the admin token; a declared body never
sent (the connection closed after the drain timeout); X-Forwarded-For from 127.0.0.1 not
believed (the rate limit holds); the preview cookie's expiry and login by POST; the data dir
and the embedded Redis private on disk."""

from __future__ import annotations

import shutil
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from ports import free_port

from pipeline.capture import CameraConfig, CaptureConfig
from pipeline.capture.admission import admit_api_camera
from pipeline.config.service import ApiConfig, FaceStreamConfig
from pipeline.errors import CameraUrlRefusedError
from pipeline.service.http.app import create_app
from pipeline.service.http.auth import PREVIEW_COOKIE, preview_cookie_value
from pipeline.service.sample import SampleFiles, make_sample
from pipeline.service.service import FaceStreamService, run_service

ServeApi = Callable[[FaceStreamService, str], AbstractContextManager[str]]
TOKEN = "front-test-token-0123456789"
ADMIN_TOKEN = "front-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
DRAIN_TIMEOUT_SECONDS = 1.0
REPLY_TIMEOUT_SECONDS = 15.0  # the held-open request must be closed well within this
ANALYSIS_BURST = 3


class _RecordingHandler(BaseHTTPRequestHandler):
    """Answers every GET with a JPEG-ish body and records the path: the "metadata service"."""

    seen: list[str]

    def do_GET(self) -> None:
        self.seen.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(b"AKIA-secret-role-credentials")

    def log_message(self, format: str, *args: object) -> None:
        del format, args


@pytest.fixture(scope="module")
def metadata_server() -> Iterator[tuple[str, list[str]]]:
    """An HTTP server on 127.0.0.1 standing in for a cloud metadata endpoint: (base URL, the
    paths it was asked for)."""
    seen: list[str] = []
    handler = type("Handler", (_RecordingHandler,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> SampleFiles:
    return make_sample(tmp_path_factory.mktemp("media"), seconds=1.0)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("front") / "data"  # made by the service: its mode is ours


@pytest.fixture(scope="module")
def service(data_dir: Path, sample: SampleFiles) -> Iterator[FaceStreamService]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    config = FaceStreamConfig(
        data_dir=data_dir,
        capture=CaptureConfig(media_dir=sample.video.parent),
        api=ApiConfig(
            admin_token=ADMIN_TOKEN,
            drain_timeout_seconds=DRAIN_TIMEOUT_SECONDS,
            analysis_per_minute=1,  # one more request a minute: nothing refills during a test
            analysis_burst=ANALYSIS_BURST,
        ),
    )
    with run_service(config) as running:
        yield running


@pytest.fixture(scope="module")
def base_url(service: FaceStreamService, serve_api: ServeApi) -> Iterator[str]:
    with serve_api(service, TOKEN) as url:
        yield url


@pytest.fixture
def http(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=30.0) as client:
        yield client


def _refusal(http: httpx.Client, url: str) -> tuple[int, str]:
    reply = http.post("/v1/streams", json={"id": "probe", "url": url}, headers=ADMIN)
    if reply.status_code == 201:  # the attack worked: clean up before failing
        http.delete("/v1/streams/probe", headers=ADMIN)
    return reply.status_code, reply.json().get("reason", reply.text)


def test_camera_urls_that_reach_inside_are_refused_and_never_fetched(
    http: httpx.Client, metadata_server: tuple[str, list[str]], tmp_path: Path
) -> None:
    """Each URL the review used (the metadata URL on 127.0.0.1, tcp:// and ftp:// port
    probes, a private file of the service user's) is 422 with a reason; the stand-in metadata
    server is never asked for anything, and no camera is left behind."""
    metadata_url, seen = metadata_server
    private_file = tmp_path / "private.png"
    private_file.write_bytes(b"\x89PNG secret")
    private_file.chmod(0o600)
    port = free_port()
    refused = {
        f"{metadata_url}/latest/meta-data/iam": "private_address",
        "http://169.254.169.254/latest/meta-data/": "private_address",
        f"http://[::ffff:127.0.0.1]:{metadata_url.rsplit(':', 1)[1]}/x": "private_address",
        f"rtsp://localhost:{port}/stream": "private_address",
        f"rtsp://2130706433:{port}/stream": "private_address",  # 127.0.0.1 as one number
        f"tcp://127.0.0.1:{port}": "scheme_not_allowed",
        "ftp://127.0.0.1/": "scheme_not_allowed",
        f"file://{private_file}": "scheme_not_allowed",
        f"concat:{private_file}": "scheme_not_allowed",
        "gopher://127.0.0.1:6379/_FLUSHALL": "scheme_not_allowed",
        str(private_file): "file_outside_media_dir",
        "../../../../../../etc/passwd": "file_outside_media_dir",
        "http://example.org#@127.0.0.1/": "malformed_url",
    }
    for url, reason in refused.items():
        assert _refusal(http, url) == (422, reason), url
    detail = http.post(
        "/v1/streams", json={"id": "probe", "url": str(private_file)}, headers=ADMIN
    ).json()["detail"]
    assert "capture.media_dir" in detail
    assert seen == []
    assert http.get("/v1/streams", headers=AUTH).json()["streams"] == []


def test_a_file_under_media_dir_is_a_camera(http: httpx.Client, sample: SampleFiles) -> None:
    added = http.post(
        "/v1/streams", json={"id": "media", "url": str(sample.video), "loop": True}, headers=ADMIN
    )
    assert added.status_code == 201, added.text
    assert http.delete("/v1/streams/media", headers=ADMIN).status_code == 204


def test_cameras_need_the_admin_token(http: httpx.Client) -> None:
    """With api.admin_token set, the API token reads cameras but cannot add or remove them."""
    camera = {"id": "door", "url": "rtsp://192.0.2.1/stream"}
    added = http.post("/v1/streams", json=camera, headers=AUTH)
    assert added.status_code == 403
    assert "admin token" in added.json()["detail"]
    assert http.delete("/v1/streams/door", headers=AUTH).status_code == 403
    assert http.get("/v1/streams", headers=AUTH).status_code == 200
    assert http.get("/v1/identities", headers=ADMIN).status_code == 200  # admin opens all


def test_a_declared_body_never_sent_is_closed_after_the_drain_timeout(base_url: str) -> None:
    """No token, a small declared body, nothing sent: the old API waited for the body forever.
    Now the 401 comes after api.drain_timeout_seconds and the connection is closed."""
    url = httpx.URL(base_url)
    assert url.port is not None
    head = (
        "POST /v1/identities HTTP/1.1\r\nHost: test\r\n"
        "Content-Type: application/octet-stream\r\nContent-Length: 1000\r\n\r\n"
    )
    with socket.create_connection((url.host, url.port), timeout=REPLY_TIMEOUT_SECONDS) as raw:
        raw.sendall(head.encode())
        reply = b""
        while chunk := raw.recv(65536):  # socket.timeout here: the request was held open
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 401 "), reply[:200]
    assert b"connection: close" in reply.lower()


def test_a_rotating_x_forwarded_for_is_still_throttled(http: httpx.Client) -> None:
    """From 127.0.0.1 with a new X-Forwarded-For each time: uvicorn's default believed the
    header from localhost, so each request got a fresh rate-limit bucket. No trusted proxy is
    configured here, so the limit counts the real peer."""
    blank = b"\x89PNG\r\n\x1a\n"
    statuses = []
    for number in range(ANALYSIS_BURST + 3):
        reply = http.post(
            "/v1/identify",
            files={"image": ("x.png", blank, "image/png")},
            headers={**AUTH, "X-Forwarded-For": f"203.0.113.{number}"},
        )
        statuses.append(reply.status_code)
    assert statuses[ANALYSIS_BURST:] == [429, 429, 429], statuses


def test_login_is_a_post_and_the_cookie_expires_on_the_server(
    http: httpx.Client, service: FaceStreamService
) -> None:
    assert PREVIEW_COOKIE not in http.get("/login", params={"token": TOKEN}).cookies
    assert http.post("/login", data={"token": "wrong-token-0123456789"}).status_code == 401
    login = http.post("/login", data={"token": TOKEN}, follow_redirects=False)
    assert login.status_code == 303
    set_cookie = login.headers["set-cookie"].lower()
    assert "max-age=" in set_cookie
    assert "secure" not in set_cookie  # plain http here
    assert http.get("/preview").status_code == 200
    http.cookies.clear()
    # a cookie the server signed, past its expiry, kept by a browser that ignores Max-Age
    expired = preview_cookie_value(TOKEN.encode(), int(time.time()) - 1)
    later = preview_cookie_value(TOKEN.encode(), int(time.time()) + 3600)
    stretched = f"{int(time.time()) + 10**6}.{later.split('.', 1)[1]}"  # expiry edited
    for cookie in (expired, stretched):
        http.cookies.set(PREVIEW_COOKIE, cookie)
        assert http.get("/v1/identities").status_code == 401
        assert http.get("/preview", follow_redirects=False).status_code == 303
        http.cookies.clear()
    lifetime = service.config.api.preview_session_seconds
    assert f"max-age={lifetime}" in set_cookie


def test_the_cookie_is_secure_over_tls(service: FaceStreamService) -> None:
    with TestClient(create_app(service, token=TOKEN), base_url="https://testserver") as client:
        login = client.post("/login", data={"token": TOKEN}, follow_redirects=False)
    assert login.status_code == 303
    assert "secure" in login.headers["set-cookie"].lower()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_data_dir_and_the_redis_files_are_private(
    service: FaceStreamService, data_dir: Path
) -> None:
    """The AOF holds the face templates: the review found it 0644 in 0755 folders."""
    service.services.redis.set("fs:{front-test}:written", b"x")  # the AOF has a write in it
    redis_dir = data_dir / "redis"
    aof_dir = redis_dir / "appendonlydir"
    assert _mode(data_dir) == 0o700
    assert _mode(redis_dir) == 0o700
    assert _mode(aof_dir) == 0o700
    files = [path for path in redis_dir.rglob("*") if path.is_file()]
    assert any(path.parent == aof_dir for path in files), files
    assert {path.name: _mode(path) for path in files} == {path.name: 0o600 for path in files}


def test_admission_admits_an_allowed_local_network_only() -> None:
    """A 127.0.0.1 RTSP camera is admitted when its range is allowed (as the other API tests
    configure), refused otherwise."""
    camera = CameraConfig(id="local", url="rtsp://127.0.0.1:8554/stream")
    allowed = CaptureConfig(api_allowed_networks=["127.0.0.1/32"])
    assert admit_api_camera(camera, allowed) == camera
    with pytest.raises(CameraUrlRefusedError) as refused:
        admit_api_camera(camera, CaptureConfig(api_allowed_networks=["10.0.0.0/8"]))
    assert refused.value.reason == "private_address"
    assert admit_api_camera(CameraConfig(id="webcam", url=0), CaptureConfig()).url == 0


def test_a_link_out_of_media_dir_is_refused(tmp_path: Path) -> None:
    media = tmp_path / "media"
    media.mkdir()
    secret = tmp_path / "secret.mp4"
    secret.write_bytes(b"not for cameras")
    (media / "door.mp4").symlink_to(secret)
    capture = CaptureConfig(media_dir=media)
    with pytest.raises(CameraUrlRefusedError) as refused:
        admit_api_camera(CameraConfig(id="link", url=str(media / "door.mp4")), capture)
    assert refused.value.reason == "file_outside_media_dir"
    (media / "real.mp4").write_bytes(b"video")
    admitted = admit_api_camera(CameraConfig(id="real", url="real.mp4"), capture)
    assert admitted.url == str((media / "real.mp4").resolve())
