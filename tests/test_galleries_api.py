"""Named galleries over HTTP: enrol into galleries, identify within some, and a bad gallery
name refused as a 422 naming the field. A real service (real encoder, detector, embedded
Redis) behind uvicorn on 127.0.0.1, driven with httpx."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import httpx
import pytest

from pipeline.config.service import ApiConfig, FaceStreamConfig
from pipeline.liveness.config import LivenessConfig
from pipeline.service.sample import SampleFiles, make_sample
from pipeline.service.service import FaceStreamService, run_service

ServeApi = Callable[[FaceStreamService, str], AbstractContextManager[str]]
TOKEN = "galleries-api-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> SampleFiles:
    return make_sample(tmp_path_factory.mktemp("sample"), seconds=1.0)


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory, serve_api: ServeApi) -> Iterator[str]:
    """A running service with no camera, served over HTTP."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    config = FaceStreamConfig(
        data_dir=tmp_path_factory.mktemp("data"),
        api=ApiConfig(analysis_per_minute=100_000, analysis_burst=1000),
        liveness=LivenessConfig(enabled=False),
    )
    with run_service(config) as running, serve_api(running, TOKEN) as url:
        yield url


@pytest.fixture
def http(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=30.0) as client:
        yield client


def _photo(sample: SampleFiles) -> bytes:
    return next((sample.gallery / "eileen_collins").iterdir()).read_bytes()


def _identify(http: httpx.Client, photo: bytes, galleries: list[str]) -> httpx.Response:
    return http.post(
        "/v1/identify",
        data={"galleries": galleries},
        files={"image": ("probe.png", photo, "image/png")},
        headers=AUTH,
    )


def test_galleries_enrol_into_galleries_and_identify_within_them(
    http: httpx.Client, sample: SampleFiles
) -> None:
    """An identity enrolled into staff and night shows both (sorted) in its JSON; identify
    finds it searching staff, or every gallery, and not searching visitors only."""
    photo = _photo(sample)
    enrolled = http.post(
        "/v1/identities",
        data={"name": "Eileen", "galleries": ["staff", "night"]},
        files=[("images", ("photo.png", photo, "image/png"))],
        headers=AUTH,
    )
    assert enrolled.status_code == 201, enrolled.text
    identity_id = enrolled.json()["id"]
    assert enrolled.json()["galleries"] == ["night", "staff"]
    shown = http.get(f"/v1/identities/{identity_id}", headers=AUTH).json()
    assert shown["galleries"] == ["night", "staff"]

    for galleries in (["staff"], ["visitors", "night"], []):
        found = _identify(http, photo, galleries)
        assert found.status_code == 200, found.text
        assert [m["identity_id"] for m in found.json()["matches"]] == [identity_id]
    elsewhere = _identify(http, photo, ["visitors"])
    assert elsewhere.status_code == 200
    assert elsewhere.json()["matches"] == []
    assert http.delete(f"/v1/identities/{identity_id}", headers=AUTH).status_code == 204


def test_galleries_a_bad_gallery_name_is_422_naming_the_field(
    http: httpx.Client, sample: SampleFiles
) -> None:
    """A gallery name with a slash, or too long, is a 422 naming ``galleries``, and the
    enrolment writes nothing."""
    photo = _photo(sample)
    before = http.get("/v1/identities", headers=AUTH).json()["identities"]
    for bad in ("a/b", "x" * 65):
        refused = http.post(
            "/v1/identities",
            data={"name": "Nobody", "galleries": ["staff", bad]},
            files=[("images", ("photo.png", photo, "image/png"))],
            headers=AUTH,
        )
        assert refused.status_code == 422
        assert "galleries" in refused.text
        searched = _identify(http, photo, [bad])
        assert searched.status_code == 422
        assert "galleries" in searched.text
    assert http.get("/v1/identities", headers=AUTH).json()["identities"] == before


def test_galleries_patch_moves_an_identity_into_a_gallery_and_refuses_bad_input(
    http: httpx.Client, sample: SampleFiles
) -> None:
    """Enrolled into b only, Eileen is not found searching gallery a; after PATCH with
    galleries [a, b] she is, and her JSON lists both. A bad name, an empty list or an unknown
    field is a 422 and an unknown id a 404, each changing nothing."""
    photo = _photo(sample)
    enrolled = http.post(
        "/v1/identities",
        data={"name": "Eileen", "galleries": ["b"]},
        files=[("images", ("photo.png", photo, "image/png"))],
        headers=AUTH,
    )
    assert enrolled.status_code == 201, enrolled.text
    identity_id = enrolled.json()["id"]
    assert _identify(http, photo, ["a"]).json()["matches"] == []

    moved = http.patch(
        f"/v1/identities/{identity_id}", json={"galleries": ["b", "a"]}, headers=AUTH
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["galleries"] == ["a", "b"]
    found = _identify(http, photo, ["a"])
    assert [m["identity_id"] for m in found.json()["matches"]] == [identity_id]

    before = http.get(f"/v1/identities/{identity_id}", headers=AUTH).json()
    bad_bodies: list[dict[str, object]] = [
        {"galleries": ["a", "no/slash"]},
        {"galleries": []},
        {"galleries": ["a"], "unknown": 1},
    ]
    for body in bad_bodies:
        refused = http.patch(f"/v1/identities/{identity_id}", json=body, headers=AUTH)
        assert refused.status_code == 422, (body, refused.text)
    absent = http.patch("/v1/identities/nobody", json={"galleries": ["a"]}, headers=AUTH)
    assert absent.status_code == 404
    assert "nobody" in absent.json()["detail"]
    assert http.get(f"/v1/identities/{identity_id}", headers=AUTH).json() == before
    assert http.delete(f"/v1/identities/{identity_id}", headers=AUTH).status_code == 204
