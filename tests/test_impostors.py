"""Impostors are rejected: `/v1/verify`, `/v1/identify`, `facestream verify` and `facestream
identify` against real photos of different people (../shared/data/faces), so an implementation
that always matches fails here, and one that never matches fails on the genuine probes.

Each person is enrolled from one photo and probed with another photo of them (genuine) and with
every other person's probe photo (impostors).
"""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from pipeline.cli.main import app
from pipeline.config.service import ApiConfig, FaceStreamConfig
from pipeline.service.service import FaceStreamService, run_service

ServeApi = Callable[[FaceStreamService, str], AbstractContextManager[str]]
TOKEN = "impostor-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# people of different sexes, ages and sources; two photos each, one face per photo
PEOPLE = ("barack_obama", "joe_biden", "kit_harington", "rose_leslie", "alex_lacamoire")


def _photos_by_person(shared_data: Path) -> dict[str, list[Path]]:
    faces = shared_data / "faces"
    with (faces / "labels.csv").open(encoding="utf-8") as file:
        rows = [row for row in csv.DictReader(file) if row["n_faces"] == "1"]
    found: dict[str, list[Path]] = {}
    for row in rows:
        if row["identity"] in PEOPLE and not row["duplicate_of"]:
            found.setdefault(row["identity"], []).append(faces / row["path"])
    missing = [person for person in PEOPLE if len(found.get(person, [])) < 2]
    if missing:
        pytest.skip(f"fewer than two photos of {', '.join(missing)} in {faces}")
    return {person: sorted(paths)[:2] for person, paths in found.items()}


@pytest.fixture(scope="module")
def photos(shared_data: Path) -> dict[str, list[Path]]:
    return _photos_by_person(shared_data)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaceStreamService]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (make install installs it)")
    config = FaceStreamConfig(
        data_dir=tmp_path_factory.mktemp("data"),
        api=ApiConfig(analysis_per_minute=100_000, analysis_burst=1000),
    )
    with run_service(config) as running:
        yield running


@pytest.fixture(scope="module")
def http(service: FaceStreamService, serve_api: ServeApi) -> Iterator[httpx.Client]:
    with serve_api(service, TOKEN) as url, httpx.Client(base_url=url, timeout=60.0) as client:
        yield client


@pytest.fixture(scope="module")
def enrolled(http: httpx.Client, photos: dict[str, list[Path]]) -> dict[str, str]:
    """person -> identity id, each enrolled from their first photo."""
    ids = {}
    for person, (first, _probe) in photos.items():
        files = [("images", (first.name, first.read_bytes(), "image/jpeg"))]
        created = http.post("/v1/identities", data={"name": person}, files=files, headers=AUTH)
        assert created.status_code == 201, created.text
        ids[person] = created.json()["id"]
    return ids


def _verify(http: httpx.Client, probe: Path, identity_id: str) -> dict[str, object]:
    answer = http.post(
        "/v1/verify",
        data={"identity_id": identity_id},
        files={"image": (probe.name, probe.read_bytes(), "image/jpeg")},
        headers=AUTH,
    )
    assert answer.status_code == 200, answer.text
    verdict = answer.json()
    assert isinstance(verdict, dict)
    return verdict


def test_verify_over_http_accepts_the_person_and_rejects_every_impostor(
    http: httpx.Client, photos: dict[str, list[Path]], enrolled: dict[str, str]
) -> None:
    for person, (_first, probe) in photos.items():
        for claimed, identity_id in enrolled.items():
            verdict = _verify(http, probe, identity_id)
            tau = verdict["tau"]
            distance = verdict["distance"]
            assert isinstance(tau, float)
            assert isinstance(distance, float)
            if claimed == person:
                assert verdict["match"] is True, (person, distance)
                assert distance <= tau
            else:
                assert verdict["match"] is False, (person, "claims", claimed, distance)
                assert distance > tau


def test_identify_over_http_names_the_person_and_no_impostor(
    http: httpx.Client, photos: dict[str, list[Path]], enrolled: dict[str, str]
) -> None:
    for person, (_first, probe) in photos.items():
        answer = http.post(
            "/v1/identify",
            data={"top_k": "5"},
            files={"image": (probe.name, probe.read_bytes(), "image/jpeg")},
            headers=AUTH,
        )
        assert answer.status_code == 200, answer.text
        matches = answer.json()["matches"]
        assert [match["identity_id"] for match in matches] == [enrolled[person]], person


def test_an_unknown_face_is_identified_as_nobody(
    http: httpx.Client, photos: dict[str, list[Path]], enrolled: dict[str, str]
) -> None:
    # a gallery without Obama: his probe must match no one, however close the nearest is
    removed = http.delete(f"/v1/identities/{enrolled['barack_obama']}", headers=AUTH)
    assert removed.status_code in (200, 204), removed.text
    probe = photos["barack_obama"][1]
    answer = http.post(
        "/v1/identify",
        files={"image": (probe.name, probe.read_bytes(), "image/jpeg")},
        headers=AUTH,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["matches"] == []


def _last_json(output: str) -> dict[str, object]:
    parsed = json.loads(output.strip().splitlines()[-1])
    assert isinstance(parsed, dict)
    return parsed


def test_the_cli_verifies_and_identifies_with_impostors_rejected(
    tmp_path: Path, photos: dict[str, list[Path]]
) -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (make install installs it)")
    config = tmp_path / "facestream.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n', encoding="utf-8")
    runner = CliRunner()
    ids = {}
    for person in ("joe_biden", "rose_leslie"):
        enrolled = runner.invoke(
            app, ["enroll", person, str(photos[person][0]), "--config", str(config)]
        )
        assert enrolled.exit_code == 0, enrolled.output
        ids[person] = _last_json(enrolled.output)["id"]
    probe = str(photos["joe_biden"][1])
    for claimed, expected in (("joe_biden", True), ("rose_leslie", False)):
        verified = runner.invoke(
            app, ["verify", probe, "--identity", str(ids[claimed]), "--config", str(config)]
        )
        assert verified.exit_code == 0, verified.output
        assert _last_json(verified.output)["match"] is expected, claimed
    impostor = str(photos["kit_harington"][1])
    identified = runner.invoke(app, ["identify", impostor, "--config", str(config)])
    assert identified.exit_code == 0, identified.output
    faces = _last_json(identified.output)["faces"]
    assert isinstance(faces, list)
    assert all(face["matches"] == [] for face in faces), faces
