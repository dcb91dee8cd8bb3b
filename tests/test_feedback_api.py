"""The feedback route end to end: a real service behind uvicorn on 127.0.0.1; a decision on a
real face is recorded, then corrected over HTTP (audited, published), and bad feedback is a
4xx with a message."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import httpx
import numpy as np
import pytest

from pipeline.config.service import ApiConfig, FaceStreamConfig
from pipeline.liveness.config import LivenessConfig
from pipeline.service.sample import SampleFiles, make_sample
from pipeline.service.service import FaceStreamService, run_service
from pipeline.types import Decision, Embeddings

ServeApi = Callable[[FaceStreamService, str], AbstractContextManager[str]]
TOKEN = "feedback-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> SampleFiles:
    return make_sample(tmp_path_factory.mktemp("sample"), seconds=1.0)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaceStreamService]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    config = FaceStreamConfig(
        data_dir=tmp_path_factory.mktemp("data"),
        api=ApiConfig(analysis_per_minute=100_000, analysis_burst=1000),
        liveness=LivenessConfig(enabled=False),
    )
    with run_service(config) as running:
        yield running


@pytest.fixture
def http(service: FaceStreamService, serve_api: ServeApi) -> Iterator[httpx.Client]:
    with serve_api(service, TOKEN) as url, httpx.Client(base_url=url, timeout=30.0) as client:
        yield client


def test_feedback_over_http_quarantines_audits_and_refuses_bad_input(
    http: httpx.Client, service: FaceStreamService, sample: SampleFiles
) -> None:
    photo = next((sample.gallery / "eileen_collins").iterdir()).read_bytes()
    enrolled = http.post(
        "/v1/identities",
        data={"name": "Eileen"},
        files=[("images", ("a.png", photo, "image/png"))],
        headers=AUTH,
    )
    assert enrolled.status_code == 201, enrolled.text
    identity_id = enrolled.json()["id"]
    gallery = service.services.gallery
    # the probe: the enrolled face's own encoding, as the camera would give it again
    stored = service.services.redis.hgetall(f"{gallery.key_prefix}vectors:{gallery.model_id}")
    value = next(iter(stored.values()))
    assert isinstance(value, bytes)
    vector = np.frombuffer(value, "<f4").astype(np.float32)
    probe = Embeddings(vector[np.newaxis], gallery.model_id)
    best = gallery.identify(probe, max_distance=service.tau).best()[0]
    assert best is not None
    decision = Decision(
        door_id="lab",
        camera_id="front",
        track_id=7,
        outcome="granted",
        identity_id=identity_id,
        name="Eileen",
        distance=best.distance,
        votes=2,
        at=1.0,
        template_id=best.template_id,
        probe=probe.vectors[0],
    )
    service.recorder.record(decision)
    assert service.feedback_store.remember(decision)
    route = f"/v1/decisions/{decision.event_id}/feedback"
    answer = http.post(route, json={"correct": False}, headers=AUTH)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["quarantined_template"] == best.template_id
    assert body["identity"]["negatives"] == 1
    assert body["tau"] <= service.tau
    again = http.post(route, json={"correct": False}, headers=AUTH)
    assert again.status_code == 409
    assert "already had its feedback" in again.json()["detail"]
    unknown = http.post(f"/v1/decisions/{'a' * 32}/feedback", json={"correct": True}, headers=AUTH)
    assert unknown.status_code == 404
    assert "awaits feedback" in unknown.json()["detail"]
    bad = http.post(route, json={"correct": "maybe", "extra": 1}, headers=AUTH)
    assert bad.status_code == 422
    listed = http.get(f"/v1/identities/{identity_id}/quarantined", headers=AUTH).json()
    assert [each["template_id"] for each in listed["templates"]] == [best.template_id]
    audit = service.config.audit_path.read_text(encoding="utf-8")
    assert decision.event_id in audit
    assert '"correct":false' in audit.replace(" ", "")
    restored = http.post(
        f"/v1/identities/{identity_id}/quarantined/{best.template_id}/restore", headers=AUTH
    )
    assert restored.status_code == 200, restored.text
