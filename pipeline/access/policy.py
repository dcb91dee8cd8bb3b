"""Door decisions: turn a track's consistent, live matches into one decision per track.

A door watches some cameras. For each face track it keeps the last ``window_encodings``
results (an identity id, or None for no match within tau); when ``required_matches`` of them
name the same identity the door decides, once per track:

* ``granted``: the identity is on the door's allow-list (or the list is empty: everyone
  enrolled) and, when the door requires liveness, the track was judged live;
* ``denied``: the identity is not allowed at this door;
* ``spoof_suspected``: liveness is required and the track was judged not live;
* ``unknown``: ``required_matches`` encodings matched nobody.

Quality gate: an encoding votes only when its face's ``Quality`` passes the door's minimums
(``min_interocular_px``, ``min_sharpness``, ``max_yaw``, ``max_roll_degrees``,
``min_detector_score``, ``max_clipped_fraction``); a poorer face is not added to the track's
window, so a track of poor faces stays undecided (never a grant, never ``unknown``).

Anti-passback: after a grant, the same identity is not granted again at the same door for
``cooldown_seconds`` (a second grant within that time is suppressed, not denied).

Card + face doors (``mode = "card_and_face"``): a face alone decides nothing. A credential
(``present_credential``: a card from a polled reader, or the API) names the identity holding
it; the next track on the door's cameras whose window names an identity (K of N) within
``credential_window_seconds`` decides: the holder, judged live, is granted; anyone else's face
or an unknown face is denied (``face_mismatch``); a face judged a spoof is ``spoof_suspected``
(``spoof``); no deciding face in time is denied (``no_face_in_time``, from ``expire``); an
unknown card is denied at once (``unknown_card``). The window's match is the gallery's nearest
identity within tau, so a grant means the face verifies 1:1 against the holder within tau and
no one else is nearer. One credential, one decision: a refusal needs a new card read.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Literal

from pydantic import Field, model_validator

from engines.errors import ConfigError
from pipeline.access.credentials.config import OsdpCardReaderConfig, OsdpReaderConfig
from pipeline.config.base import StrictModel
from pipeline.gallery.model import DEFAULT_GALLERY, GALLERY_NAME
from pipeline.types import Decision, DecisionOutcome, Quality, TrackObservation

__all__ = [
    "DoorConfig",
    "DoorMode",
    "DoorPolicy",
    "PresentedCredential",
    "passes_quality",
    "within_door_distance",
]

DoorMode = Literal["face", "card_and_face"]

# the quality gate's defaults (docs/calibration.md, "Face quality gate")
MIN_INTEROCULAR_PX = 20.0
MIN_SHARPNESS = 10.0
MAX_YAW = 0.35
MAX_ROLL_DEGREES = 30.0
MIN_DETECTOR_SCORE = 0.5
MAX_CLIPPED_FRACTION = 0.5


class DoorConfig(StrictModel):
    """One door (or zone): the cameras that watch it and who may pass."""

    id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="door name, in events")
    cameras: list[str] = Field(min_length=1, max_length=64, description="camera ids watching it")
    galleries: list[Annotated[str, Field(pattern=GALLERY_NAME)]] = Field(
        default_factory=lambda: [DEFAULT_GALLERY],
        min_length=1,
        max_length=64,
        description="the named galleries this door searches: a match counts here only when "
        "the identity is in one of them (1-64 of A-Z a-z 0-9 _ . - each); a camera watched by "
        "several doors searches the union of theirs",
    )
    allowed_identities: list[str] = Field(
        default_factory=list,
        max_length=100_000,
        description="identity ids allowed through; empty allows every enrolled identity",
    )
    required_matches: int = Field(
        default=3, ge=1, le=100, description="K: encodings that must name the same identity"
    )
    window_encodings: int = Field(
        default=5, ge=1, le=100, description="N: the last N encodings of a track are considered"
    )
    require_liveness: bool = Field(
        default=True,
        description="grant only tracks judged live (needs liveness.enabled); false lets a "
        "printed photo or a phone replay of an enrolled face in: it is logged as a warning at "
        "start, shown in /healthz and check-config, and every decision event says "
        '"liveness_required": false',
    )
    min_interocular_px: float = Field(
        default=MIN_INTEROCULAR_PX,
        ge=0.0,
        le=1000.0,
        description="quality gate: an encoding votes only when the eyes are at least this many "
        "pixels apart (small faces are where false accepts come from, docs/calibration.md); "
        "a track whose faces all fail stays undecided",
    )
    min_sharpness: float = Field(
        default=MIN_SHARPNESS,
        ge=0.0,
        le=100_000.0,
        description="quality gate: variance of the Laplacian of the aligned chip below which an "
        "encoding does not vote (blur)",
    )
    max_yaw: float = Field(
        default=MAX_YAW,
        gt=0.0,
        le=1.0,
        description="quality gate: the nose's offset from the eyes' midpoint over the eye "
        "distance above which a face is too turned to vote (0 frontal, ~0.5 in profile)",
    )
    max_roll_degrees: float = Field(
        default=MAX_ROLL_DEGREES,
        gt=0.0,
        le=90.0,
        description="quality gate: tilt of the eye line above which a face does not vote",
    )
    min_detector_score: float = Field(
        default=MIN_DETECTOR_SCORE,
        ge=0.0,
        le=1.0,
        description="quality gate: detector confidence below which a face does not vote",
    )
    max_clipped_fraction: float = Field(
        default=MAX_CLIPPED_FRACTION,
        gt=0.0,
        le=1.0,
        description="quality gate: share of the chip's pixels clipped to black or white above "
        "which a face is too badly exposed to vote",
    )
    max_match_distance: float | None = Field(
        default=None,
        gt=0.0,
        le=2.0,
        description="a match votes here only within this distance (the track's mean distance "
        "when the track named the identity); none: the service's tau. A door can be stricter "
        "than the gallery: at 0.55 the shared pairs' false accepts fall from 0.19 % to 0.06 % and "
        "false rejects rise from 0.5 % to 1.5 % (docs/calibration.md); a farther match leaves the "
        "track undecided, never unknown",
    )
    cooldown_seconds: float = Field(
        default=10.0, ge=0.0, le=86_400.0, description="anti-passback: no second grant sooner"
    )
    mode: DoorMode = Field(
        default="face",
        description="face: a recognised face decides; card_and_face: a credential (card) "
        "selects the identity and only that person's live face within "
        "credential_window_seconds grants",
    )
    credential_window_seconds: float = Field(
        default=10.0,
        gt=0.0,
        le=300.0,
        description="card_and_face: how long a card waits for its holder's face",
    )
    osdp: OsdpReaderConfig | None = Field(
        default=None,
        description="facestream as an OSDP reader on the door's panel: a grant is sent as a "
        "card read of the identity's card number",
    )
    card_reader: OsdpCardReaderConfig | None = Field(
        default=None,
        description="card_and_face: an OSDP card reader facestream polls for credentials",
    )

    @model_validator(mode="after")
    def _k_within_n(self) -> DoorConfig:
        if self.required_matches > self.window_encodings:
            raise ValueError("required_matches (K) cannot exceed window_encodings (N)")
        return self

    @model_validator(mode="after")
    def _two_factor_needs_liveness(self) -> DoorConfig:
        if self.mode == "card_and_face" and not self.require_liveness:
            raise ValueError("mode card_and_face grants only live faces: set require_liveness")
        if self.card_reader is not None and self.mode != "card_and_face":
            raise ValueError("card_reader is for mode = 'card_and_face' doors")
        return self


@dataclass(frozen=True, slots=True)
class PresentedCredential:
    """A card shown at a card + face door: its number, the identity holding it (None: an
    unknown card), where it came from (osdp, api) and when (unix seconds)."""

    card_number: int
    identity_id: str | None
    source: str
    at: float


@dataclass(slots=True)
class _TrackState:
    window: deque[TrackObservation]
    decided: bool = False
    last_seen: float = 0.0


@dataclass(slots=True)
class _DoorState:
    config: DoorConfig
    tracks: dict[tuple[str, int], _TrackState] = field(default_factory=dict)
    last_grant: dict[str, float] = field(default_factory=dict)
    credential: PresentedCredential | None = None  # card_and_face: waiting for its face


class DoorPolicy:
    """Decisions for every configured door; feed it each encoding of each track."""

    def __init__(self, doors: Sequence[DoorConfig], *, forget_after_seconds: float = 300.0) -> None:
        self._doors = [_DoorState(door) for door in doors]
        self._forget_after_seconds = forget_after_seconds
        # the recognition worker observes; API and card-reader threads present credentials
        self._lock = threading.Lock()

    def galleries_for(self, camera_id: str) -> frozenset[str] | None:
        """The galleries camera ``camera_id`` searches: the union of those of the doors
        watching it; None (every gallery) when no door watches it, as its tracks decide
        nothing and are only reported."""
        watching = [door.config for door in self._doors if camera_id in door.config.cameras]
        if not watching:
            return None
        return frozenset(name for config in watching for name in config.galleries)

    def observe(self, observation: TrackObservation) -> list[Decision]:
        """Add one encoding; return the decisions it completes (at most one per door)."""
        decisions = self.expire(observation.at)
        with self._lock:
            for door in self._doors:
                if observation.camera_id not in door.config.cameras:
                    continue
                self._forget_stale(door, observation.at)
                if not passes_quality(door.config, observation.quality):
                    continue  # a poor face does not vote: the track waits for a better one
                seen = _as_seen_by(door.config, observation)
                if not within_door_distance(door.config, seen):
                    continue  # too far for this door, yet matched: neither a vote nor unknown
                decision = self._observe_door(door, seen)
                if decision is not None:
                    decisions.append(decision)
        return decisions

    def present_credential(self, door_id: str, credential: PresentedCredential) -> Decision | None:
        """A card shown at a card + face door: an unknown card is refused at once (returned);
        a known one waits ``credential_window_seconds`` for its holder's face (replacing any
        card still waiting there). ConfigError for a door that is not card_and_face."""
        with self._lock:
            door = next((door for door in self._doors if door.config.id == door_id), None)
            if door is None or door.config.mode != "card_and_face":
                raise ConfigError(
                    f"door {door_id!r}: no card_and_face door has this id (doors[].mode)"
                )
            if credential.identity_id is None:
                door.credential = None
                return _card_decision(door.config, credential, "unknown_card", credential.at)
            door.credential = credential
            for state in door.tracks.values():
                state.decided = False  # tracks already in view may now decide for this card
            return None

    def expire(self, now: float) -> list[Decision]:
        """Refuse the cards whose window passed without a deciding face (no_face_in_time)."""
        decisions = []
        with self._lock:
            for door in self._doors:
                credential = door.credential
                if credential is None:
                    continue
                if now - credential.at > door.config.credential_window_seconds:
                    door.credential = None
                    decisions.append(
                        _card_decision(door.config, credential, "no_face_in_time", now)
                    )
        return decisions

    def end_track(self, camera_id: str, track_id: int) -> None:
        """Forget a finished track (its window and whether it was decided)."""
        with self._lock:
            for door in self._doors:
                door.tracks.pop((camera_id, track_id), None)

    def end_camera(self, camera_id: str) -> None:
        """Forget every track of a camera that went away, reported or not: a camera added
        again under the same id starts its track ids anew, and must not inherit their votes."""
        with self._lock:
            for door in self._doors:
                for key in [key for key in door.tracks if key[0] == camera_id]:
                    del door.tracks[key]

    def _observe_door(self, door: _DoorState, observation: TrackObservation) -> Decision | None:
        config = door.config
        key = (observation.camera_id, observation.track_id)
        state = door.tracks.setdefault(key, _TrackState(deque(maxlen=config.window_encodings)))
        state.window.append(observation)
        state.last_seen = observation.at
        if state.decided:
            return None
        leader, count = Counter(item.identity_id for item in state.window).most_common(1)[0]
        if count < config.required_matches:
            return None
        if config.mode == "card_and_face":
            return self._observe_two_factor(door, state, observation, leader, count)
        outcome = _outcome(config, leader, observation)
        if outcome is None:
            return None  # liveness still undecided: wait for more frames
        if outcome == "granted" and leader is not None:
            last = door.last_grant.get(leader)
            if last is not None and observation.at - last < config.cooldown_seconds:
                state.decided = True  # anti-passback: too soon after this identity's last grant
                return None
            door.last_grant[leader] = observation.at
        return self._decide(door, state, observation, outcome, count)

    def _observe_two_factor(
        self,
        door: _DoorState,
        state: _TrackState,
        observation: TrackObservation,
        leader: str | None,
        votes: int,
    ) -> Decision | None:
        """A card + face door: the track decides only while a card waits for a face."""
        credential = door.credential
        if credential is None or observation.at < credential.at:
            return None  # a face alone opens nothing here; frames from before the card neither
        if leader != credential.identity_id:
            outcome: DecisionOutcome = "denied"
            reason: str | None = "face_mismatch"
        elif observation.live is None:
            return None  # liveness undecided: wait for more frames, within the window
        elif observation.live is False:
            outcome, reason = "spoof_suspected", "spoof"
        elif door.config.allowed_identities and leader not in door.config.allowed_identities:
            outcome, reason = "denied", "not_allowed"
        else:
            outcome, reason = "granted", None
        door.credential = None  # one card, one decision
        decision = self._decide(door, state, observation, outcome, votes)
        if outcome == "granted" and leader is not None:
            door.last_grant[leader] = observation.at
        return dataclasses.replace(decision, reason=reason, card_number=credential.card_number)

    def _forget_stale(self, door: _DoorState, now: float) -> None:
        """Drop tracks not seen for forget_after_seconds (ends that were never reported)."""
        stale = [
            key
            for key, state in door.tracks.items()
            if now - state.last_seen > self._forget_after_seconds
        ]
        for key in stale:
            del door.tracks[key]

    @staticmethod
    def _decide(
        door: _DoorState,
        state: _TrackState,
        observation: TrackObservation,
        outcome: DecisionOutcome,
        votes: int,
    ) -> Decision:
        state.decided = True
        leader = Counter(item.identity_id for item in state.window).most_common(1)[0][0]
        matching = [item for item in state.window if item.identity_id == leader]
        distances = [item.distance for item in matching if item.distance is not None]
        # what feedback needs: the template the nearest matching encoding matched, and it
        matched = [item for item in matching if item.template_id is not None]
        nearest = min(matched, key=lambda item: item.distance or 0.0) if matched else None
        return Decision(
            door_id=door.config.id,
            camera_id=observation.camera_id,
            track_id=observation.track_id,
            outcome=outcome,
            identity_id=leader,
            name=next((item.name for item in matching if item.name), None),
            distance=min(distances) if distances else None,
            votes=votes,
            at=observation.at,
            liveness=None if observation.liveness is None else dict(observation.liveness),
            liveness_required=door.config.require_liveness,
            template_id=None if nearest is None else nearest.template_id,
            probe=None if nearest is None else nearest.probe,
        )


def _card_decision(
    config: DoorConfig, credential: PresentedCredential, reason: str, at: float
) -> Decision:
    """A card + face refusal that no track made (unknown card, no face in time): it is
    reported as the door's first camera with track id -1."""
    return Decision(
        door_id=config.id,
        camera_id=config.cameras[0],
        track_id=-1,
        outcome="denied",
        identity_id=credential.identity_id,
        name=None,
        distance=None,
        votes=0,
        at=at,
        reason=reason,
        card_number=credential.card_number,
        liveness_required=config.require_liveness,
    )


