"""Card + face doors: a card selects the identity holding it, and only that person's live face
within the window grants. Another enrolled person's face, a spoof, no face in time and an
unknown card each refuse, with the reason in the decision. Also the config errors of card and
OSDP doors (each names its key)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import numpy as np
import numpy.typing as npt
import pytest
from live_support import enrol_sample
from pydantic import ValidationError
from waiting import wait_until

from engines.errors import ConfigError
from pipeline.access.policy import DoorConfig, DoorPolicy, PresentedCredential
from pipeline.capture import CameraConfig
from pipeline.config.service import FaceStreamConfig
from pipeline.images import decode_image
from pipeline.liveness import LivenessConfig
from pipeline.service.app import open_services
from pipeline.service.sample import make_sample
from pipeline.service.service import FaceStreamService, run_service
from pipeline.types import Decision, TrackObservation

WINDOW = 10.0
TOKEN = "card-and-face-test-token-0123456789"
ServeApi = Callable[[FaceStreamService, str], AbstractContextManager[str]]


def _seen(
    identity: str | None, *, at: float, live: bool | None = True, track: int = 1
) -> TrackObservation:
    return TrackObservation(
        camera_id="cam",
        track_id=track,
        identity_id=identity,
        name=None if identity is None else identity.title(),
        distance=0.4 if identity else 0.8,
        live=live,
        at=at,
    )


def _policy(**overrides: object) -> DoorPolicy:
    door = DoorConfig.model_validate(
        {
            "id": "front",
            "cameras": ["cam"],
            "mode": "card_and_face",
            "require_liveness": True,
            "required_matches": 2,
            "window_encodings": 3,
            "credential_window_seconds": WINDOW,
            **overrides,
        }
    )
    return DoorPolicy([door])


def _card(holder: str | None, at: float = 100.0) -> PresentedCredential:
    return PresentedCredential(card_number=4242, identity_id=holder, source="api", at=at)


def _feed(
    policy: DoorPolicy, identity: str | None, *, start: float, live: bool | None = True
) -> list[Decision]:
    decisions: list[Decision] = []
    for step in range(3):
        decisions += policy.observe(_seen(identity, at=start + step * 0.2, live=live))
    return decisions


def test_the_card_holders_live_face_within_the_window_grants() -> None:
    policy = _policy()
    assert policy.present_credential("front", _card("alice")) is None
    decisions = _feed(policy, "alice", start=101.0)
    assert [(d.outcome, d.identity_id, d.reason, d.card_number) for d in decisions] == [
        ("granted", "alice", None, 4242)
    ]


def test_a_face_alone_opens_nothing_at_a_card_and_face_door() -> None:
    assert _feed(_policy(), "alice", start=101.0) == []


def test_another_enrolled_persons_face_is_refused_as_a_mismatch() -> None:
    policy = _policy()
    policy.present_credential("front", _card("alice"))
    decisions = _feed(policy, "bob", start=101.0)
    assert [(d.outcome, d.identity_id, d.reason) for d in decisions] == [
        ("denied", "bob", "face_mismatch")
    ]
    # one card, one decision: alice arriving afterwards needs a new card read
    assert _feed(policy, "alice", start=102.0) == []


def test_a_spoofed_face_of_the_holder_is_refused_as_a_spoof() -> None:
    policy = _policy()
    policy.present_credential("front", _card("alice"))
    decisions = _feed(policy, "alice", start=101.0, live=False)
    assert [(d.outcome, d.reason) for d in decisions] == [("spoof_suspected", "spoof")]


def test_no_face_within_the_window_is_refused_as_a_timeout() -> None:
    policy = _policy()
    policy.present_credential("front", _card("alice", at=100.0))
    assert policy.expire(100.0 + WINDOW - 0.1) == []
    decisions = policy.expire(100.0 + WINDOW + 0.1)
    assert [(d.outcome, d.identity_id, d.reason) for d in decisions] == [
        ("denied", "alice", "no_face_in_time")
    ]
    assert _feed(policy, "alice", start=100.0 + WINDOW + 1) == [], "the card has expired"


def test_the_holders_face_after_the_window_is_refused_not_granted() -> None:
    policy = _policy()
    policy.present_credential("front", _card("alice", at=100.0))
    decisions = _feed(policy, "alice", start=100.0 + WINDOW + 1)
    assert [(d.outcome, d.reason) for d in decisions] == [("denied", "no_face_in_time")]


def test_an_unknown_card_is_refused_at_once() -> None:
    decision = _policy().present_credential("front", _card(None))
    assert decision is not None
    assert (decision.outcome, decision.reason, decision.card_number) == (
        "denied",
        "unknown_card",
        4242,
    )


def test_liveness_undecided_waits_within_the_window() -> None:
    policy = _policy()
    policy.present_credential("front", _card("alice"))
    assert _feed(policy, "alice", start=101.0, live=None) == []
    decisions = policy.observe(_seen("alice", at=102.0, live=True))
    assert [d.outcome for d in decisions] == ["granted"]


def test_a_face_door_ignores_cards() -> None:
    policy = DoorPolicy([DoorConfig(id="front", cameras=["cam"])])
    with pytest.raises(ConfigError, match="no card_and_face door"):
        policy.present_credential("front", _card("alice"))


def test_card_and_face_requires_liveness() -> None:
    with pytest.raises(ValidationError, match="require_liveness"):
        DoorConfig.model_validate(
            {"id": "d", "cameras": ["c"], "mode": "card_and_face", "require_liveness": False}
        )


def test_a_pd_address_clash_between_doors_is_a_config_error_naming_the_key() -> None:
    osdp = {"channel": {"tcp": "10.0.0.5:4001"}, "address": 3, "scbk_env": "DOOR_KEY"}
    with pytest.raises(ValidationError) as caught:
        FaceStreamConfig.model_validate(
            {
                "doors": [
                    {"id": "front", "cameras": ["a"], "osdp": osdp},
                    {"id": "back", "cameras": ["b"], "osdp": osdp},
                ]
            }
        )
    assert (
        "doors.1.osdp.address: PD address 3 on tcp:10.0.0.5:4001 is already used by "
        "doors.0.osdp.address" in str(caught.value)
    )
    other_bus = {**osdp, "channel": {"tcp": "10.0.0.6:4001"}}
    FaceStreamConfig.model_validate(
        {
            "doors": [
                {"id": "front", "cameras": ["a"], "osdp": osdp},
                {"id": "back", "cameras": ["b"], "osdp": other_bus},
            ]
        }
    )


def test_an_unknown_serial_device_in_a_door_is_a_config_error_naming_the_key() -> None:
    with pytest.raises(ValidationError) as caught:
        FaceStreamConfig.model_validate(
            {
                "doors": [
                    {
                        "id": "front",
                        "cameras": ["a"],
                        "osdp": {
                            "channel": {"serial_device": "/dev/ttyUSB-not-there"},
                            "scbk_env": "DOOR_KEY",
                        },
                    }
                ]
            }
        )
    assert "doors.0.osdp.channel.serial_device" in str(caught.value)
    assert "no such serial device" in str(caught.value)


# ---- with real faces: the encoder, the gallery and the policy, no stand-in ----

_PEOPLE = {
    "barack_obama": ("knn_examples/train/obama/obama.jpg", "obama-480p.jpg"),
    "joe_biden": ("knn_examples/train/biden/biden2.jpg", "biden.jpg"),
}


def _rgb(path: Path) -> npt.NDArray[np.uint8]:
    return decode_image(path.read_bytes())


@pytest.mark.timeout(240)
def test_real_faces_grant_the_card_holder_and_refuse_another_enrolled_person(
    tmp_path: Path, shared_data: Path
) -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    examples = shared_data / "faces" / "face_recognition" / "examples"
    with open_services(FaceStreamConfig(data_dir=tmp_path / "data")) as services:
        ids = {}
        for name, (enrolment, _) in _PEOPLE.items():
            found = services.enrolment_templates([(enrolment, _rgb(examples / enrolment))])
            assert not found.rejected, found.rejected
            ids[name] = services.enroll(name, found.templates).identity_id
        tau = services.config.recognition.match.max_distance

        def observed(name: str, at: float) -> TrackObservation:
            probe = services.analyzer.analyze(_rgb(examples / _PEOPLE[name][1]))
            assert len(probe), f"no face found in {_PEOPLE[name][1]}"
            # the largest face comes first
            best = services.gallery.identify(probe.embeddings, max_distance=tau).best()[0]
            return TrackObservation(
                camera_id="cam",
                track_id=int(at),
                identity_id=None if best is None else best.identity_id,
                name=None if best is None else best.name,
                distance=None if best is None else best.distance,
                live=True,  # the liveness verdict is the policy tests' business above
                at=at,
            )

        obama_face, biden_face = observed("barack_obama", 101.0), observed("joe_biden", 201.0)

    assert obama_face.identity_id == ids["barack_obama"], "the encoder must know the holder"
    assert biden_face.identity_id == ids["joe_biden"]
    policy = _policy(required_matches=1, window_encodings=1)
    policy.present_credential("front", _card(ids["barack_obama"], at=100.0))
    [granted] = policy.observe(obama_face)
    assert (granted.outcome, granted.identity_id, granted.reason) == (
        "granted",
        ids["barack_obama"],
        None,
    )
    policy.present_credential("front", _card(ids["barack_obama"], at=200.0))
    [refused] = policy.observe(biden_face)
    assert (refused.outcome, refused.identity_id, refused.reason) == (
        "denied",
        ids["joe_biden"],
        "face_mismatch",
    )


@pytest.mark.timeout(240)
def test_a_moving_photo_of_the_card_holder_never_opens_the_door(
    tmp_path: Path, serve_api: ServeApi
) -> None:
    """The sample video is a printed photo moved in front of the camera: with the holder's card
    shown through the API, the door refuses (spoof, or no live face in time), never grants."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    sample = make_sample(tmp_path / "sample", seconds=4.0)
    door = DoorConfig(
        id="lab",
        cameras=["front"],
        mode="card_and_face",
        require_liveness=True,
        required_matches=2,
        window_encodings=3,
        credential_window_seconds=15.0,
    )
    config = FaceStreamConfig(
        data_dir=tmp_path / "data", liveness=LivenessConfig(enabled=True), doors=[door]
    )
    with run_service(config) as service:
        identity = enrol_sample(service.services, sample)
        service.credentials.set(identity.identity_id, 4242)
        service.add_camera(
            CameraConfig(id="front", url=str(sample.video), loop=True, realtime=True)
        )
        with (
            serve_api(service, TOKEN) as url,
            httpx.Client(
                base_url=url, timeout=30.0, headers={"Authorization": f"Bearer {TOKEN}"}
            ) as http,
        ):
            unknown = http.post("/v1/doors/lab/credential", json={"card_number": 9999})
            assert unknown.json() == {
                "door_id": "lab",
                "status": "refused",
                "reason": "unknown_card",
            }
            shown = http.post("/v1/doors/lab/credential", json={"card_number": 4242})
            assert shown.json()["status"] == "waiting_for_face"
        wait_until(
            lambda: (
                len(service.bus.recent(100, kind="decision")) >= 2
                or bool(service.bus.recent(100, kind="spoof_suspected"))
            ),
            45.0,
            "the card's decision",
        )
        decided = service.bus.recent(100, kind="decision") + service.bus.recent(
            100, kind="spoof_suspected"
        )
    outcomes = sorted((str(e.payload["outcome"]), str(e.payload["reason"])) for e in decided)
    assert ("denied", "unknown_card") in outcomes
    assert all(outcome != "granted" for outcome, _ in outcomes), outcomes
    card_refusals = [reason for _, reason in outcomes if reason != "unknown_card"]
    assert card_refusals, outcomes
    assert set(card_refusals) <= {"spoof", "no_face_in_time"}, outcomes
