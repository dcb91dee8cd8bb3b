"""``facestream eval doors``: real videos through the live door chain (real models, a real
embedded Redis, the shared videos), and bad input refused with exit status 2 before any model
loads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from calibration.errors import DoorEvalError
from engines.errors import FaceStreamError
from pipeline.cli.main import app

REPO = Path(__file__).resolve().parents[1]
MANIFEST = REPO / "deploy" / "examples" / "eval_doors.toml"
HAMILTON = Path("video/faces/short_hamilton_clip.mp4")
MIRANDA = Path("faces/face_recognition/examples/lin-manuel-miranda.png")


def _gallery(root: Path, shared_data: Path) -> Path:
    """DIR/lin_manuel_miranda/miranda.png from the shared photo."""
    folder = root / "gallery" / "lin_manuel_miranda"
    folder.mkdir(parents=True)
    shutil.copyfile(shared_data / MIRANDA, folder / "miranda.png")
    return root / "gallery"


def _config(root: Path) -> Path:
    """A config with the shipped defaults but a private data_dir."""
    path = root / "facestream.toml"
    path.write_text(f'data_dir = "{root / "data"}"\n', encoding="utf-8")
    return path


def test_door_eval_error_is_a_project_error_and_a_value_error() -> None:
    assert issubclass(DoorEvalError, FaceStreamError)
    assert issubclass(DoorEvalError, ValueError)


def test_an_empty_gallery_exits_2(tmp_path: Path) -> None:
    (tmp_path / "gallery" / "nobody").mkdir(parents=True)  # a folder without photos
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"")
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "doors",
            "--video",
            str(video),
            "--gallery",
            str(tmp_path / "gallery"),
            "--expect",
            "",
            "--config",
            str(_config(tmp_path)),
        ],
    )
    assert result.exit_code == 2
    assert "gallery has no identity" in result.output


def test_an_unknown_expected_name_exits_2(tmp_path: Path, shared_data: Path) -> None:
    gallery = _gallery(tmp_path, shared_data)
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "doors",
            "--video",
            str(shared_data / HAMILTON),
            "--gallery",
            str(gallery),
            "--expect",
            "lin_manuel_miranda,somebody_else",
            "--config",
            str(_config(tmp_path)),
        ],
    )
    assert result.exit_code == 2
    assert "somebody_else not in the gallery" in result.output


def test_a_video_that_does_not_decode_exits_2(tmp_path: Path, shared_data: Path) -> None:
    gallery = _gallery(tmp_path, shared_data)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video" * 40)
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "doors",
            "--video",
            str(broken),
            "--gallery",
            str(gallery),
            "--expect",
            "lin_manuel_miranda",
            "--config",
            str(_config(tmp_path)),
        ],
    )
    assert result.exit_code == 2
    assert "broken.mp4: not a video that decodes" in result.output


@pytest.mark.slow
def test_the_example_manifest_over_the_shared_videos_grants_nobody_unexpected(
    tmp_path: Path, shared_data: Path
) -> None:
    """The shipped manifest (deploy/examples/eval_doors.toml) at the shipped door defaults:
    no false grant in either video, and the JSON last line has the fixed keys."""
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "doors",
            "--manifest",
            str(MANIFEST),
            "--data",
            str(shared_data),
            "--json",
            "--config",
            str(_config(tmp_path)),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert report["false_grants"] == 0
    assert set(report["granted"]) <= {"lin_manuel_miranda"}
    assert report["missed_grants"] == 1 - len(set(report["granted"]))
    assert isinstance(report["spoof_refusals"], int)
    assert report["median_time_to_decision_s"] is None or report["median_time_to_decision_s"] >= 0
    videos = report["videos"]
    assert [Path(video["video"]).name for video in videos] == [
        "short_hamilton_clip.mp4",
        "facenet_pytorch_crowd_walk.mp4",
    ]
    assert videos[1]["granted"] == []  # strangers only: nobody is let in
    assert "video" in result.output.splitlines()[0]  # the table comes first
