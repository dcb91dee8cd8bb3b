"""Gallery commands and offline processing through the `facestream` command, end to end:
real encoder, real embedded redis-server, real video."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli.main import app

runner = CliRunner()
EXAMPLES = Path("faces") / "face_recognition" / "examples"


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    """A config whose data dir (models, embedded Redis) is private to the test."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    path = tmp_path / "facestream.toml"
    path.write_text(f"data_dir = '{tmp_path / 'data'}'\n")
    return path


def _last_json(output: str) -> object:
    return json.loads(output.strip().splitlines()[-1])


def test_process_names_the_person_in_the_clip(
    shared_data: Path, tmp_path: Path, config_file: Path
) -> None:
    """short_hamilton_clip.mp4 with a gallery folder holding Lin-Manuel Miranda: the summary
    counts every frame and names him on at least one track; unknown tracks have identity null."""
    gallery = tmp_path / "gallery"
    for name, photo in [
        ("lin_manuel_miranda", "lin-manuel-miranda.png"),
        ("barack_obama", "obama.jpg"),
    ]:
        (gallery / name).mkdir(parents=True)
        shutil.copy(shared_data / EXAMPLES / photo, gallery / name / photo)
    video = shared_data / "video" / "faces" / "short_hamilton_clip.mp4"
    result = runner.invoke(
        app,
        [
            "process",
            str(video),
            "--gallery",
            str(gallery),
            "--json",
            "--detect-every",
            "3",
            "--config",
            str(config_file),
        ],
    )
    assert result.exit_code == 0, result.output
    summary = _last_json(result.output)
    assert isinstance(summary, dict)
    assert summary["frames"] == 275
    assert summary["fps"] > 0
    identities = {track["identity"] for track in summary["tracks"]}
    assert "lin_manuel_miranda" in identities
    assert "barack_obama" not in identities
    for track in summary["tracks"]:
        assert track["first_frame"] <= track["last_frame"]
        assert set(track) == {
            "track_id",
            "identity",
            "identity_id",
            "distance",
            "first_frame",
            "last_frame",
            "live",
        }


def test_enroll_identify_remove(shared_data: Path, config_file: Path) -> None:
    """Enrol Obama from one photo, find him in another photo, remove him, find nobody."""
    examples = shared_data / EXAMPLES
    enrolled = runner.invoke(
        app,
        [
            "enroll",
            "Barack Obama",
            str(examples / "obama.jpg"),
            "--id",
            "obama",
            "--config",
            str(config_file),
        ],
    )
    assert enrolled.exit_code == 0, enrolled.output
    identity = _last_json(enrolled.output)
    assert isinstance(identity, dict)
    assert identity["id"] == "obama"
    assert identity["name"] == "Barack Obama"
    found = runner.invoke(
        app, ["identify", str(examples / "obama2.jpg"), "--config", str(config_file)]
    )
    assert found.exit_code == 0, found.output
    faces = _last_json(found.output)["faces"]  # type: ignore[index]
    assert faces[0]["matches"][0]["identity_id"] == "obama"
    assert faces[0]["matches"][0]["distance"] < 0.6
    removed = runner.invoke(app, ["identities", "remove", "obama", "--config", str(config_file)])
    assert removed.exit_code == 0, removed.output
    listed = runner.invoke(app, ["identities", "list", "--config", str(config_file)])
    assert _last_json(listed.output) == []


def test_enroll_refuses_photo_without_face(shared_data: Path, config_file: Path) -> None:
    """A photo of dogs cannot be enrolled: exit 2 and the reason, nothing stored."""
    dogs = shared_data / "faces" / "dlib_faces" / "dogs.jpg"
    result = runner.invoke(app, ["enroll", "Rex", str(dogs), "--config", str(config_file)])
    assert result.exit_code == 2
    assert "no face" in result.output
    listed = runner.invoke(app, ["identities", "list", "--config", str(config_file)])
    assert _last_json(listed.output) == []


def test_process_refuses_a_file_that_is_not_video(tmp_path: Path, config_file: Path) -> None:
    """A text file given as recording is one error line, exit 2."""
    bogus = tmp_path / "clip.mp4"
    bogus.write_text("not a video")
    result = runner.invoke(app, ["process", str(bogus), "--config", str(config_file)])
    assert result.exit_code == 2
    assert "clip.mp4" in result.output


