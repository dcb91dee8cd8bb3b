"""The running service as an operator meets it: `facestream run` in a subprocess (signals,
the sample, `events tail` beside it), Redis killed and restarted under it, and a camera that
never answers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from live_support import enrol_sample
from ports import free_port

from pipeline.access.audit import verify_audit_log
from pipeline.access.policy import DoorConfig
from pipeline.capture import CameraConfig
from pipeline.config.service import FaceStreamConfig, GalleryConfig
from pipeline.liveness.config import LivenessConfig
from pipeline.redis.server import EmbeddedRedis
from pipeline.service.sample import SampleFiles, make_sample
from pipeline.service.service import FaceStreamService, run_service
from pipeline.types import Embeddings

TOKEN = "service-test-token-0123456789"
DEADLINE_SECONDS = 90.0
FACESTREAM = [sys.executable, "-m", "pipeline.cli.main"]


def _until(condition: object, what: str, seconds: float = DEADLINE_SECONDS) -> None:
    assert callable(condition)
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {seconds} s")
        time.sleep(0.2)


@pytest.fixture
def needs_redis() -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")


@pytest.mark.usefixtures("needs_redis")
def test_facestream_run_with_the_sample_decides_and_stops_cleanly_on_sigterm(
    tmp_path: Path,
) -> None:
    """The README's `make run`, the liveness demo: the sample is a moving printed photo, so its
    enrolled face is recognised (known matches counted) but never granted at the demo door,
    which requires liveness by default; `events tail` in a second process reads the camera's
    events; SIGTERM stops everything in order (exit 0, audit log intact if written)."""
    config = tmp_path / "facestream.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n', encoding="utf-8")
    port = free_port()
    environment = {**os.environ, "FACESTREAM_API_TOKEN": TOKEN}
    process = subprocess.Popen(
        [*FACESTREAM, "run", "--sample", "--config", str(config), "--port", str(port)],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {TOKEN}"}

        def known_matches() -> float:
            try:
                reply = httpx.get(f"{base}/metrics")
            except httpx.TransportError:
                assert process.poll() is None, process.communicate()[1]
                return 0.0
            return sum(
                float(line.rsplit(" ", 1)[1])
                for line in reply.text.splitlines()
                if line.startswith("facestream_matches_total{") and 'result="known"' in line
            )

        _until(lambda: known_matches() >= 5, "five encodings of the sample matching its face")
        reply = httpx.get(f"{base}/v1/events", params={"kind": "decision"}, headers=headers)
        outcomes = [event["payload"]["outcome"] for event in reply.json()["events"]]
        assert "granted" not in outcomes
        tail = subprocess.run(
            [*FACESTREAM, "events", "tail", "--no-follow", "--last", "50", "-c", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        kinds = [json.loads(line)["kind"] for line in tail.stdout.splitlines()]
        assert "camera_up" in kinds
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    assert "facestream stopped" in stderr
    audit = tmp_path / "data" / "audit" / "decisions.jsonl"
    if audit.exists():  # a refusal (spoof_suspected) was decided and audited
        assert verify_audit_log(audit).ok


@pytest.fixture
def sample(tmp_path: Path) -> SampleFiles:
    return make_sample(tmp_path / "sample", seconds=4.0)


@pytest.fixture
def redis_service(
    tmp_path: Path, server: EmbeddedRedis, sample: SampleFiles
) -> Iterator[FaceStreamService]:
    """A service on an external (restartable) Redis, the sample face enrolled, a door on
    camera 'front' (not yet added)."""
    config = FaceStreamConfig(
        data_dir=tmp_path / "data",
        gallery=GalleryConfig(redis_url=server.url, socket_timeout_seconds=1.0),
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
    with run_service(config) as service:
        enrol_sample(service.services, sample)
        yield service


def test_redis_killed_and_restarted_loses_no_enrolment_and_no_event(
    redis_service: FaceStreamService, server: EmbeddedRedis, sample: SampleFiles
) -> None:
    service = redis_service
    server.stop()  # SIGTERM: an outage
    _until(lambda: not service.readiness().redis, "readiness notices Redis is gone", 10)
    assert not service.readiness().ready
    # recognition goes on from the in-memory gallery: the decision is audited and waits
    service.add_camera(CameraConfig(id="front", url=str(sample.video), loop=True, realtime=True))
    audit_path = service.config.audit_path
    _until(lambda: audit_path.read_text(encoding="utf-8"), "a decision audited without Redis")
    assert service.recorder.unpublished >= 2  # camera_up, then the decision
    audited = audit_path.read_text(encoding="utf-8").splitlines()
    waiting_id = json.loads(audited[-1])["event"]["event_id"]

    server.start()
    server.wait_ready(timeout_seconds=10.0)
    _until(lambda: service.readiness().ready, "ready again after Redis restarts", 30)
    _until(lambda: service.recorder.unpublished == 0, "the backlog published", 30)
    published = {event.event_id for event in service.bus.recent(1000)}
    assert waiting_id in published
    names = [identity.name for identity in service.services.gallery.list_identities()]
    assert names == ["eileen_collins"]  # the AOF kept the enrolment


def test_a_camera_that_never_answers_is_reported_not_fatal(
    tmp_path: Path, needs_redis: None
) -> None:
    config = FaceStreamConfig(data_dir=tmp_path / "data")
    with run_service(config) as service:
        port = free_port()  # nothing listens there
        camera = CameraConfig(
            id="dead", url=f"rtsp://127.0.0.1:{port}/nothing", open_timeout_seconds=1.0
        )
        service.add_camera(camera)

        def waiting() -> bool:
            (status,) = service.camera_statuses()
            return status.state == "waiting" and status.last_error is not None

        _until(waiting, "the dead camera reported as waiting with its error", 30)
        assert service.readiness().ready  # one dead camera does not take the service down
        assert service.readiness().cameras == {"dead": "waiting"}
        service.remove_camera("dead")
        assert service.camera_statuses() == []


@pytest.mark.usefixtures("needs_redis")
def test_the_calibrated_tau_is_used_only_for_its_own_encoder(tmp_path: Path) -> None:
    from engines.errors import ConfigError  # noqa: PLC0415
    from pipeline.config.calibrated import CALIBRATED_TAU_FILE  # noqa: PLC0415
    from pipeline.recognition.offline import MatchConfig, RecognitionConfig  # noqa: PLC0415
    from pipeline.service.app import open_services  # noqa: PLC0415

    data_dir = tmp_path / "data"
    with open_services(FaceStreamConfig(data_dir=data_dir)) as services:
        model_id = services.engine.model_id
        assert services.config.recognition.match.max_distance == 0.6  # nothing calibrated yet
    tau_file = data_dir / CALIBRATED_TAU_FILE
    tau_file.parent.mkdir(parents=True)
    tau_file.write_text(json.dumps({"model_id": model_id, "tau": 0.5607}))
    with open_services(FaceStreamConfig(data_dir=data_dir)) as services:
        assert services.config.recognition.match.max_distance == 0.5607
    explicit = RecognitionConfig(match=MatchConfig(max_distance=0.55))
    with open_services(FaceStreamConfig(data_dir=data_dir, recognition=explicit)) as services:
        assert services.config.recognition.match.max_distance == 0.55  # the config wins
    tau_file.write_text(json.dumps({"model_id": "another-encoder", "tau": 0.4}))
    with (
        pytest.raises(ConfigError, match="calibrated for encoder 'another-encoder'"),
        open_services(FaceStreamConfig(data_dir=data_dir)),
    ):
        pass


@pytest.mark.usefixtures("needs_redis")
def test_a_gallery_past_the_size_its_tau_was_chosen_for_is_reported_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An open-set tau saved for a gallery of 1: the first enrolment is within it, the second
    makes the gallery outgrow it: /healthz's match section says so, the metric holds the size
    and one warning is logged however often the status is read."""
    from pipeline.config.calibrated import CALIBRATED_TAU_FILE  # noqa: PLC0415
    from pipeline.service.app import open_services  # noqa: PLC0415

    data_dir = tmp_path / "data"
    with open_services(FaceStreamConfig(data_dir=data_dir)) as services:
        model_id = services.engine.model_id
    tau_file = data_dir / CALIBRATED_TAU_FILE
    tau_file.parent.mkdir(parents=True)
    tau_file.write_text(json.dumps({"model_id": model_id, "tau": 0.55, "gallery_size": 1}))
    vector = np.zeros((1, 128), np.float32)
    with run_service(FaceStreamConfig(data_dir=data_dir)) as service:
        assert service.config.recognition.match.gallery_size == 1
        registry = service.services.metrics.registry
        assert registry.get_sample_value("facestream_match_gallery_size") == 1
        enroll = service.services.enroll
        enroll("first", Embeddings(vector + 0.01, model_id=model_id))
        assert service.match_status().as_dict() == {
            "tau": 0.55,
            "gallery_size": 1,
            "identities": 1,
            "outgrown": False,
        }
        enroll("second", Embeddings(vector - 0.01, model_id=model_id))
        with caplog.at_level("WARNING", logger="pipeline.service.service"):
            assert service.match_status().outgrown
            assert service.match_status().outgrown
        warnings = [r for r in caplog.records if "tau 0.5500 was chosen for 1" in r.message]
        assert len(warnings) == 1