def _outcome(
    config: DoorConfig, leader: str | None, observation: TrackObservation
) -> DecisionOutcome | None:
    """What the door decides for a track whose window agrees on ``leader``; None: not yet."""
    if leader is None:
        return "unknown"
    if config.require_liveness and observation.live is not True:
        return "spoof_suspected" if observation.live is False else None
    if config.allowed_identities and leader not in config.allowed_identities:
        return "denied"
    return "granted"


def _as_seen_by(config: DoorConfig, observation: TrackObservation) -> TrackObservation:
    """The observation as this door counts it: a match of an identity in none of the door's
    galleries is no match here (the camera's search may span other doors' galleries)."""
    if observation.identity_id is None or not set(observation.galleries).isdisjoint(
        config.galleries
    ):
        return observation
    return dataclasses.replace(
        observation,
        identity_id=None,
        name=None,
        track_distance=None,
        template_id=None,
        probe=None,
        galleries=(),
    )


def passes_quality(config: DoorConfig, quality: Quality | None) -> bool:
    """Whether an encoding of this ``quality`` may vote at the door (None: not measured, by a
    caller without chips; the live pipeline always measures)."""
    if quality is None:
        return True
    return (
        quality.interocular_px >= config.min_interocular_px
        and quality.sharpness >= config.min_sharpness
        and quality.yaw <= config.max_yaw
        and abs(quality.roll_degrees) <= config.max_roll_degrees
        and quality.detector_score >= config.min_detector_score
        and quality.clipped_fraction <= config.max_clipped_fraction
    )


def within_door_distance(config: DoorConfig, observation: TrackObservation) -> bool:
    """Whether a match is near enough to vote at the door (no match, or no door limit: yes)."""
    if config.max_match_distance is None or observation.identity_id is None:
        return True
    distance = (
        observation.track_distance
        if observation.track_distance is not None
        else observation.distance
    )
    return distance is not None and distance <= config.max_match_distance
