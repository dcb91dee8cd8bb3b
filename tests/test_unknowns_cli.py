"""``facestream unknowns list|enroll|delete`` on a real gallery Redis (the embedded one under
the config's data_dir) holding an unknown track of a real face (a pan-and-zoom video of a
shared photo through the service's own path): JSON out, refusals exit 2 with one line and
write nothing, and with unknown faces off every command says so."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from calibration.unknowns import photo_video, video_unknown_tracks
from pipeline.cli.main import app
from pipeline.config.service import load_config
from pipeline.images import decode_image
from pipeline.service.app import open_services
from pipeline.service.unknowns import unknowns_store

PHOTO = "faces/face_recognition/examples/knn_examples/train/biden/biden2.jpg"
runner = CliRunner()


def _config(tmp_path: Path, *, enabled: bool) -> Path:
    path = tmp_path / f"facestream-{enabled}.toml"
    path.write_text(
        f"data_dir = '{tmp_path / 'data'}'\n[liveness]\nenabled = false\n"
        f"[unknowns]\nenabled = {str(enabled).lower()}\n",
        encoding="utf-8",
    )
    return path


def test_unknowns_cli_lists_enrols_deletes_and_refuses(tmp_path: Path, shared_data: Path) -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    config = _config(tmp_path, enabled=True)
    video = tmp_path / "biden.mp4"
    photo_video(decode_image((shared_data / PHOTO).read_bytes()), video, seconds=2.0, seed=5)
    with open_services(load_config(config)) as services:
        (faces, *_) = video_unknown_tracks(
            services.analyzer, services.gallery, video, services.config.recognition
        )
        unknowns_store(services).add("gate", faces)

    listed = runner.invoke(app, ["unknowns", "list", "-c", str(config)])
    assert listed.exit_code == 0, listed.output
    (cluster,) = json.loads(listed.stdout)["clusters"]
    assert cluster["cameras"] == ["gate"]
    assert cluster["thumbnail"] is False
    cluster_id = cluster["cluster_id"]

    missing = runner.invoke(app, ["unknowns", "delete", "0" * 32, "-c", str(config)])
    assert missing.exit_code == 2
    assert "no unknown cluster" in missing.output
    blank = runner.invoke(app, ["unknowns", "enroll", cluster_id, "--name", " ", "-c", str(config)])
    assert blank.exit_code == 2
    assert "non-empty name" in blank.output

    enrolled = runner.invoke(
        app, ["unknowns", "enroll", cluster_id, "--name", "Joe", "-c", str(config)]
    )
    assert enrolled.exit_code == 0, enrolled.output
    identity = json.loads(enrolled.stdout)
    assert identity["name"] == "Joe"
    assert identity["metadata"] == {"unknown_cluster": cluster_id}
    again = runner.invoke(
        app, ["unknowns", "enroll", cluster_id, "--name", "Joe", "-c", str(config)]
    )
    assert again.exit_code == 2
    assert "enrolled already" in again.output
    assert json.loads(runner.invoke(app, ["unknowns", "list", "-c", str(config)]).stdout) == {
        "clusters": []
    }
    deleted = runner.invoke(app, ["unknowns", "delete", cluster_id, "-c", str(config)])
    assert deleted.exit_code == 0, deleted.output

    off = runner.invoke(app, ["unknowns", "list", "-c", str(_config(tmp_path, enabled=False))])
    assert off.exit_code == 2
    assert "[unknowns] enabled = false" in off.output
