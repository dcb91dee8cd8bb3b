"""Camera sharding: every camera lands on exactly one shard, adding a shard moves only about
1/(n+1) of the cameras (all to the new shard), the answer is the same in every process, the
worker's shard comes from the config or a StatefulSet pod's host name with clear errors, and
a configured camera of another shard is shown as not assigned, not started and not an error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from ports import free_port

from engines.errors import ConfigError
from pipeline.capture import CameraConfig
from pipeline.capture.config import CaptureConfig
from pipeline.capture.sharding import ShardAssignment, resolve_shard, shard_of
from pipeline.config.service import FaceStreamConfig
from pipeline.service.service import run_service

CAMERA_IDS = [f"camera-{number:04d}" for number in range(1000)]
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("shards", [1, 2, 3, 5, 8])
def test_sharding_puts_every_camera_on_exactly_one_shard(shards: int) -> None:
    workers = [ShardAssignment(index, shards) for index in range(shards)]
    for camera_id in CAMERA_IDS:
        owners = [worker.index for worker in workers if worker.owns(camera_id)]
        assert owners == [shard_of(camera_id, shards)]
    counts = [sum(worker.owns(camera_id) for camera_id in CAMERA_IDS) for worker in workers]
    # balanced: each shard within 30 % of the fair share (binomial spread is ~10 % at 8)
    assert all(0.7 * 1000 / shards <= count <= 1.3 * 1000 / shards for count in counts), counts


@pytest.mark.parametrize("shards", [1, 2, 3, 4, 7, 9])
def test_sharding_adding_a_shard_moves_about_one_in_n_plus_one_cameras(shards: int) -> None:
    before = {camera_id: shard_of(camera_id, shards) for camera_id in CAMERA_IDS}
    after = {camera_id: shard_of(camera_id, shards + 1) for camera_id in CAMERA_IDS}
    moved = [camera_id for camera_id in CAMERA_IDS if before[camera_id] != after[camera_id]]
    fair = len(CAMERA_IDS) / (shards + 1)
    assert 0.7 * fair <= len(moved) <= 1.3 * fair, f"{len(moved)} moved, ~{fair:.0f} expected"
    # a camera that moves goes to the new shard: the others keep everything else they had
    assert {after[camera_id] for camera_id in moved} <= {shards}


def test_sharding_is_the_same_in_another_process() -> None:
    """sha256, not Python's salted hash: a process with another PYTHONHASHSEED agrees."""
    script = (
        "import json; from pipeline.capture.sharding import shard_of; "
        f"print(json.dumps([shard_of(c, 7) for c in {CAMERA_IDS[:50]!r}]))"
    )
    environment = {**os.environ, "PYTHONHASHSEED": "12345"}
    output = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert json.loads(output) == [shard_of(camera_id, 7) for camera_id in CAMERA_IDS[:50]]


def test_sharding_shard_from_a_statefulset_hostname() -> None:
    config = CaptureConfig(shard="ordinal", shards=4)
    assert resolve_shard(config, {"HOSTNAME": "facestream-worker-3"}) == ShardAssignment(3, 4)
    # the shard count from the environment, set beside the StatefulSet's replicas
    environment = {"HOSTNAME": "facestream-worker-5", "FACESTREAM_CAPTURE_SHARDS": "6"}
    assert resolve_shard(config, environment) == ShardAssignment(5, 6)


@pytest.mark.parametrize(
    ("config", "environment", "message"),
    [
        (CaptureConfig(shard="ordinal", shards=4), {"HOSTNAME": "laptop"}, "ending in -N"),
        (CaptureConfig(shard="ordinal", shards=4), {}, "ending in -N"),
        (
            CaptureConfig(shard="ordinal", shards=3),
            {"HOSTNAME": "facestream-worker-3"},
            "gives shard 3, but there are 3 shards",
        ),
        (CaptureConfig(shard=2, shards=4), {"FACESTREAM_CAPTURE_SHARDS": "2"}, "gives shard 2"),
        (CaptureConfig(), {"FACESTREAM_CAPTURE_SHARDS": "0"}, "0 runs no worker"),
        (CaptureConfig(), {"FACESTREAM_CAPTURE_SHARDS": "many"}, "whole number"),
    ],
)
def test_sharding_bad_shard_settings_are_config_errors(
    config: CaptureConfig, environment: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_shard(config, environment)


def test_sharding_config_refuses_a_shard_outside_the_count() -> None:
    with pytest.raises(ValueError, match=r"outside 0 \.\. 1"):
        CaptureConfig(shard=2, shards=2)
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        CaptureConfig(shards=0)


@pytest.mark.slow
def test_sharding_service_runs_only_its_own_cameras(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shard 0 of 2 starts its camera and lists the other shard's as not assigned (by id,
    with its shard) in /readyz's data; readiness does not depend on it."""
    if not (Path("/usr/bin/redis-server").exists() or "REDIS_SERVER" in os.environ):
        pytest.skip("redis-server is not installed")
    monkeypatch.delenv("FACESTREAM_CAPTURE_SHARDS", raising=False)
    ids = iter(CAMERA_IDS)
    mine = next(camera_id for camera_id in ids if shard_of(camera_id, 2) == 0)
    theirs = next(camera_id for camera_id in ids if shard_of(camera_id, 2) == 1)
    port = free_port()  # nothing listens there: the camera that starts just waits
    cameras = [
        CameraConfig(id=camera_id, url=f"rtsp://127.0.0.1:{port}/x", open_timeout_seconds=1.0)
        for camera_id in (mine, theirs)
    ]
    config = FaceStreamConfig(
        data_dir=tmp_path / "data", capture=CaptureConfig(cameras=cameras, shard=0, shards=2)
    )
    with run_service(config) as service:
        assert [status.camera_id for status in service.camera_statuses()] == [mine]
        readiness = service.readiness()
        assert readiness.shard.index == 0
        assert readiness.shard.count == 2
        assert readiness.shard.not_assigned == {theirs: 1}
        assert theirs not in readiness.cameras
