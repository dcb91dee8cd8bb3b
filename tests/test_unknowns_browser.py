"""The preview page's unknown faces panel in a real browser (headless chromium, selenium),
against a real service behind uvicorn on 127.0.0.1.

With unknown faces off (the default, ``[unknowns] enabled = false``) the API answers 404, and
the panel says they are off and how to turn them on, with the API's own message. With them on,
a face the cameras saw (through the running service: capture, recognition, the unknowns
store) is listed, forgotten and enrolled from the panel."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import httpx
import pytest
from browser_support import chromium, sign_in, wait_for
from waiting import wait_until

from pipeline.capture import CameraConfig
from pipeline.config.service import FaceStreamConfig
from pipeline.config.unknowns import UnknownsConfig
from pipeline.liveness.config import LivenessConfig
from pipeline.service.sample import make_sample
from pipeline.service.service import FaceStreamService, run_service

ServeApi = Callable[[FaceStreamService, str], AbstractContextManager[str]]
TOKEN = "unknowns-browser-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CLUSTER_TIMEOUT_SECONDS = 60.0


@pytest.fixture
def unknowns_off_url(tmp_path: Path, serve_api: ServeApi) -> Iterator[str]:
    """A running service with the default config (unknown faces off), no camera."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    config = FaceStreamConfig(data_dir=tmp_path / "data", liveness=LivenessConfig(enabled=False))
    with run_service(config) as service, serve_api(service, TOKEN) as base_url:
        yield base_url


def test_unknowns_panel_says_the_feature_is_off_and_how_to_turn_it_on(
    unknowns_off_url: str,
) -> None:
    from selenium.webdriver.common.by import By  # noqa: PLC0415  (test-only dependency)

    refused = httpx.get(f"{unknowns_off_url}/v1/unknowns", headers=AUTH, timeout=30.0)
    assert refused.status_code == 404
    detail = refused.json()["detail"]
    with chromium() as driver:
        sign_in(driver, unknowns_off_url, TOKEN)

        def panel_text() -> str:
            return str(driver.find_element(By.ID, "unknowns-state").text)

        wait_for(lambda: "Unknown faces are off" in panel_text(), "that unknown faces are off")
        assert "enabled = true in the [unknowns] section" in panel_text()
        assert detail in panel_text()
        assert driver.find_elements(By.CSS_SELECTOR, "#cluster-list li") == []


@dataclass(frozen=True, slots=True)
class UnknownsOn:
    """The running service (unknown faces kept, with thumbnails; nobody enrolled), its API's
    address and the sample video its cameras play."""

    service: FaceStreamService
    base_url: str
    video: Path


@pytest.fixture
def unknowns_on(tmp_path: Path, serve_api: ServeApi) -> Iterator[UnknownsOn]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    sample = make_sample(tmp_path / "sample", seconds=3.0)
    config = FaceStreamConfig(
        data_dir=tmp_path / "data",
        liveness=LivenessConfig(enabled=False),  # not about liveness: the sample is a photo
        unknowns=UnknownsConfig(enabled=True, keep_thumbnails=True),
    )
    with run_service(config) as service, serve_api(service, TOKEN) as base_url:
        yield UnknownsOn(service, base_url, sample.video)


def _clusters(http: httpx.Client) -> list[dict[str, object]]:
    listed = http.get("/v1/unknowns", headers=AUTH)
    assert listed.status_code == 200, listed.text
    clusters: list[dict[str, object]] = listed.json()["clusters"]
    return clusters


def _seen_by(http: httpx.Client, camera_id: str) -> list[dict[str, object]]:
    return [each for each in _clusters(http) if camera_id in cast(list[str], each["cameras"])]


