"""The /v1/unknowns routes end to end: a real service (embedded Redis, real models) behind
uvicorn on 127.0.0.1. A pan-and-zoom video of a shared photo plays as a camera; when the camera
goes, its track ends unknown and is kept (the live path's on_track wiring); the cluster is
listed, its thumbnail served, enrolled (201, the identity's shape), and refused the second time
(409); bad input is a 4xx with a message and writes nothing; with unknowns off every route is a
404 saying so."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import pytest
from waiting import wait_until

from calibration.unknowns import photo_video, video_unknown_tracks
from pipeline.capture import CameraConfig
from pipeline.config.service import ApiConfig, FaceStreamConfig
from pipeline.config.unknowns import UnknownsConfig
from pipeline.images import decode_image
from pipeline.liveness.config import LivenessConfig
from pipeline.recognition.live import CameraTrack
from pipeline.service.service import FaceStreamService, run_service
from pipeline.types import Embeddings, TrackResult

ServeApi = Callable[[FaceStreamService, str], AbstractContextManager[str]]
TOKEN = "unknowns-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PHOTO = "faces/face_recognition/examples/knn_examples/train/obama/obama.jpg"


def _service(data_dir: Path, unknowns: UnknownsConfig) -> AbstractContextManager[FaceStreamService]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    config = FaceStreamConfig(
        data_dir=data_dir,
        api=ApiConfig(analysis_per_minute=100_000, analysis_burst=1000),
        liveness=LivenessConfig(enabled=False),
        unknowns=unknowns,
    )
    return run_service(config)


@pytest.fixture(scope="module")
def video(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("video") / "obama.mp4"
    photo_video(decode_image((shared_data / PHOTO).read_bytes()), path, seconds=2.0, seed=3)
    return path


@pytest.fixture
def http(tmp_path: Path, serve_api: ServeApi) -> Iterator[tuple[FaceStreamService, httpx.Client]]:
    unknowns = UnknownsConfig(enabled=True, keep_thumbnails=True)
    with (
        _service(tmp_path / "data", unknowns) as service,
        serve_api(service, TOKEN) as url,
        httpx.Client(base_url=url, timeout=30.0, headers=AUTH) as client,
    ):
        yield service, client


def _counted(service: FaceStreamService, result: str) -> float:
    value = service.services.metrics.registry.get_sample_value(
        "facestream_unknown_tracks_total", {"result": result}
    )
    return value or 0.0


def _everything(service: FaceStreamService) -> dict[bytes | str, object]:
    client = service.services.redis
    return {key: client.dump(key) for key in sorted(client.keys("*"))}


def test_unknowns_over_http_list_thumbnail_enrol_delete_and_refuse_bad_input(
    http: tuple[FaceStreamService, httpx.Client], video: Path
) -> None:
    service, client = http
    assert client.get("/v1/unknowns").json() == {"clusters": []}
    service.add_camera(CameraConfig(id="lobby", url=str(video), realtime=True))
    wait_until(lambda: service.camera_status("lobby").state == "finished", 60.0, "the video played")
    service.remove_camera("lobby")  # its open track ends: unknown, so kept
    wait_until(lambda: bool(client.get("/v1/unknowns").json()["clusters"]), 30.0, "a cluster")
    (cluster,) = client.get("/v1/unknowns").json()["clusters"]
    assert cluster["count"] == 1
    services = service.services
    assert _counted(service, "kept") == 1
    # the same face, judged spoof (a photo held up): not kept, and counted as such
    (faces, *_) = video_unknown_tracks(
        services.analyzer, services.gallery, video, services.config.recognition
    )
    spoof = TrackResult(7, None, None, 0, 10, len(faces.embeddings), live=False, faces=faces)
    assert service.unknowns().keep(CameraTrack("lobby", spoof)) is None
    assert _counted(service, "spoof") == 1
    assert client.get("/v1/unknowns").json()["clusters"][0]["count"] == 1
    assert cluster["cameras"] == ["lobby"]
    assert cluster["first_seen"] <= cluster["last_seen"]
    cluster_id = cluster["cluster_id"]
    assert cluster["thumbnail_url"] == f"/v1/unknowns/{cluster_id}/thumbnail"
    thumbnail = client.get(cluster["thumbnail_url"])
    assert thumbnail.status_code == 200
    assert thumbnail.headers["content-type"] == "image/jpeg"
    assert thumbnail.content[:2] == b"\xff\xd8"
    assert client.get("/v1/unknowns/x/thumbnail", headers={"Authorization": ""}).status_code == 401

    before = _everything(service)
    for body, status, words in (
        ({"name": "   "}, 422, "name"),
        ({"name": "Barack", "galleries": ["bad name!"]}, 422, "galleries"),
        ({"name": "Barack", "galleries": []}, 422, "galleries"),
        ({"name": "Barack", "extra": 1}, 422, "extra"),
    ):
        refused = client.post(f"/v1/unknowns/{cluster_id}/enroll", json=body)
        assert refused.status_code == status, refused.text
        assert words in refused.text
    missing = client.post(f"/v1/unknowns/{'0' * 32}/enroll", json={"name": "Nobody"})
    assert missing.status_code == 404
    assert "no unknown cluster" in missing.json()["detail"]
    assert client.delete(f"/v1/unknowns/{'0' * 32}").status_code == 404
    assert _everything(service) == before

    enrolled = client.post(
        f"/v1/unknowns/{cluster_id}/enroll", json={"name": "Barack", "galleries": ["staff"]}
    )
    assert enrolled.status_code == 201, enrolled.text
    identity = enrolled.json()
    assert identity["name"] == "Barack"
    assert identity["galleries"] == ["staff"]
    assert sum(identity["templates"].values()) >= 1
    assert {"rejected", "found_by", "id", "metadata"} <= set(identity)
    assert client.get(f"/v1/identities/{identity['id']}").status_code == 200
    # the running service's own index knows the person now: the same face is recognised
    probe = Embeddings(faces.embeddings.vectors[:1], faces.embeddings.model_id)
    matches = service.identify(probe, top_k=1)
    assert [match.identity_id for match in matches] == [identity["id"]]
    assert client.get("/v1/unknowns").json() == {"clusters": []}
    assert client.get(f"/v1/unknowns/{cluster_id}/thumbnail").status_code == 404
    assert not (service.config.data_dir / "unknowns" / f"{cluster_id}.jpg").exists()
    before = _everything(service)
    again = client.post(f"/v1/unknowns/{cluster_id}/enroll", json={"name": "Barack"})
    assert again.status_code == 409
    assert "enrolled already" in again.json()["detail"]
    assert _everything(service) == before
    assert client.delete(f"/v1/unknowns/{cluster_id}").status_code == 204
    assert client.delete(f"/v1/unknowns/{cluster_id}").status_code == 404


def test_unknowns_disabled_every_route_is_404_and_nothing_is_kept(
    tmp_path: Path, serve_api: ServeApi
) -> None:
    with (
        _service(tmp_path / "data", UnknownsConfig()) as service,
        serve_api(service, TOKEN) as url,
        httpx.Client(base_url=url, timeout=30.0, headers=AUTH) as client,
    ):
        cluster = "a" * 32
        for method, path in (
            ("GET", "/v1/unknowns"),
            ("POST", f"/v1/unknowns/{cluster}/enroll"),
            ("DELETE", f"/v1/unknowns/{cluster}"),
            ("GET", f"/v1/unknowns/{cluster}/thumbnail"),
        ):
            answer = client.request(method, path, json={"name": "X"} if method == "POST" else None)
            assert answer.status_code == 404, (method, path)
            assert "[unknowns] enabled = false" in answer.json()["detail"]
        assert service.unknown_faces is None
        assert not service.services.redis.keys("*unknowns*")


def _play(service: FaceStreamService, camera_id: str, video: Path) -> None:
    """Play ``video`` once as camera ``camera_id``, then remove it (its tracks end)."""
    service.add_camera(CameraConfig(id=camera_id, url=str(video), realtime=True))
    wait_until(
        lambda: service.camera_status(camera_id).state == "finished", 60.0, f"{camera_id} played"
    )
    service.remove_camera(camera_id)


def test_an_unknown_seen_again_publishes_unknown_recurring(
    tmp_path: Path, video: Path, serve_api: ServeApi
) -> None:
    """recurring_after_seconds = 0: the same person on a second camera joins the first
    camera's cluster and an unknown_recurring event reaches the stream (ids, times, cameras:
    no face); the first sighting published none."""
    unknowns = UnknownsConfig(enabled=True, recurring_after_seconds=0)
    with (
        _service(tmp_path / "data", unknowns) as service,
        serve_api(service, TOKEN) as url,
        httpx.Client(base_url=url, timeout=30.0, headers=AUTH) as client,
    ):
        _play(service, "lobby", video)
        wait_until(lambda: bool(client.get("/v1/unknowns").json()["clusters"]), 30.0, "a cluster")
        assert not service.bus.recent(100, kind="unknown_recurring")
        _play(service, "hall", video)
        wait_until(
            lambda: bool(service.bus.recent(100, kind="unknown_recurring")),
            30.0,
            "the unknown_recurring event in the stream",
        )
        (event,) = service.bus.recent(100, kind="unknown_recurring")
        (cluster,) = client.get("/v1/unknowns").json()["clusters"]
        assert event.camera_id == "hall"
        assert event.payload["cluster_id"] == cluster["cluster_id"]
        assert event.payload["cameras"] == ("hall", "lobby")  # lists are stored as tuples
        assert event.payload["count"] == cluster["count"] == 2
        assert set(event.payload) == {
            "cluster_id", "camera_id", "count", "first_seen", "last_seen",
            "previous_last_seen", "cameras",
        }  # fmt: skip
