"""Liveness at the door, end to end: the sample video is a photo moved in front of the camera
(a print attack by construction). With liveness required, the enrolled face is recognised but
never granted and never judged live; the preview and the stream's tracks show the verdict.
The same service's ``POST /v1/liveness`` judges uploaded photos passively."""

from __future__ import annotations

import csv
import shutil
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import pytest
from live_support import enrol_sample

from pipeline.access.policy import DoorConfig
from pipeline.capture import CameraConfig
from pipeline.config.service import FaceStreamConfig
from pipeline.liveness import LivenessConfig
from pipeline.service.sample import make_sample
from pipeline.service.service import FaceStreamService, run_service

WATCH_SECONDS = 20.0


ServeApi = Callable[[FaceStreamService, str], AbstractContextManager[str]]
TOKEN = "liveness-test-token-0123456789"


def _passive_verdicts(
    service: FaceStreamService, serve_api: ServeApi, shared_data: Path
) -> dict[str, tuple[str, list[str]]]:
    """label -> (path, verdicts of the faces) for each real image, through the HTTP API."""
    folder = shared_data / "liveness"
    with (folder / "labels.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    found: dict[str, tuple[str, list[str]]] = {}
    with serve_api(service, TOKEN) as url, httpx.Client(base_url=url, timeout=30.0) as http:
        for row in rows:
            reply = http.post(
                "/v1/liveness",
                files={"image": (row["path"], (folder / row["path"]).read_bytes())},
                headers={"Authorization": f"Bearer {TOKEN}"},
            )
            assert reply.status_code == 200, reply.text
            verdicts = [face["verdict"] for face in reply.json()["faces"]]
            found[row["path"]] = (row["label"], verdicts)
        junk = http.post(
            "/v1/liveness",
            files={"image": ("junk.jpg", b"not an image")},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert junk.status_code == 400
    return found


def test_a_moving_photo_never_opens_a_door_that_requires_liveness(
    tmp_path: Path, serve_api: ServeApi, shared_data: Path
) -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    sample = make_sample(tmp_path / "sample", seconds=4.0)
    door = DoorConfig(
        id="lab", cameras=["front"], require_liveness=True, required_matches=2, window_encodings=3
    )
    config = FaceStreamConfig(
        data_dir=tmp_path / "data", liveness=LivenessConfig(enabled=True), doors=[door]
    )
    with run_service(config) as service:
        assert service.services.liveness_engine is not None
        enrol_sample(service.services, sample)
        service.add_camera(
            CameraConfig(id="front", url=str(sample.video), loop=True, realtime=True)
        )
        verdicts: set[str | None] = set()
        recognised = False
        deadline = time.monotonic() + WATCH_SECONDS
        while time.monotonic() < deadline:
            for track in service.preview.tracks("front"):
                verdicts.add(track.liveness)
                recognised |= track.name == "eileen_collins"
            time.sleep(0.2)
        passive = _passive_verdicts(service, serve_api, shared_data)
        decisions = service.bus.recent(100, kind="decision")
        registry = service.services.metrics.registry
        liveness_seconds = registry.get_sample_value(
            "facestream_stage_seconds_count", {"stage": "liveness", "backend": "cpu"}
        )
    assert recognised, "the enrolled face was never recognised: the test proved nothing"
    assert "live" not in verdicts
    assert verdicts <= {"undecided", "spoof"}
    assert [d.payload["outcome"] for d in decisions if d.payload["outcome"] == "granted"] == []
    assert liveness_seconds is not None
    assert liveness_seconds > 10
    for path, (label, found) in passive.items():
        assert found, f"no face found in {path}"
        assert found[0] == label, (path, found)  # the largest face: live or spoof


def test_doors_requiring_liveness_need_it_enabled() -> None:
    door = DoorConfig(id="lab", cameras=["front"], require_liveness=True)
    with pytest.raises(ValueError, match=r"doors\.0\.require_liveness \(lab\).*liveness\.enabled"):
        FaceStreamConfig(doors=[door], liveness=LivenessConfig(enabled=False))
