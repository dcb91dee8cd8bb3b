"""Security and privacy of the running service: every route walked for the token (routes added
later included), rate limits on face analysis, request body limits (declared and chunked),
no secret in the logs, no face image kept, and a deletion reaching Redis and another process's
index."""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import pytest

from pipeline.config.service import ApiConfig, FaceStreamConfig
from pipeline.events.config import EventsConfig
from pipeline.images import decode_image
from pipeline.service.http.app import create_app
from pipeline.service.http.ratelimit import RateLimiter
from pipeline.service.sample import SampleFiles, make_sample
from pipeline.service.service import FaceStreamService, run_service

ServeApi = Callable[[FaceStreamService, str], AbstractContextManager[str]]
TOKEN = "security-test-token-0123456789"
WEBHOOK_SECRET = "security-webhook-secret-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
UPLOAD_LIMIT = 512 * 1024


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> SampleFiles:
    return make_sample(tmp_path_factory.mktemp("sample"), seconds=1.0)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def service(data_dir: Path) -> Iterator[FaceStreamService]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    config = FaceStreamConfig(
        data_dir=data_dir,
        api=ApiConfig(
            analysis_per_minute=60, analysis_burst=3, max_upload_bytes=UPLOAD_LIMIT,
            max_images_per_request=2,
            # the rate-limit test speaks as another client (X-Forwarded-For from this proxy),
            # so the tests after it keep 127.0.0.1's own bucket
            trusted_proxies=["127.0.0.1/32"],
        ),
        # a webhook to a closed port: the secret is in the config, deliveries just fail
        events=EventsConfig(
            webhook_urls=("http://127.0.0.1:9/hook",), webhook_secret=WEBHOOK_SECRET
        ),
    )  # fmt: skip
    with run_service(config) as running:
        yield running


@pytest.fixture(scope="module")
def base_url(service: FaceStreamService, serve_api: ServeApi) -> Iterator[str]:
    with serve_api(service, TOKEN) as url:
        yield url


def test_every_route_but_health_and_metrics_needs_the_token(
    service: FaceStreamService, base_url: str
) -> None:
    """Walks the app's own OpenAPI schema, so a route added later is covered without edits."""
    schema = create_app(service, token=TOKEN).openapi()
    open_paths = {"/healthz", "/readyz", "/metrics"}
    checked = 0
    with httpx.Client(base_url=base_url, timeout=10) as client:
        for template, operations in schema["paths"].items():
            if template in open_paths:
                continue
            path = re.sub(r"\{[^}]+\}", "nobody", template)
            for method in operations:
                for headers in ({}, {"Authorization": "Bearer not-the-token-0123456789"}):
                    reply = client.request(method.upper(), path, headers=headers)
                    assert reply.status_code == 401, (method, template, reply.text)
                checked += 1
        # the pages outside the schema never show data without the cookie
        assert client.get("/preview", follow_redirects=False).status_code == 303
    assert checked >= 14


def test_face_analysis_is_rate_limited_per_client(base_url: str) -> None:
    blank = b"\x89PNG\r\n\x1a\n"  # cheap to refuse: the limit counts requests, not faces
    limited = {**AUTH, "X-Forwarded-For": "203.0.113.7"}  # one client behind the proxy
    statuses = []
    with httpx.Client(base_url=base_url, timeout=10) as client:
        for _ in range(5):
            reply = client.post(
                "/v1/identify", files={"image": ("x.png", blank, "image/png")}, headers=limited
            )
            statuses.append(reply.status_code)
        assert statuses[:3] == [400, 400, 400]
        assert statuses[3:] == [429, 429]
        assert int(reply.headers["retry-after"]) >= 1
        assert "analysis_per_minute" in reply.json()["detail"]
        # another client (the proxy's own address) has its own bucket
        other = client.post(
            "/v1/identify", files={"image": ("x.png", blank, "image/png")}, headers=AUTH
        )
        assert other.status_code == 400


