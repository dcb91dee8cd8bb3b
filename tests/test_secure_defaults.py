"""Safe as shipped: every config the project ships (the docs example, the compose, Docker, GPU
and Kubernetes configs, and `facestream run --sample`'s demo door) runs with liveness on and
every door requiring it; a door that opts out says so in its decisions' events."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import yaml

from pipeline.access.policy import DoorConfig, DoorPolicy
from pipeline.access.recorder import decision_event
from pipeline.cli.run import _with_demo
from pipeline.config.service import FaceStreamConfig, load_config
from pipeline.types import TrackObservation

ROOT = Path(__file__).resolve().parents[1]
TOML_FILES = [
    ROOT / "docs" / "facestream.example.toml",
    ROOT / "deploy" / "facestream.compose.toml",
    ROOT / "deploy" / "facestream.docker.toml",
    ROOT / "deploy" / "facestream.gpu.toml",
]
KUBERNETES_FILES = [
    ROOT / "deploy" / "k8s" / "configmap.yaml",
    ROOT / "deploy" / "k8s" / "workers.yaml",
]


def _kubernetes_configs() -> list[tuple[str, FaceStreamConfig]]:
    configs = []
    for path in KUBERNETES_FILES:
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if document and document.get("kind") == "ConfigMap":
                text = document["data"]["facestream.toml"]
                configs.append((path.name, FaceStreamConfig.model_validate(tomllib.loads(text))))
    return configs


@pytest.mark.parametrize("path", TOML_FILES, ids=lambda path: path.name)
def test_a_shipped_toml_config_runs_with_liveness_on(path: Path) -> None:
    config = load_config(path)
    assert config.liveness.enabled is True
    assert all(door.require_liveness for door in config.doors)


def test_the_kubernetes_configs_run_with_liveness_on() -> None:
    configs = _kubernetes_configs()
    assert [name for name, _ in configs] == ["configmap.yaml", "workers.yaml"]
    for name, config in configs:
        assert config.liveness.enabled is True, name
        assert all(door.require_liveness for door in config.doors), name


def test_the_sample_demo_door_requires_liveness(tmp_path: Path) -> None:
    """`make run` (`facestream run --sample`) and `--camera 0` add a demo door that requires
    liveness, watching the cameras they add."""
    settings = _with_demo(FaceStreamConfig(data_dir=tmp_path), sample=True, camera="0")
    (door,) = settings.doors
    assert door.id == "demo"
    assert door.cameras == ["sample", "camera"]
    assert door.require_liveness is True
    assert settings.liveness.enabled is True
    assert [camera.url for camera in settings.capture.cameras][1] == 0  # a device index


def test_every_decision_event_says_whether_liveness_was_required() -> None:
    """A door that opted out grants an enrolled face judged nobody's liveness, and its event
    says ``"liveness_required": false``; a secure door's events say true."""
    doors = [
        DoorConfig(id="open", cameras=["cam"], required_matches=1, require_liveness=False),
        DoorConfig(id="safe", cameras=["cam"], required_matches=1),
    ]
    seen = TrackObservation("cam", 1, "ann", "Ann", 0.4, live=True, at=1.0)
    events = {d.door_id: decision_event(d).payload for d in DoorPolicy(doors).observe(seen)}
    assert events["open"]["liveness_required"] is False
    assert events["safe"]["liveness_required"] is True
    assert events["open"]["outcome"] == events["safe"]["outcome"] == "granted"
