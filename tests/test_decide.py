"""The door policy: K of N, allow-lists, liveness, unknown faces and anti-passback."""

from __future__ import annotations

import dataclasses

import pytest
from pydantic import ValidationError

from pipeline.access.policy import DoorConfig, DoorPolicy
from pipeline.types import TrackObservation


def _seen(
    identity: str | None,
    *,
    track: int = 1,
    at: float = 0.0,
    live: bool | None = None,
    camera: str = "cam",
) -> TrackObservation:
    return TrackObservation(
        camera_id=camera,
        track_id=track,
        identity_id=identity,
        name=None if identity is None else identity.title(),
        distance=0.4 if identity else 0.8,
        live=live,
        at=at,
    )


def _door(**overrides: object) -> DoorConfig:
    # these tests are about votes, not liveness: the door opts out unless a test says otherwise
    return DoorConfig.model_validate(
        {"id": "front", "cameras": ["cam"], "require_liveness": False, **overrides}
    )


def test_granted_after_k_of_n_matches_once_per_track() -> None:
    """With K=3 of N=5, the third matching encoding grants; later ones add nothing."""
    policy = DoorPolicy([_door(required_matches=3, window_encodings=5)])
    results = [
        policy.observe(_seen(who, at=i))
        for i, who in enumerate(["ann", None, "ann", "bob", "ann", "ann"])
    ]
    assert [len(r) for r in results] == [0, 0, 0, 0, 1, 0]
    decision = results[4][0]
    assert (decision.outcome, decision.identity_id, decision.name, decision.votes) == (
        "granted",
        "ann",
        "Ann",
        3,
    )
    assert decision.distance == pytest.approx(0.4)


def test_inconsistent_track_is_never_decided() -> None:
    """Alternating identities never reach K in the window: no decision at all."""
    policy = DoorPolicy([_door(required_matches=3, window_encodings=4)])
    decisions = [policy.observe(_seen(who, at=i)) for i, who in enumerate(["a", "b"] * 6)]
    assert not any(decisions)


def test_not_allowed_identity_is_denied() -> None:
    """An identity missing from a non-empty allow-list is denied."""
    policy = DoorPolicy([_door(required_matches=1, allowed_identities=["ann"])])
    assert policy.observe(_seen("bob"))[0].outcome == "denied"
    assert policy.observe(_seen("ann", track=2))[0].outcome == "granted"


def test_unknown_faces_are_reported_as_unknown() -> None:
    """K encodings matching nobody give one 'unknown' decision without an identity."""
    policy = DoorPolicy([_door(required_matches=2)])
    assert policy.observe(_seen(None)) == []
    (decision,) = policy.observe(_seen(None, at=1))
    assert (decision.outcome, decision.identity_id) == ("unknown", None)


def test_liveness_required_waits_then_grants_or_flags_spoof() -> None:
    """With liveness required: undecided liveness waits, live grants, not-live is a spoof."""
    policy = DoorPolicy([_door(required_matches=1, require_liveness=True)])
    assert policy.observe(_seen("ann", live=None)) == []
    assert policy.observe(_seen("ann", live=True, at=1))[0].outcome == "granted"
    assert policy.observe(_seen("ann", track=2, live=False, at=100))[0].outcome == (
        "spoof_suspected"
    )


def test_anti_passback_suppresses_a_second_grant_within_cooldown() -> None:
    """The same identity on a new track within cooldown_seconds is not granted again; after
    the cooldown it is."""
    policy = DoorPolicy([_door(required_matches=1, cooldown_seconds=10)])
    assert policy.observe(_seen("ann", track=1, at=0))[0].outcome == "granted"
    assert policy.observe(_seen("ann", track=2, at=5)) == []
    assert policy.observe(_seen("ann", track=3, at=11))[0].outcome == "granted"


def test_only_doors_watching_the_camera_decide() -> None:
    """A door decides only for its own cameras; two doors on one camera decide separately."""
    policy = DoorPolicy(
        [
            DoorConfig(id="front", cameras=["cam"], required_matches=1, require_liveness=False),
            DoorConfig(
                id="garage", cameras=["cam", "side"], required_matches=1, require_liveness=False
            ),
            DoorConfig(id="back", cameras=["rear"], required_matches=1, require_liveness=False),
        ]
    )
    assert sorted(d.door_id for d in policy.observe(_seen("ann"))) == ["front", "garage"]