def _play_once(service: FaceStreamService, camera_id: str, video: Path) -> None:
    """Play ``video`` on a new camera to its end, then remove the camera: its open tracks
    finish, and an unknown one goes to the clusters."""
    service.add_camera(CameraConfig(id=camera_id, url=str(video), realtime=True))
    wait_until(
        lambda: service.camera_status(camera_id).state == "finished",
        CLUSTER_TIMEOUT_SECONDS,
        f"camera {camera_id} played the video",
    )
    service.remove_camera(camera_id)


def test_unknowns_panel_lists_forgets_and_enrols_a_cluster(unknowns_on: UnknownsOn) -> None:
    """The sample face, enrolled nowhere, seen by camera 'front' is listed with its count,
    camera and thumbnail; "forget" deletes it (the API no longer lists it). Seen again by
    camera 'back', its new cluster is enrolled by "enrol as...": a bad gallery name is refused
    with the API's message, then the name alone makes an identity (checked through the API)."""
    from selenium.webdriver.common.by import By  # noqa: PLC0415  (test-only dependency)

    service = unknowns_on.service
    with chromium() as driver, httpx.Client(base_url=unknowns_on.base_url, timeout=30) as http:
        _play_once(service, "front", unknowns_on.video)
        wait_until(lambda: bool(_seen_by(http, "front")), CLUSTER_TIMEOUT_SECONDS, "a cluster")
        first = _seen_by(http, "front")[0]
        row_css = f"#cluster-{first['cluster_id']}"
        sign_in(driver, unknowns_on.base_url, TOKEN)

        def row_text() -> str:
            rows = driver.find_elements(By.CSS_SELECTOR, row_css)
            return str(rows[0].text) if rows else ""

        wait_for(lambda: "sightings" in row_text(), "the cluster's row")
        assert f"{first['count']} sightings" in row_text()
        assert "cameras: front" in row_text()
        thumbnail = driver.find_element(By.CSS_SELECTOR, f"{row_css} img")
        wait_for(
            lambda: bool(driver.execute_script("return arguments[0].naturalWidth;", thumbnail)),
            "the cluster's thumbnail",
        )

        driver.find_element(By.ID, "operator-token").send_keys(TOKEN)
        driver.find_element(By.CSS_SELECTOR, f"{row_css} button.forget").click()
        wait_for(lambda: "forgotten" in row_text(), "the cluster forgotten")
        assert first["cluster_id"] not in [each["cluster_id"] for each in _clusters(http)]

        _play_once(service, "back", unknowns_on.video)
        wait_until(lambda: bool(_seen_by(http, "back")), CLUSTER_TIMEOUT_SECONDS, "a new cluster")
        second = _seen_by(http, "back")[0]
        row_css = f"#cluster-{second['cluster_id']}"
        driver.find_element(By.ID, "unknowns-refresh").click()
        wait_for(lambda: "cameras:" in row_text() and "back" in row_text(), "the new cluster")

        driver.find_element(By.CSS_SELECTOR, f"{row_css} input.enrol-name").send_keys("Eileen")
        driver.find_element(By.CSS_SELECTOR, f"{row_css} input.enrol-galleries").send_keys("a b")
        driver.find_element(By.CSS_SELECTOR, f"{row_css} button.enrol").click()
        problem = driver.find_element(By.CSS_SELECTOR, f"{row_css} .row-problem")
        wait_for(lambda: "galleries" in problem.text, "the refusal naming galleries")
        assert http.get("/v1/identities", headers=AUTH).json()["identities"] == []

        driver.find_element(By.CSS_SELECTOR, f"{row_css} input.enrol-galleries").clear()
        driver.find_element(By.CSS_SELECTOR, f"{row_css} button.enrol").click()
        wait_for(lambda: "enrolled as Eileen" in row_text(), "the enrolment")
        identities = http.get("/v1/identities", headers=AUTH).json()["identities"]
        assert [(each["name"], each["galleries"]) for each in identities] == [
            ("Eileen", ["default"])
        ]
        assert f"({identities[0]['id']})" in row_text()
        assert second["cluster_id"] not in [each["cluster_id"] for each in _clusters(http)]
