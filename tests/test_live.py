"""Live recognition over real cameras (video files read in real time by capture threads),
a real encoder and detector, and a real embedded Redis gallery."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from live_support import enrolled_services, frames_processed

from pipeline.access.policy import DoorConfig, DoorPolicy
from pipeline.capture import CameraConfig, CameraSet
from pipeline.recognition.live import CameraTrack, LiveOutputs, LiveRecognition
from pipeline.recognition.offline import RecognitionConfig
from pipeline.service.app import Services
from pipeline.service.sample import SampleFiles, make_sample
from pipeline.types import Decision

DEADLINE_SECONDS = 60.0


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> SampleFiles:
    """The public-domain sample video and gallery (no shared data needed)."""
    return make_sample(tmp_path_factory.mktemp("sample"), seconds=4.0)


@pytest.fixture
def services(tmp_path: Path, sample: SampleFiles) -> Iterator[Services]:
    """Services with the astronaut enrolled, on a private data dir and embedded Redis."""
    with enrolled_services(tmp_path / "data", sample) as built:
        yield built


def _live_cameras(
    services: Services,
    sample: SampleFiles,
    ids: tuple[str, ...],
    finished: list[CameraTrack],
    outputs: LiveOutputs | None = None,
) -> tuple[CameraSet, LiveRecognition]:
    """Looping real-time cameras on the sample video, and a recognizer reporting to
    ``finished`` (or to ``outputs`` when given); neither is started."""
    cameras = CameraSet(services.metrics)
    for camera_id in ids:
        cameras.add(CameraConfig(id=camera_id, url=str(sample.video), loop=True, realtime=True))
    live = LiveRecognition(
        services.analyzer,
        services.gallery,
        cameras,
        config=RecognitionConfig(),
        metrics=services.metrics,
        outputs=outputs or LiveOutputs(on_track=finished.append),
    )
    return cameras, live


def test_two_cameras_are_recognised_and_reported_on_stop(
    services: Services, sample: SampleFiles
) -> None:
    """Two looping real-time cameras: both get frames processed, latency is observed, and on
    stop each camera reports a finished track named eileen_collins."""
    finished: list[CameraTrack] = []
    cameras, live = _live_cameras(services, sample, ("door-a", "door-b"), finished)
    with cameras:
        for camera in cameras:
            camera.start()
        live.start()
        deadline = time.monotonic() + DEADLINE_SECONDS
        while (
            time.monotonic() < deadline
            and min(frames_processed(services, "door-a"), frames_processed(services, "door-b")) < 20
        ):
            time.sleep(0.1)
        live.stop()
    assert frames_processed(services, "door-a") >= 20
    assert frames_processed(services, "door-b") >= 20
    latency_count = services.metrics.registry.get_sample_value(
        "facestream_capture_to_decision_seconds_count", {"camera": "door-a"}
    )
    assert latency_count == frames_processed(services, "door-a")
    named = {item.camera_id for item in finished if item.track.identity == "eileen_collins"}
    assert named == {"door-a", "door-b"}


def test_removed_camera_reports_its_tracks(services: Services, sample: SampleFiles) -> None:
    """Removing a camera at run time ends its tracks (reported) while another keeps going."""
    finished: list[CameraTrack] = []
    cameras, live = _live_cameras(services, sample, ("stays", "leaves"), finished)
    with cameras:
        for camera in cameras:
            camera.start()
        live.start()
        deadline = time.monotonic() + DEADLINE_SECONDS
        while time.monotonic() < deadline and frames_processed(services, "leaves") < 10:
            time.sleep(0.1)
        cameras.remove("leaves")
        while time.monotonic() < deadline and not any(
            item.camera_id == "leaves" for item in finished
        ):
            time.sleep(0.1)
        before = frames_processed(services, "stays")
        while time.monotonic() < deadline and frames_processed(services, "stays") < before + 5:
            time.sleep(0.1)
        live.stop()
    assert any(item.camera_id == "leaves" for item in finished)
    assert frames_processed(services, "stays") >= before + 5


def test_door_decision_grants_the_enrolled_face(services: Services, sample: SampleFiles) -> None:
    """A door on one camera grants eileen_collins once her track matches K times; the other
    camera, watched by no door, makes no decision; the decision is counted in the metrics."""
    decisions: list[Decision] = []
    door = DoorConfig(  # not about liveness: the sample is a moving photo
        id="lab", cameras=["door-a"], required_matches=2, window_encodings=3, require_liveness=False
    )
    outputs = LiveOutputs(policy=DoorPolicy([door]), on_decision=decisions.append)
    cameras, live = _live_cameras(services, sample, ("door-a", "door-b"), [], outputs)
    with cameras:
        for camera in cameras:
            camera.start()
        live.start()
        deadline = time.monotonic() + DEADLINE_SECONDS
        while time.monotonic() < deadline and not decisions:
            time.sleep(0.1)
        live.stop()
    assert decisions, "no decision within the deadline"
    first = decisions[0]
    assert (first.door_id, first.camera_id, first.outcome, first.name) == (
        "lab",
        "door-a",
        "granted",
        "eileen_collins",
    )
    assert first.votes >= 2
    assert first.distance is not None
    assert first.distance < 0.6
    granted = services.metrics.registry.get_sample_value(
        "facestream_decisions_total", {"door": "lab", "outcome": "granted"}
    )
    assert granted == sum(1 for item in decisions if item.outcome == "granted")


def test_engine_in_use_is_exported(services: Services) -> None:
    """The encoder's backend and model id are visible as facestream_engine_info."""
    value = services.metrics.registry.get_sample_value(
        "facestream_engine_info",
        {
            "role": "encoder",
            "backend": services.engine.backend,
            "precision": "fp32",
            "model_id": services.engine.model_id,
        },
    )
    assert value == 1
    assert services.engine.backend == "onnxruntime-cpu"
