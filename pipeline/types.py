"""Frozen, validated data passed between pipeline stages: every type that crosses a stage.

One frame's path through them: ``Frame`` (capture) -> ``Faces`` (detect) -> ``FaceChips``
(align; with their tracks: ``PendingFaces``) -> ``Liveness`` (per track) -> ``Embeddings``
(encode) -> ``Matches`` (the gallery, tau applied there) -> ``TrackObservation`` (what the door
policy is told) -> ``Decision`` (the door) -> an event (pipeline.events). ``TrackLabel`` and
``RecognizedFrame`` carry a frame and its labelled tracks to the preview; ``TrackResult`` is a
finished track.

Each type checks its fields in ``__post_init__`` (field, expected and actual dtype/shape) and
makes its arrays read-only, since ``frozen`` alone does not stop writes into an array. Frames are
BGR uint8 HxWx3 as OpenCV delivers them; recognition converts each frame to RGB once, before
detection (``pipeline.recognition.live``, ``pipeline.recognition.offline``), so detection,
alignment and encoding see RGB.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal, TypeAlias, get_args

import numpy as np
import numpy.typing as npt

from engines.errors import InputSpecError
from pipeline.errors import EventFormatError

__all__ = [
    "EVENT_KINDS",
    "EVENT_STREAM_FIELD",
    "FOUND_BY",
    "Decision",
    "DecisionOutcome",
    "Embeddings",
    "Event",
    "EventKind",
    "FaceChips",
    "Faces",
    "FoundBy",
    "Frame",
    "JsonValue",
    "Liveness",
    "Match",
    "Matches",
    "PendingFaces",
    "Quality",
    "RecognizedFrame",
    "TrackFaces",
    "TrackLabel",
    "TrackObservation",
    "TrackResult",
    "Verdict",
    "event_door",
    "require_array",
]

DESCRIPTOR_SIZE = 128
CHIP_SIZE_PX = 150
LANDMARK_COUNT = 5

FoundBy = Literal["blazeface", "tiled", "padded", "upscaled", "hog", "chip"]
"""Which search found the faces of an image: ``blazeface`` one pass of the network (every video
frame), then, on still images only and in this order when the one before found none (see
``pipeline.recognition.detect.still``): ``chip`` (a pre-aligned face chip recognised by its size),
``padded``
or ``upscaled`` (the image given surroundings, small ones enlarged first), ``tiled`` (contrast
normalised, searched in tiles), ``hog`` (dlib's HOG detector). dlib's HOG as the configured
detector reports ``hog``."""
FOUND_BY: tuple[str, ...] = get_args(FoundBy)


def require_array(
    name: str, array: object, *, dtype: type[np.generic], shape: Sequence[int | None]
) -> None:
    """Raise InputSpecError unless ``array`` is an ndarray of ``dtype`` and ``shape``.

    ``None`` in ``shape`` matches any size on that axis.
    """
    if not isinstance(array, np.ndarray):
        raise InputSpecError(f"{name}: expected a numpy array, got {type(array).__name__}")
    if array.dtype != np.dtype(dtype):
        raise InputSpecError(f"{name}: expected dtype {np.dtype(dtype)}, got {array.dtype}")
    if array.ndim != len(shape) or any(
        want is not None and want != got for want, got in zip(shape, array.shape, strict=True)
    ):
        expected = "(" + ", ".join("N" if dim is None else str(dim) for dim in shape) + ")"
        raise InputSpecError(f"{name}: expected shape {expected}, got {tuple(array.shape)}")


def _frozen(array: npt.NDArray[Any]) -> None:
    array.setflags(write=False)


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded video frame.

    image: BGR uint8 (H, W, 3); sequence: per-camera frame counter from 0, which keeps
    counting across reconnects; captured_at: ``time.monotonic()`` seconds when the frame left
    the decoder; session: which connection of the camera delivered it (from 0, +1 on every
    reconnect): frames of different sessions do not continue each other's scene.
    """

    camera_id: str
    sequence: int
    captured_at: float
    image: npt.NDArray[np.uint8]
    session: int = 0

    def __post_init__(self) -> None:
        require_array("Frame.image", self.image, dtype=np.uint8, shape=(None, None, 3))
        if self.sequence < 0:
            raise InputSpecError(f"Frame.sequence must be >= 0, got {self.sequence}")
        if self.session < 0:
            raise InputSpecError(f"Frame.session must be >= 0, got {self.session}")
        _frozen(self.image)

    @property
    def size_px(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return int(self.image.shape[1]), int(self.image.shape[0])


@dataclass(frozen=True, slots=True)
class Faces:
    """Faces found in one image.

    boxes: float32 (N, 4) x1, y1, x2, y2 in image pixels; scores: float32 (N,) detector
    confidence; landmarks: float32 (N, 5, 2) x, y in image pixels, whose meaning
    ``landmark_scheme`` names: ``dlib5`` is dlib's 5-point model (two corners of each eye, then
    the base of the nose), which alignment maps exactly as dlib's ``get_face_chip`` does;
    found_by: the search that found them (``FoundBy``). Boxes of a face cut off by the image
    border (a tight crop) may reach outside the image.
    """

    boxes: npt.NDArray[np.float32]
    scores: npt.NDArray[np.float32]
    landmarks: npt.NDArray[np.float32]
    landmark_scheme: str = "dlib5"
    found_by: FoundBy = "blazeface"

    def __post_init__(self) -> None:
        require_array("Faces.boxes", self.boxes, dtype=np.float32, shape=(None, 4))
        count = self.boxes.shape[0]
        require_array("Faces.scores", self.scores, dtype=np.float32, shape=(count,))
        require_array(
            "Faces.landmarks", self.landmarks, dtype=np.float32, shape=(count, LANDMARK_COUNT, 2)
        )
        for array in (self.boxes, self.scores, self.landmarks):
            _frozen(array)

    @classmethod
    def empty(cls) -> Faces:
        """No faces."""
        return cls(
            boxes=np.zeros((0, 4), np.float32),
            scores=np.zeros((0,), np.float32),
            landmarks=np.zeros((0, LANDMARK_COUNT, 2), np.float32),
        )

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def select(self, mask: npt.NDArray[np.bool_] | npt.NDArray[np.intp] | Sequence[int]) -> Faces:
        """The faces picked by a boolean mask or index list, as a new ``Faces``."""
        index = np.asarray(mask)
        if index.dtype != np.bool_:  # an empty list would otherwise be float64
            index = index.astype(np.intp)
        return Faces(
            boxes=self.boxes[index].copy(),
            scores=self.scores[index].copy(),
            landmarks=self.landmarks[index].copy(),
            landmark_scheme=self.landmark_scheme,
            found_by=self.found_by,
        )

    @property
    def widths_px(self) -> npt.NDArray[np.float32]:
        """Box widths in pixels, float32 (N,)."""
        return (self.boxes[:, 2] - self.boxes[:, 0]).astype(np.float32)


@dataclass(frozen=True, slots=True)
class FaceChips:
    """Aligned face crops ready for the encoder: RGB uint8 (N, 150, 150, 3)."""

    chips: npt.NDArray[np.uint8]

    def __post_init__(self) -> None:
        require_array(
            "FaceChips.chips",
            self.chips,
            dtype=np.uint8,
            shape=(None, CHIP_SIZE_PX, CHIP_SIZE_PX, 3),
        )
        _frozen(self.chips)

    def __len__(self) -> int:
        return int(self.chips.shape[0])


@dataclass(frozen=True, slots=True)
class Embeddings:
    """Face descriptors and the model that made them.

    vectors: float32 (N, 128); model_id: from the encoder's manifest. The gallery compares
    embeddings of equal model ids only.
    """

    vectors: npt.NDArray[np.float32]
    model_id: str

    def __post_init__(self) -> None:
        require_array(
            "Embeddings.vectors", self.vectors, dtype=np.float32, shape=(None, DESCRIPTOR_SIZE)
        )
        if not self.model_id:
            raise InputSpecError("Embeddings.model_id must name the encoder model")
        _frozen(self.vectors)

    def __len__(self) -> int:
        return int(self.vectors.shape[0])


@dataclass(frozen=True, slots=True)
class Match:
    """One gallery identity near a probe: ``distance`` is Euclidean, in descriptor units, to
    the identity's nearest template, ``template_id`` (None where the answer is not a template)."""

    identity_id: str
    name: str
    distance: float
    template_id: str | None = None
    galleries: tuple[str, ...] = ("default",)  # the named galleries the identity belongs to


@dataclass(frozen=True, slots=True)
class Matches:
    """The gallery's answer for a batch of probes (``Gallery.identify``), nearest first.

    per_probe[i]: at most top_k identities within tau (the query's ``max_distance``) of probe
    row i: tau is applied there, once, and nowhere downstream. nearest_distances[i]: the
    distance to the nearest identity whether or not within tau (None for an empty gallery),
    for metrics and for what a refused face's events report. model_id and version say which
    index answered. probes: the embeddings asked about (row i: probe i) when the caller keeps
    them (``identify_batch`` does): a track's mean descriptor is made from them.
    """

    per_probe: tuple[tuple[Match, ...], ...]
    nearest_distances: tuple[float | None, ...]
    model_id: str
    version: int
    probes: Embeddings | None = None

    def __post_init__(self) -> None:
        if len(self.nearest_distances) != len(self.per_probe):
            raise InputSpecError(
                f"Matches: {len(self.per_probe)} probes but {len(self.nearest_distances)} "
                "nearest distances"
            )
        if self.probes is not None and len(self.probes) != len(self.per_probe):
            raise InputSpecError(
                f"Matches: {len(self.per_probe)} probes but {len(self.probes)} probe embeddings"
            )

    def __len__(self) -> int:
        return len(self.per_probe)

    def __getitem__(self, probe_index: int) -> tuple[Match, ...]:
        return self.per_probe[probe_index]

    def best(self) -> tuple[Match | None, ...]:
        """The nearest match within tau of each probe row, or None where nothing was."""
        return tuple(matches[0] if matches else None for matches in self.per_probe)

    def rows(self, start: int, stop: int) -> Matches:
        """Probe rows ``start:stop`` (one camera's faces of a batch encoded across cameras)."""
        probes = self.probes
        return Matches(
            self.per_probe[start:stop],
            self.nearest_distances[start:stop],
            self.model_id,
            self.version,
            None if probes is None else Embeddings(probes.vectors[start:stop], probes.model_id),
        )


Verdict = Literal["live", "spoof", "undecided"]


@dataclass(frozen=True, slots=True)
class Liveness:
    """A track's liveness: ``verdict``; ``score`` the fused P(live)-like value (0..1; 0.5 is
    no evidence); ``cues`` each cue's P(live) plus raw figures (``parallax_ratio``,
    ``parallax_measurements``, ``flicker_statistic``); ``frames`` frames observed."""

    verdict: Verdict
    score: float
    cues: Mapping[str, float]
    frames: int

    @classmethod
    def undecided(cls) -> Liveness:
        """No evidence at all (an unknown or brand-new track)."""
        return cls("undecided", 0.5, MappingProxyType({}), 0)


@dataclass(frozen=True, slots=True)
class Quality:
    """How usable one encoded face is (``pipeline.recognition.quality``), measured once.

    interocular_px: distance between the eye centres, frame pixels; sharpness: variance of the
    Laplacian of the aligned chip's grey image (grey levels squared; blur lowers it); yaw: the
    nose's offset from the eyes' midpoint along the eye line over the interocular distance (0
    frontal, ~0.5 turned far); roll_degrees: tilt of the eye line; brightness: the chip's mean
    grey level (0..255); clipped_fraction: share of chip pixels at <= 5 or >= 250 (under- or
    over-exposed); detector_score: the detector's confidence (0..1).
    """

    interocular_px: float
    sharpness: float
    yaw: float
    roll_degrees: float
    brightness: float
    clipped_fraction: float
    detector_score: float

    def __post_init__(self) -> None:
        for name in ("interocular_px", "sharpness", "yaw", "brightness", "clipped_fraction"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise InputSpecError(f"Quality.{name} must be finite and >= 0, got {value}")
        if not math.isfinite(self.roll_degrees) or not math.isfinite(self.detector_score):
            raise InputSpecError("Quality.roll_degrees and detector_score must be finite")

    def as_dict(self) -> dict[str, float]:
        """JSON-ready form, rounded."""
        return {
            "interocular_px": round(self.interocular_px, 1),
            "sharpness": round(self.sharpness, 1),
            "yaw": round(self.yaw, 3),
            "roll_degrees": round(self.roll_degrees, 1),
            "brightness": round(self.brightness, 1),
            "clipped_fraction": round(self.clipped_fraction, 3),
            "detector_score": round(self.detector_score, 3),
        }


@dataclass(frozen=True, slots=True)
class PendingFaces:
    """Faces of one frame that are due for encoding: aligned chips and the tracks they belong
    to (``track_ids`` int (N,), row i of ``chips`` is track ``track_ids[i]``); ``qualities``:
    row i's ``Quality`` (empty only from callers that measure none)."""

    chips: FaceChips
    track_ids: tuple[int, ...]
    qualities: tuple[Quality, ...] = ()

    def __post_init__(self) -> None:
        if self.qualities and len(self.qualities) != len(self.chips):
            raise InputSpecError(
                f"PendingFaces: {len(self.chips)} chips but {len(self.qualities)} qualities"
            )


@dataclass(frozen=True, slots=True)
class TrackFaces:
    """A finished unknown track's best encodings, best quality first (``pipeline.gallery.unknowns``
    keeps them): ``embeddings`` (K, 128), ``qualities`` row i's ``Quality``; ``chip``: the best
    face's aligned chip, RGB uint8 150x150 (held in memory only: written nowhere unless
    ``unknowns.keep_thumbnails``)."""

    embeddings: Embeddings
    qualities: tuple[Quality, ...]
    chip: npt.NDArray[np.uint8]

    def __post_init__(self) -> None:
        if not len(self.embeddings) or len(self.qualities) != len(self.embeddings):
            raise InputSpecError(
                f"TrackFaces: {len(self.embeddings)} encodings (at least 1) but "
                f"{len(self.qualities)} qualities"
            )
        require_array(
            "TrackFaces.chip", self.chip, dtype=np.uint8, shape=(CHIP_SIZE_PX, CHIP_SIZE_PX, 3)
        )
        _frozen(self.chip)


@dataclass(frozen=True, slots=True)
class TrackResult:
    """A finished track: who it was (the gallery name and identity id that won the track's
    vote, or None for an unknown face).

    distance: the best (smallest) distance to that identity, or to the nearest identity when
    unknown (None when the gallery is empty); frames are 0-based decoded-frame indices.
    """

    track_id: int
    identity: str | None
    distance: float | None
    first_frame: int
    last_frame: int
    encodings: int
    live: bool | None = None  # liveness is not judged offline yet
    identity_id: str | None = None
    # an unknown track's best encodings (None for a known one, or one never encoded)
    faces: TrackFaces | None = None

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "track_id": self.track_id,
            "identity": self.identity,
            "identity_id": self.identity_id,
            "distance": None if self.distance is None else round(self.distance, 4),
            "first_frame": self.first_frame,
            "last_frame": self.last_frame,
            "live": self.live,
        }


DecisionOutcome = Literal["granted", "denied", "spoof_suspected", "unknown"]


@dataclass(frozen=True, slots=True)
class TrackObservation:
    """One encoding of a track, as the door sees it.

    identity_id/name: the gallery match within tau, or None; distance: to the nearest
    identity (None when the gallery is empty); live: the liveness verdict so far (None:
    undecided or liveness off); at: unix seconds; liveness: the fused score and the cues
    behind the verdict (None with liveness off), carried into the decision. track_distance:
    when the identity comes from the whole track (its mean descriptor within tau, no encoding
    naming anyone else; see ``pipeline.recognition.offline.track_consensus``), the mean's
    distance to it; None when the identity is this encoding's own match or nobody.
    """

    camera_id: str
    track_id: int
    identity_id: str | None
    name: str | None
    distance: float | None
    live: bool | None
    at: float
    liveness: Mapping[str, float] | None = None
    track_distance: float | None = None
    quality: Quality | None = None  # None: not measured (a caller without chips); it votes
    template_id: str | None = None  # the template this encoding matched (None: track vote)
    probe: npt.NDArray[np.float32] | None = field(default=None, repr=False, compare=False)
    galleries: tuple[str, ...] = ("default",)  # identity_id's galleries: a door counts it only
    # when it searches one of them (doors[].galleries)


@dataclass(frozen=True, slots=True)
class Decision:
    """A door decision about one track; ``votes`` is how many of the window agreed;
    ``liveness``: the liveness score and cues when it was decided (None with liveness off);
    ``liveness_required``: False when the door opted out of liveness (``require_liveness =
    false``), so every event of such a door says a photo could have opened it.
    ``event_id``: the id of the event that announces it (and of its audit line), which an
    operator's feedback names; ``template_id``: the identity's template the nearest matching
    encoding matched; ``probe``: that encoding, float32 (128,), kept only in memory and in
    Redis for feedback (``pipeline.gallery.feedback``), never in events or the audit log."""

    door_id: str
    camera_id: str
    track_id: int
    outcome: DecisionOutcome
    identity_id: str | None
    name: str | None
    distance: float | None
    votes: int
    at: float
    liveness: dict[str, float] | None = None
    reason: str | None = None  # card_and_face: why it was refused (face_mismatch, ...)
    card_number: int | None = None  # card_and_face: the credential presented
    liveness_required: bool = True
    event_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    template_id: str | None = None
    probe: npt.NDArray[np.float32] | None = field(default=None, repr=False, compare=False)

    def announced(self) -> dict[str, JsonValue]:
        """Every field but ``probe``: what events and the audit log may hold."""
        fields: dict[str, JsonValue] = {
            item.name: getattr(self, item.name) for item in dataclasses.fields(self)
        }
        del fields["probe"]
        if self.liveness is not None:
            fields["liveness"] = dict(self.liveness)
        return fields


@dataclass(frozen=True, slots=True)
class TrackLabel:
    """What is known about one face track at a frame, for previews and overlays.

    box: x1, y1, x2, y2 in frame pixels; name: the identity of its latest encoding when within
    tau, else None; distance: that encoding's distance to its nearest identity (None before the
    first encoding, or with an empty gallery); liveness: the track's verdict so far.
    """

    track_id: int
    box: tuple[float, float, float, float]
    name: str | None
    distance: float | None
    liveness: Verdict | None = None  # None: liveness is off


@dataclass(frozen=True, slots=True)
class RecognizedFrame:
    """A frame taken from a camera, with the tracks seen in it after identification."""

    frame: Frame
    tracks: tuple[TrackLabel, ...]


EventKind = Literal[
    "decision",
    "unknown_face",
    "spoof_suspected",
    "camera_down",
    "camera_up",
    "audit_checkpoint",
    # OSDP doors (pipeline.access): link changes, a wrong key, a grant not sent to the panel
    "osdp_link_up",
    "osdp_link_down",
    "osdp_secure_channel_failed",
    "osdp_card_not_sent",
    # an operator's correction of a decision (pipeline.gallery.feedback)
    "decision_feedback",
    # an unknown person's cluster seen again after unknowns.recurring_after_seconds
    # (pipeline.gallery.unknowns)
    "unknown_recurring",
]
EVENT_KINDS: Final[tuple[str, ...]] = get_args(EventKind)
JsonValue: TypeAlias = (
    "str | int | float | bool | Sequence[JsonValue] | Mapping[str, JsonValue] | None"
)
EVENT_STREAM_FIELD: Final = b"event"
"""The field of a Redis stream entry that holds the event's JSON (``Event.to_json``)."""

_EVENT_ID = re.compile(r"^[0-9a-f]{32}$")
_CAMERA_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_DOOR_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_MAX_EVENT_BYTES: Final = 1 << 20
_MAX_PAYLOAD_DEPTH: Final = 16


def _frozen_json(value: object, where: str, depth: int = 0) -> JsonValue:
    """A deep, read-only copy of a JSON-able value; EventFormatError names what is not."""
    if depth > _MAX_PAYLOAD_DEPTH:
        raise EventFormatError(f"{where}: nested deeper than {_MAX_PAYLOAD_DEPTH} levels")
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise EventFormatError(f"{where}: expected a finite number, got {value}")
        return value
    if isinstance(value, Mapping):
        frozen: dict[str, JsonValue] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise EventFormatError(f"{where}: expected string keys, got {key!r}")
            frozen[key] = _frozen_json(item, f"{where}.{key}", depth + 1)
        return MappingProxyType(frozen)
    if isinstance(value, list | tuple):
        return tuple(
            _frozen_json(item, f"{where}[{index}]", depth + 1) for index, item in enumerate(value)
        )
    raise EventFormatError(
        f"{where}: expected str, int, float, bool, None, list or mapping, "
        f"got {type(value).__name__}"
    )


def _plain_json(value: object) -> object:
    """``json.dumps`` hook: read-only mappings back to dicts."""
    if isinstance(value, MappingProxyType):
        return dict(value)
    raise TypeError(f"not JSON-able: {type(value).__name__}")


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened at a camera, for the stream and the webhooks.

    event_id: 32 lowercase hex (uuid4), also the receivers' idempotency key; created: unix
    seconds; payload: a JSON-able mapping, stored read-only (lists become tuples).
    """

    event_id: str
    kind: EventKind
    camera_id: str
    created: float
    payload: Mapping[str, JsonValue]

    def __post_init__(self) -> None:
        if not isinstance(self.event_id, str) or not _EVENT_ID.match(self.event_id):
            raise EventFormatError(f"event_id: expected 32 lowercase hex, got {self.event_id!r}")
        if self.kind not in EVENT_KINDS:
            raise EventFormatError(f"kind: expected one of {EVENT_KINDS}, got {self.kind!r}")
        if not isinstance(self.camera_id, str) or not _CAMERA_ID.match(self.camera_id):
            raise EventFormatError(
                f"camera_id: expected 1-64 of A-Z a-z 0-9 _ . -, got {self.camera_id!r}"
            )
        if (
            isinstance(self.created, bool)
            or not isinstance(self.created, int | float)
            or not math.isfinite(self.created)
            or self.created < 0
        ):
            raise EventFormatError(
                f"created: expected finite unix seconds >= 0, got {self.created!r}"
            )
        if not isinstance(self.payload, Mapping):
            raise EventFormatError(
                f"payload: expected a mapping, got {type(self.payload).__name__}"
            )
        object.__setattr__(self, "created", float(self.created))
        object.__setattr__(self, "payload", _frozen_json(self.payload, "payload"))

    @classmethod
    def create(
        cls,
        kind: EventKind,
        camera_id: str,
        payload: Mapping[str, JsonValue],
        *,
        created: float | None = None,
    ) -> Event:
        """A new event with a fresh uuid4 id, stamped ``created`` (default: now, unix seconds)."""
        return cls(
            event_id=uuid.uuid4().hex,
            kind=kind,
            camera_id=camera_id,
            created=time.time() if created is None else created,
            payload=payload,
        )

    def to_json(self) -> bytes:
        """Compact UTF-8 JSON with sorted keys: the webhook body and the stream field."""
        return json.dumps(
            {
                "event_id": self.event_id,
                "kind": self.kind,
                "camera_id": self.camera_id,
                "created": self.created,
                "payload": self.payload,
            },
            sort_keys=True,
            separators=(",", ":"),
            allow_nan=False,
            default=_plain_json,
        ).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> Event:
        """Decode ``to_json`` output; EventFormatError on bad JSON, fields or values."""
        if len(data) > _MAX_EVENT_BYTES:
            raise EventFormatError(
                f"event JSON: expected at most {_MAX_EVENT_BYTES} bytes, got {len(data)}"
            )
        try:
            fields = json.loads(data)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, bad UTF-8
            raise EventFormatError(f"event JSON: not valid JSON: {exc}") from exc
        if not isinstance(fields, dict):
            raise EventFormatError(f"event JSON: expected an object, got {type(fields).__name__}")
        expected = {"event_id", "kind", "camera_id", "created", "payload"}
        if set(fields) != expected:
            raise EventFormatError(
                f"event JSON: expected keys {sorted(expected)}, got {sorted(fields)}"
            )
        return cls(**fields)

    @classmethod
    def from_stream_fields(cls, fields: Mapping[bytes, bytes]) -> Event:
        """The event of one stream entry's fields, as XREAD/XREADGROUP return them."""
        body = fields.get(EVENT_STREAM_FIELD)
        if body is None:
            raise EventFormatError(f"stream entry: no {EVENT_STREAM_FIELD.decode()!r} field")
        return cls.from_json(body)


def event_door(event: Event) -> str:
    """The door an event is about (its payload's ``door_id``), or "" for events of no door."""
    door = event.payload.get("door_id")
    return door if isinstance(door, str) and _DOOR_ID.match(door) else ""
