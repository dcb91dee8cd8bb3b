"""The HTTP API end to end: a real service (real encoder, detector, embedded Redis, a camera
reading the sample video) behind uvicorn on 127.0.0.1, driven over HTTP with httpx."""

from __future__ import annotations

import io
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from PIL import Image

from pipeline.access.policy import DoorConfig
from pipeline.capture import CaptureConfig
from pipeline.config.service import ApiConfig, FaceStreamConfig
from pipeline.liveness.config import LivenessConfig
from pipeline.service.http.auth import PREVIEW_COOKIE
from pipeline.service.sample import SampleFiles, make_sample
from pipeline.service.service import FaceStreamService, run_service

ServeApi = Callable[[FaceStreamService, str], AbstractContextManager[str]]
TOKEN = "api-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DEADLINE_SECONDS = 60.0


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> SampleFiles:
    return make_sample(tmp_path_factory.mktemp("sample"), seconds=4.0)


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory, sample: SampleFiles
) -> Iterator[FaceStreamService]:
    """A running service with no camera yet and a door on the camera id 'front'."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    config = FaceStreamConfig(
        data_dir=tmp_path_factory.mktemp("data"),
        capture=CaptureConfig(media_dir=sample.video.parent),  # the API may read the sample
        api=ApiConfig(analysis_per_minute=100_000, analysis_burst=1000),  # no 429s here
        liveness=LivenessConfig(enabled=False),  # not about liveness: the sample is a photo
        doors=[
            DoorConfig(
                id="lab",
                cameras=["front"],
                required_matches=2,
                window_encodings=3,
                require_liveness=False,
            )
        ],
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


def _photo(sample: SampleFiles) -> bytes:
    return next((sample.gallery / "eileen_collins").iterdir()).read_bytes()


def _frame_jpeg(sample: SampleFiles, index: int = 10) -> bytes:
    capture = cv2.VideoCapture(str(sample.video))
    capture.set(cv2.CAP_PROP_POS_FRAMES, index)
    ok, frame = capture.read()
    capture.release()
    assert ok
    return bytes(cv2.imencode(".jpg", frame)[1].tobytes())


def _converted(photo: bytes, mode: str) -> bytes:
    with Image.open(io.BytesIO(photo)) as image:
        converted = image.convert(mode)
    out = io.BytesIO()
    converted.save(out, format="PNG")
    return out.getvalue()


def _sixteen_bit_grey(photo: bytes) -> bytes:
    with Image.open(io.BytesIO(photo)) as image:
        grey = np.asarray(image.convert("L"), dtype=np.uint16) * 257
    out = io.BytesIO()
    Image.fromarray(grey).save(out, format="PNG")
    return out.getvalue()


def _no_face_png() -> bytes:
    gradient = np.tile(np.linspace(0, 255, 320, dtype=np.uint8), (240, 1))
    return bytes(cv2.imencode(".png", gradient)[1].tobytes())


def _enrol(http: httpx.Client, name: str, *photos: bytes) -> httpx.Response:
    files = [("images", (f"photo{n}.png", data, "image/png")) for n, data in enumerate(photos)]
    return http.post("/v1/identities", data={"name": name}, files=files, headers=AUTH)


def test_health_and_metrics_need_no_token(http: httpx.Client) -> None:
    health = http.get("/healthz").json()
    assert health["status"] == "ok"
    assert health["engines"]["encoder"]["backend"] == "onnxruntime-cpu"
    assert health["liveness_required"] == {"lab": False}  # this door opted out
    ready = http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["ready"] is True
    assert ready.json()["redis"] is True
    text = http.get("/metrics").text
    names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1] != "#"}
    assert names
    assert all(name.startswith("facestream_") for name in names), sorted(names)
    assert "facestream_engine_info" in names


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": TOKEN}],
    ids=["missing", "wrong", "no-scheme"],
)
def test_every_v1_route_refuses_a_missing_or_wrong_token(
    http: httpx.Client, headers: dict[str, str]
) -> None:
    for method, path in [
        ("GET", "/v1/identities"),
        ("POST", "/v1/identities"),
        ("POST", "/v1/identify"),
        ("POST", "/v1/verify"),
        ("POST", "/v1/liveness"),
        ("GET", "/v1/streams"),
        ("POST", "/v1/streams"),
        ("DELETE", "/v1/streams/front"),
        ("GET", "/v1/events"),
        ("GET", "/v1/streams/front/preview.mjpg"),
    ]:
        reply = http.request(method, path, headers=headers)
        assert reply.status_code == 401, (method, path)
        assert reply.headers["www-authenticate"] == "Bearer"
        assert "token" in reply.json()["detail"]


def test_the_login_cookie_opens_pages_but_never_mutations(http: httpx.Client) -> None:
    assert http.post("/login", data={"token": "wrong-token-0123456789"}).status_code == 401
    login = http.post("/login", data={"token": TOKEN}, follow_redirects=False)
    assert login.status_code == 303
    cookie = login.cookies.get(PREVIEW_COOKIE)
    assert cookie is not None
    assert TOKEN not in login.headers["set-cookie"]  # the cookie is not the token
    assert "httponly" in login.headers["set-cookie"].lower()
    # the client keeps the cookie, as a browser does
    assert http.get("/v1/identities").status_code == 200
    assert http.get("/preview").status_code == 200
    refused = http.post("/v1/identities", data={"name": "x"})
    assert refused.status_code == 401
    http.cookies.clear()
    assert http.get("/preview", follow_redirects=False).headers["location"] == "/login"


def test_enrol_identify_verify_and_delete(http: httpx.Client, sample: SampleFiles) -> None:
    created = _enrol(http, "Eileen Collins", _photo(sample))
    assert created.status_code == 201, created.text
    identity = created.json()
    identity_id = identity["id"]
    assert identity["name"] == "Eileen Collins"
    assert identity["rejected"] == []
    assert identity["found_by"] == ["blazeface"]  # one pass found the photo's face
    try:
        frame = _frame_jpeg(sample)
        found = http.post(
            "/v1/identify", files={"image": ("frame.jpg", frame, "image/jpeg")}, headers=AUTH
        ).json()
        assert found["matches"][0]["identity_id"] == identity_id
        assert found["matches"][0]["name"] == "Eileen Collins"
        assert found["matches"][0]["distance"] <= found["tau"]
        distances = [match["distance"] for match in found["matches"]]
        assert distances == sorted(distances)
        assert found["found_by"] == "blazeface"

        verified = http.post(
            "/v1/verify",
            files={"image": ("frame.jpg", frame, "image/jpeg")},
            data={"identity_id": identity_id},
            headers=AUTH,
        ).json()
        assert verified["match"] is True
        assert verified["distance"] == pytest.approx(found["matches"][0]["distance"], abs=1e-3)
        assert verified["tau"] == 0.6
        assert verified["found_by"] == "blazeface"

        listed = http.get("/v1/identities", headers=AUTH).json()["identities"]
        assert identity_id in {item["id"] for item in listed}
        assert http.get(f"/v1/identities/{identity_id}", headers=AUTH).json()["templates"]

        again = http.post(
            f"/v1/identities/{identity_id}/images",
            files=[("images", ("same.png", _photo(sample), "image/png"))],
            headers=AUTH,
        )
        assert again.status_code == 422  # the only photo duplicates the stored template
        assert again.json()["reason"] == "no_usable_photo"
        assert "duplicate" in again.json()["detail"]
    finally:
        assert http.delete(f"/v1/identities/{identity_id}", headers=AUTH).status_code == 204
    assert http.get(f"/v1/identities/{identity_id}", headers=AUTH).status_code == 404
    nobody = http.post(
        "/v1/identify", files={"image": ("frame.jpg", frame, "image/jpeg")}, headers=AUTH
    ).json()
    assert nobody["matches"] == []


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16"])
def test_grey_alpha_palette_and_16_bit_photos_are_matched(
    http: httpx.Client, sample: SampleFiles, mode: str
) -> None:
    photo = _photo(sample)
    created = _enrol(http, "colour", photo)
    assert created.status_code == 201, created.text
    identity_id = created.json()["id"]
    try:
        probe = _sixteen_bit_grey(photo) if mode == "I;16" else _converted(photo, mode)
        reply = http.post(
            "/v1/verify",
            files={"image": ("probe.png", probe, "image/png")},
            data={"identity_id": identity_id},
            headers=AUTH,
        )
        assert reply.status_code == 200, reply.text
        assert reply.json()["match"] is True
    finally:
        http.delete(f"/v1/identities/{identity_id}", headers=AUTH)


@pytest.mark.parametrize(
    ("payload", "status", "words"),
    [
        (b"", 400, "empty"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, 400, "image"),
        (b"%PDF-1.4 not an image at all", 400, "not a supported image"),
        (b"x" * (20 * 1024 * 1024 + 1), 413, "max_upload_bytes"),
    ],
    ids=["empty", "corrupt", "not-an-image", "too-large"],
)
def test_bad_uploads_get_a_clear_4xx(
    http: httpx.Client, payload: bytes, status: int, words: str
) -> None:
    reply = http.post(
        "/v1/identify", files={"image": ("upload.png", payload, "image/png")}, headers=AUTH
    )
    assert reply.status_code == status, reply.text
    assert words in reply.json()["detail"]


def test_photos_without_a_usable_face_are_refused_with_the_reason(
    http: httpx.Client, sample: SampleFiles
) -> None:
    no_face = _no_face_png()
    reply = http.post(
        "/v1/identify", files={"image": ("wall.png", no_face, "image/png")}, headers=AUTH
    )
    assert reply.status_code == 422
    assert reply.json()["reason"] == "no_face"
    enrol = _enrol(http, "nobody", no_face)
    assert enrol.status_code == 422
    assert enrol.json()["reason"] == "no_usable_photo"
    mixed = _enrol(http, "partly", no_face, _photo(sample))  # one bad photo, one good
    assert mixed.status_code == 201
    assert len(mixed.json()["rejected"]) == 1
    http.delete(f"/v1/identities/{mixed.json()['id']}", headers=AUTH)


def test_malformed_requests_are_422_and_unknown_ids_404(http: httpx.Client) -> None:
    broken_json = http.post(
        "/v1/streams",
        content=b'{"id": "x", "url": ',
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert broken_json.status_code == 422
    typo = http.post("/v1/streams", json={"id": "x", "ulr": "rtsp://127.0.0.1/x"}, headers=AUTH)
    assert typo.status_code == 422
    assert "ulr" in typo.text
    missing_field = http.post("/v1/identify", headers=AUTH)
    assert missing_field.status_code == 422
    assert http.delete("/v1/streams/nope", headers=AUTH).status_code == 404
    assert http.get("/v1/streams/nope/snapshot.jpg", headers=AUTH).status_code == 404
    unknown = http.post(
        "/v1/verify",
        files={"image": ("x.png", _no_face_png(), "image/png")},
        data={"identity_id": "nobody-here"},
        headers=AUTH,
    )
    assert unknown.status_code == 404
    assert http.get("/v1/events", params={"kind": "bogus"}, headers=AUTH).status_code == 422


def test_a_camera_added_over_the_api_leads_to_a_signed_off_decision(
    http: httpx.Client, sample: SampleFiles, service: FaceStreamService
) -> None:
    """Enrol, add camera 'front' (watched by door 'lab'), see the grant as an event, the
    track in the stream's status and a preview frame; then remove the camera."""
    identity_id = _enrol(http, "eileen_collins", _photo(sample)).json()["id"]
    camera = {"id": "front", "url": str(sample.video), "loop": True, "realtime": True}
    added = http.post("/v1/streams", json=camera, headers=AUTH)
    assert added.status_code == 201, added.text
    assert http.post("/v1/streams", json=camera, headers=AUTH).status_code == 422  # same id
    try:
        decision = None
        deadline = time.monotonic() + DEADLINE_SECONDS
        while decision is None and time.monotonic() < deadline:
            events = http.get("/v1/events", params={"kind": "decision"}, headers=AUTH).json()
            decision = next(iter(events["events"]), None)
            time.sleep(0.2)
        assert decision is not None, "no decision event within the deadline"
        assert decision["payload"]["outcome"] == "granted"
        assert decision["payload"]["identity_id"] == identity_id
        assert decision["payload"]["door_id"] == "lab"

        up = http.get("/v1/events", params={"kind": "camera_up"}, headers=AUTH).json()["events"]
        assert any(event["camera_id"] == "front" for event in up)
        streams = http.get("/v1/streams", headers=AUTH).json()["streams"]
        assert [stream["camera_id"] for stream in streams] == ["front"]

        status = http.get("/v1/streams/front", headers=AUTH).json()
        assert status["state"] == "up"
        snapshot = http.get("/v1/streams/front/snapshot.jpg", headers=AUTH)
        assert snapshot.status_code == 200
        image = cv2.imdecode(np.frombuffer(snapshot.content, np.uint8), cv2.IMREAD_COLOR)
        assert image is not None
        assert image.shape == (360, 640, 3)

        with http.stream("GET", "/v1/streams/front/preview.mjpg", headers=AUTH) as stream:
            assert stream.headers["content-type"].startswith("multipart/x-mixed-replace")
            received = b""
            for chunk in stream.iter_bytes():
                received += chunk
                if received.count(b"\xff\xd9") >= 2:  # two complete JPEGs
                    break
        start = received.index(b"\xff\xd8")
        part = np.frombuffer(received[start : received.index(b"\xff\xd9") + 2], np.uint8)
        decoded = cv2.imdecode(part, cv2.IMREAD_COLOR)
        assert decoded is not None
        assert decoded.shape == (360, 640, 3)

        metrics = service.services.metrics.registry
        granted = metrics.get_sample_value(
            "facestream_decisions_total", {"door": "lab", "outcome": "granted"}
        )
        assert granted is not None
        assert granted >= 1
    finally:
        assert http.delete("/v1/streams/front", headers=AUTH).status_code == 204
        http.delete(f"/v1/identities/{identity_id}", headers=AUTH)
    assert http.get("/v1/streams", headers=AUTH).json()["streams"] == []
    audit = service.config.audit_path.read_text().splitlines()
    assert any(decision["event_id"] in line for line in audit)


def test_openapi_describes_the_v1_routes(http: httpx.Client) -> None:
    schema = http.get("/openapi.json").json()
    for path in ("/v1/identities", "/v1/identify", "/v1/verify", "/v1/streams", "/v1/events"):
        assert path in schema["paths"]


def test_data_dir_token_file_is_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no token configured, `facestream run` writes a random one readable by the owner
    only (checked through the helper the command uses)."""
    from pipeline.cli.run import _api_token  # noqa: PLC0415

    monkeypatch.delenv("FACESTREAM_API_TOKEN", raising=False)
    config = FaceStreamConfig(data_dir=tmp_path)
    token, generated = _api_token(config)
    assert generated
    assert len(token) >= 16
    path = tmp_path / "api_token"
    assert path.read_text().strip() == token
    assert path.stat().st_mode & 0o777 == 0o600


def test_passive_liveness_needs_liveness_enabled(http: httpx.Client, sample: SampleFiles) -> None:
    """This service runs without liveness: the photo check says so instead of guessing."""
    reply = http.post(
        "/v1/liveness", files={"image": ("face.jpg", _photo(sample), "image/jpeg")}, headers=AUTH
    )
    assert reply.status_code == 422
    assert "liveness is disabled" in reply.json()["detail"]