def test_sample_demo_names_the_astronaut(tmp_path: Path, config_file: Path) -> None:
    """`facestream sample` + `process` (what `make run` does) needs no shared data: the
    public-domain astronaut is enrolled from her photo and named on the moving video."""
    made = runner.invoke(app, ["sample", str(tmp_path / "sample")])
    assert made.exit_code == 0, made.output
    files = _last_json(made.output)
    assert isinstance(files, dict)
    result = runner.invoke(
        app,
        ["process", files["video"], "--gallery", files["gallery"], "--config", str(config_file)],
    )
    assert result.exit_code == 0, result.output
    summary = _last_json(result.output)
    assert isinstance(summary, dict)
    assert summary["frames"] == 150
    named = [track for track in summary["tracks"] if track["identity"] == "eileen_collins"]
    assert named
    assert named[0]["distance"] < 0.6


def test_enroll_group_photo_needs_a_face_index(shared_data: Path, config_file: Path) -> None:
    """A photo with several faces is refused with the count, and accepted with --face-index."""
    group = shared_data / "faces" / "dlib_faces" / "bald_guys.jpg"
    refused = runner.invoke(app, ["enroll", "Someone", str(group), "--config", str(config_file)])
    assert refused.exit_code == 2
    assert "faces found; pick one with face_index" in refused.output
    chosen = runner.invoke(
        app, ["enroll", "Someone", str(group), "--face-index", "0", "--config", str(config_file)]
    )
    assert chosen.exit_code == 0, chosen.output
    identity = _last_json(chosen.output)
    assert isinstance(identity, dict)
    assert identity["name"] == "Someone"


def test_enrolling_the_same_photo_twice_is_a_duplicate(
    shared_data: Path, config_file: Path
) -> None:
    """A photo already enrolled (under any identity) is refused as a duplicate, naming who."""
    photo = shared_data / EXAMPLES / "biden.jpg"
    first = runner.invoke(
        app, ["enroll", "Joe Biden", str(photo), "--id", "biden", "--config", str(config_file)]
    )
    assert first.exit_code == 0, first.output
    again = runner.invoke(app, ["enroll", "Joe B", str(photo), "--config", str(config_file)])
    assert again.exit_code == 2
    assert "already in the gallery (duplicate)" in again.output
    assert "biden" in again.output


def test_galleries_enroll_into_a_gallery_and_change_it_by_cli(
    shared_data: Path, config_file: Path
) -> None:
    """``enroll --gallery staff``: searching visitors finds nobody; ``identities galleries``
    adds visitors, after which it does. A bad gallery name exits 2 naming it, changing nothing."""
    examples = shared_data / EXAMPLES
    configured = ["--config", str(config_file)]
    enrolled = runner.invoke(
        app,
        [
            *("enroll", "Barack Obama", str(examples / "obama.jpg")),
            *("--id", "obama", "--gallery", "staff", *configured),
        ],
    )
    assert enrolled.exit_code == 0, enrolled.output
    assert _last_json(enrolled.output)["galleries"] == ["staff"]  # type: ignore[index]

    def found_in_visitors() -> list[str]:
        found = runner.invoke(
            app, ["identify", str(examples / "obama2.jpg"), "--gallery", "visitors", *configured]
        )
        assert found.exit_code == 0, found.output
        faces = _last_json(found.output)["faces"]  # type: ignore[index]
        return [match["identity_id"] for match in faces[0]["matches"]]

    assert found_in_visitors() == []
    refused = runner.invoke(
        app, ["identities", "galleries", "obama", "--gallery", "bad name", *configured]
    )
    assert refused.exit_code == 2
    assert "'bad name'" in refused.output
    moved = runner.invoke(
        app,
        [
            *("identities", "galleries", "obama"),
            *("--gallery", "visitors", "--gallery", "staff", *configured),
        ],
    )
    assert moved.exit_code == 0, moved.output
    assert _last_json(moved.output)["galleries"] == ["staff", "visitors"]  # type: ignore[index]
    assert found_in_visitors() == ["obama"]