def test_a_bucket_refills_at_its_rate_on_an_injected_clock() -> None:
    limiter = RateLimiter(per_minute=60, burst=3)
    assert [limiter.acquire("client", now=100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.acquire("client", now=100.0)
    assert wait == pytest.approx(1.0)  # 60 a minute: the next token in one second
    assert limiter.acquire("client", now=100.5) == pytest.approx(0.5)
    assert limiter.acquire("client", now=101.0) == 0.0  # refilled, one token taken
    assert limiter.acquire("another", now=101.0) == 0.0  # buckets are per client


def test_request_bodies_over_the_limit_are_refused(base_url: str) -> None:
    limit = UPLOAD_LIMIT * 2 + 1024 * 1024  # uploads x images + room for the form
    oversized = b"x" * (limit + 1)
    with httpx.Client(base_url=base_url, headers=AUTH, timeout=30) as client:
        declared = client.post(
            "/v1/streams", content=oversized, headers={"Content-Type": "application/json"}
        )
        assert declared.status_code == 413
        assert "max_upload_bytes" in declared.json()["detail"]

        def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer encoding
            for _ in range(limit // 65536 + 2):
                yield b"y" * 65536

        chunked = client.post(
            "/v1/streams", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert chunked.status_code == 413
        # the service is fine afterwards
        assert client.get("/v1/streams").status_code == 200


def test_secrets_never_reach_the_logs(
    base_url: str, caplog: pytest.LogCaptureFixture, sample: SampleFiles
) -> None:
    caplog.set_level(logging.DEBUG)
    photo = next((sample.gallery / "eileen_collins").iterdir()).read_bytes()
    with httpx.Client(base_url=base_url, timeout=30) as client:
        client.get("/login", params={"token": TOKEN})
        client.get("/v1/identities", headers=AUTH)
        client.get("/v1/identities", headers={"Authorization": "Bearer wrong-token-0123456789"})
        created = client.post(
            "/v1/identities",
            data={"name": "logged"},
            files={"images": ("p.png", photo, "image/png")},
            headers=AUTH,
        )
        if created.status_code == 201:
            client.delete(f"/v1/identities/{created.json()['id']}", headers=AUTH)
    logging.getLogger("test").info("config: %r", FaceStreamConfig(events=EventsConfig(
        webhook_urls=("http://127.0.0.1:9/x",), webhook_secret=WEBHOOK_SECRET)))  # fmt: skip
    # the service's own records (the test's HTTP client logs its requests too)
    served = "\n".join(
        f"{record.name}: {record.getMessage()}"
        for record in caplog.records
        if not record.name.startswith(("httpx", "httpcore"))
    )
    assert "GET /v1/identities" in served  # the access log is on
    assert "/login" in served
    assert TOKEN not in served
    assert WEBHOOK_SECRET not in served


def test_no_face_image_is_stored(
    service: FaceStreamService, base_url: str, sample: SampleFiles, data_dir: Path
) -> None:
    photo = next((sample.gallery / "eileen_collins").iterdir()).read_bytes()
    created = httpx.post(
        f"{base_url}/v1/identities",
        data={"name": "private"},
        files={"images": ("p.png", photo, "image/png")},
        headers=AUTH,
        timeout=30,
    )
    assert created.status_code == 201, created.text
    client = service.services.redis
    image_magics = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"RIFF")
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        values: list[bytes | str] = []
        if kind == b"string":
            values = [client.get(key) or b""]
        elif kind == b"hash":
            values = list(client.hgetall(key).values())
        for value in values:
            assert isinstance(value, bytes)
            assert not value.startswith(image_magics), key
    suffixes = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
    stored = [path for path in data_dir.rglob("*") if path.suffix.lower() in suffixes]
    assert stored == []
    httpx.delete(f"{base_url}/v1/identities/{created.json()['id']}", headers=AUTH)


def test_a_deletion_in_another_process_empties_redis_and_this_index(
    service: FaceStreamService, data_dir: Path, sample: SampleFiles, tmp_path: Path
) -> None:
    photo = next((sample.gallery / "eileen_collins").iterdir())
    templates = service.services.enrolment_templates(
        [(photo.name, decode_image(photo.read_bytes()))]
    ).templates
    identity = service.services.enroll("to-forget", templates)
    assert service.services.gallery.distance_to(templates, identity.identity_id) < 0.1
    config = tmp_path / "facestream.toml"
    config.write_text(f'data_dir = "{data_dir}"\n', encoding="utf-8")  # the same embedded Redis
    subprocess.run(
        [sys.executable, "-m", "pipeline.cli.main", "identities", "remove", identity.identity_id,
         "--config", str(config)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        best = service.services.gallery.identify(templates, top_k=1, max_distance=2.0).best()[0]
        if best is None or best.identity_id != identity.identity_id:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("this process's index still holds the deleted identity")
    client = service.services.redis
    for key in client.scan_iter(count=1000):
        assert identity.identity_id.encode() not in key
        if client.type(key) == b"hash":
            assert identity.identity_id.encode() not in client.hkeys(key)