def test_ended_track_starts_afresh() -> None:
    """After end_track, the same track id (reused) needs K new matches again."""
    policy = DoorPolicy([_door(required_matches=2, cooldown_seconds=0)])
    policy.observe(_seen("ann", at=0))
    assert policy.observe(_seen("ann", at=1))[0].outcome == "granted"
    policy.end_track("cam", 1)
    assert policy.observe(_seen("ann", at=2)) == []
    assert policy.observe(_seen("ann", at=3))[0].outcome == "granted"


def test_a_camera_that_went_away_leaves_no_votes() -> None:
    """end_camera drops every track of that camera (a tracker made anew reuses track ids),
    and only that camera's."""
    policy = DoorPolicy([_door(required_matches=2, cameras=["cam", "side"])])
    assert policy.observe(_seen("ann", at=0)) == []
    assert policy.observe(_seen("bob", at=0, camera="side")) == []
    policy.end_camera("cam")
    assert policy.observe(_seen("ann", at=1)) == []  # one fresh vote, not two
    assert policy.observe(_seen("bob", at=1, camera="side"))[0].outcome == "granted"


def test_track_never_ended_is_forgotten_after_a_while() -> None:
    """A track whose end is never reported (a detector flicker too short to report) is dropped
    after forget_after_seconds: its votes do not count for a later track with the same key."""
    policy = DoorPolicy([_door(required_matches=2, cooldown_seconds=0)], forget_after_seconds=10)
    assert policy.observe(_seen("ann", at=0)) == []
    assert policy.observe(_seen("bob", track=2, at=11)) == []  # another track sweeps the stale
    assert policy.observe(_seen("ann", at=12)) == []  # one fresh vote, not two
    assert policy.observe(_seen("ann", at=13))[0].outcome == "granted"


def test_k_larger_than_n_is_a_config_error() -> None:
    """required_matches above window_encodings can never be met: refused at load."""
    with pytest.raises(ValidationError, match="required_matches"):
        _door(required_matches=6, window_encodings=5)


def test_a_door_requires_liveness_unless_it_opts_out() -> None:
    """The default door waits for a live verdict (an undecided track is not granted, a spoof is
    refused); a door that opts out grants without one and says so in its decision."""
    secure = DoorPolicy([DoorConfig(id="front", cameras=["cam"], required_matches=1)])
    assert secure.observe(_seen("ann", live=None)) == []
    (refused,) = secure.observe(_seen("ann", track=2, live=False))
    assert refused.outcome == "spoof_suspected"
    assert refused.liveness_required is True
    (granted,) = secure.observe(_seen("ann", track=3, live=True))
    assert granted.outcome == "granted"
    opted_out = DoorPolicy([_door(required_matches=1)])
    (unchecked,) = opted_out.observe(_seen("ann", live=None))
    assert unchecked.outcome == "granted"
    assert unchecked.liveness_required is False


def test_a_match_beyond_the_doors_distance_does_not_vote() -> None:
    """A door stricter than the gallery's tau: matches past its max_match_distance neither
    grant nor count as unknown (the track waits); nearer ones grant; a track's own distance
    counts when the track named the identity."""
    policy = DoorPolicy([_door(required_matches=2, window_encodings=3, max_match_distance=0.45)])
    far = dataclasses.replace(_seen("ann"), distance=0.52)
    assert [policy.observe(dataclasses.replace(far, at=i)) for i in range(4)] == [[]] * 4
    near = dataclasses.replace(_seen("ann", track=2), distance=0.41)
    assert policy.observe(near) == []
    (decision,) = policy.observe(dataclasses.replace(near, at=1.0))
    assert (decision.outcome, decision.identity_id) == ("granted", "ann")
    by_track = dataclasses.replace(_seen("bob", track=3), distance=0.58, track_distance=0.44)
    assert policy.observe(by_track) == []
    (decision,) = policy.observe(dataclasses.replace(by_track, at=1.0))
    assert decision.identity_id == "bob"
    with pytest.raises(ValidationError):
        _door(max_match_distance=0.0)
