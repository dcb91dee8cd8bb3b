"""The API's JSON answers as pydantic models, one per response shape.

Fields are declared in the order the JSON has them, and each model is built from the
service's own types by a ``from_<source>`` classmethod, so a route only picks the model.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, StringConstraints

from pipeline.capture import CameraState, CameraStatus
from pipeline.capture.sharding import ShardStatus
from pipeline.gallery.feedback import FeedbackResult, QuarantinedTemplate
from pipeline.gallery.model import DEFAULT_GALLERY, GALLERY_NAME, Identity, MetadataValue
from pipeline.gallery.unknowns import UnknownCluster
from pipeline.liveness import Verdict
from pipeline.service.service import MatchStatus, Readiness
from pipeline.types import FoundBy

__all__ = [
    "CameraView",
    "EncoderView",
    "EnrolledIdentity",
    "EventList",
    "FaceLiveness",
    "FeedbackRequest",
    "FeedbackView",
    "GalleryName",
    "HealthView",
    "IdentifyResult",
    "IdentityList",
    "IdentityPatch",
    "IdentityView",
    "LivenessResult",
    "MatchStatusView",
    "MatchView",
    "QuarantinedList",
    "QuarantinedView",
    "ReadinessView",
    "ShardView",
    "StreamDetail",
    "StreamList",
    "TrackView",
    "UnknownClusterList",
    "UnknownClusterView",
    "UnknownEnrollRequest",
    "VerifyResult",
]

# a named gallery, as a form field takes it: a bad name is the request's 422, naming the field
GalleryName = Annotated[str, StringConstraints(pattern=GALLERY_NAME)]


class _Answer(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# ---- health ----


class ShardView(_Answer):
    """This worker's shard of ``count``, and each configured camera another shard runs."""

    index: int
    count: int
    not_assigned: dict[str, int]

    @classmethod
    def from_status(cls, status: ShardStatus) -> ShardView:
        return cls(index=status.index, count=status.count, not_assigned=dict(status.not_assigned))


class EncoderView(_Answer):
    backend: str
    model_id: str
    precision: Literal["fp32", "fp16", "int8"]


class MatchStatusView(_Answer):
    """tau, the gallery size it was chosen for, and whether the gallery has outgrown it."""

    tau: float
    gallery_size: int | None
    identities: int
    outgrown: bool

    @classmethod
    def from_status(cls, status: MatchStatus) -> MatchStatusView:
        return cls(
            tau=status.tau,
            gallery_size=status.gallery_size,
            identities=status.identities,
            outgrown=status.outgrown,
        )


class HealthView(_Answer):
    """/healthz: the process answers; the engines, cameras, shard and match threshold;
    ``liveness_required``: door id -> whether it requires a live face (false: the door opted
    out with ``require_liveness = false``, and a photo of an enrolled face opens it)."""

    status: Literal["ok"]
    uptime_seconds: float
    engines: dict[str, EncoderView]
    cameras: dict[str, CameraState]
    shard: ShardView
    match: MatchStatusView
    liveness_required: dict[str, bool]


class ReadinessView(_Answer):
    """/readyz: ``ready`` and what decided it."""

    ready: bool
    redis: bool
    engines: dict[str, str]
    recognition: bool
    cameras: dict[str, CameraState]
    sinks: dict[str, bool]
    detail: str | None
    shard: ShardView

    @classmethod
    def from_readiness(cls, readiness: Readiness) -> ReadinessView:
        return cls(
            ready=readiness.ready,
            redis=readiness.redis,
            engines=dict(readiness.engines),
            recognition=readiness.recognition,
            cameras=dict(readiness.cameras),
            sinks=dict(readiness.sinks),
            detail=readiness.detail,
            shard=ShardView.from_status(readiness.shard),
        )


# ---- identities ----


class IdentityView(_Answer):
    """An enrolled person; ``templates``: model id -> face templates searched for it;
    ``negatives``: probes an operator said were not this person; ``tau_ceiling``: its own tau
    when that is below the global one (None: the global tau); ``galleries``: the named
    galleries it belongs to (a door searches only its own)."""

    id: str
    name: str
    metadata: dict[str, MetadataValue]
    created: float
    updated: float
    templates: dict[str, int]
    negatives: int = 0
    tau_ceiling: float | None = None
    galleries: list[str] = Field(default_factory=lambda: [DEFAULT_GALLERY])

    @classmethod
    def from_identity(cls, identity: Identity) -> IdentityView:
        return cls(
            id=identity.identity_id,
            name=identity.name,
            metadata=dict(identity.metadata),
            created=identity.created,
            updated=identity.updated,
            templates=dict(identity.template_counts),
            negatives=identity.negatives,
            tau_ceiling=identity.tau_ceiling,
            galleries=list(identity.galleries),
        )


class IdentityList(_Answer):
    identities: list[IdentityView]


class IdentityPatch(BaseModel):
    """A change to an identity: ``galleries``, the named galleries it belongs to from now on
    (replacing its current ones; at least one)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    galleries: list[GalleryName] = Field(min_length=1, max_length=64)


class EnrolledIdentity(IdentityView):
    """An identity after photos were added: the photos refused, and the still search that
    found each accepted photo's face."""

    rejected: list[str]
    found_by: list[FoundBy]

    @classmethod
    def from_enrolment(
        cls, identity: Identity, *, rejected: list[str], found_by: list[FoundBy]
    ) -> EnrolledIdentity:
        view = IdentityView.from_identity(identity)
        return cls(**view.model_dump(), rejected=rejected, found_by=found_by)


# ---- recognition ----


class MatchView(_Answer):
    identity_id: str
    name: str
    distance: float


class IdentifyResult(_Answer):
    """1:N: the identities within tau, best first, and the search that found the face."""

    matches: list[MatchView]
    tau: float
    found_by: FoundBy


class VerifyResult(_Answer):
    """1:1: whether the face is the claimed identity (distance within tau)."""

    match: bool
    distance: float
    tau: float
    found_by: FoundBy


class FaceLiveness(_Answer):
    box: list[float]
    verdict: Verdict
    score: float
    cues: dict[str, float]


class LivenessResult(_Answer):
    """Passive liveness of each face of a photo, largest first."""

    faces: list[FaceLiveness]


# ---- streams ----


class CameraView(_Answer):
    """A camera's state, backend, counts and last error."""

    camera_id: str
    backend: str
    state: CameraState
    frames_captured: int
    reconnects: int
    last_error: str | None

    @classmethod
    def from_status(cls, status: CameraStatus) -> CameraView:
        return cls(
            camera_id=status.camera_id,
            backend=status.backend,
            state=status.state,
            frames_captured=status.frames_captured,
            reconnects=status.reconnects,
            last_error=status.last_error,
        )


class StreamList(_Answer):
    streams: list[CameraView]


class TrackView(_Answer):
    """A face track of a camera's latest frame; ``distance`` None before its first encoding."""

    track_id: int
    box: list[float]
    name: str | None
    distance: float | None
    liveness: Verdict | None


class StreamDetail(CameraView):
    """A camera and the tracks of its latest frame."""

    tracks: list[TrackView]


# ---- events ----


class EventList(_Answer):
    """Events of the stream, newest first, each as the stream stores it."""

    events: list[dict[str, JsonValue]]


# ---- unknown faces ----


class UnknownClusterView(_Answer):
    """One person the cameras saw and nobody enrolled: ``count`` unknown tracks, first and last
    seen (unix seconds), the cameras that saw it; ``thumbnail_url``: its face crop, when
    ``unknowns.keep_thumbnails`` kept one (else null)."""

    cluster_id: str
    count: int
    first_seen: float
    last_seen: float
    cameras: list[str]
    thumbnail_url: str | None

    @classmethod
    def from_cluster(cls, cluster: UnknownCluster) -> UnknownClusterView:
        kept = cluster.thumbnail_rank is not None
        return cls(
            cluster_id=cluster.cluster_id,
            count=cluster.count,
            first_seen=cluster.first_seen,
            last_seen=cluster.last_seen,
            cameras=list(cluster.cameras),
            thumbnail_url=f"/v1/unknowns/{cluster.cluster_id}/thumbnail" if kept else None,
        )


class UnknownClusterList(_Answer):
    """The unknown clusters, the most recently seen first."""

    clusters: list[UnknownClusterView]


class UnknownEnrollRequest(BaseModel):
    """Enrol an unknown cluster: the person's ``name``; ``galleries``: the named galleries
    the identity joins (default: default)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    galleries: list[GalleryName] = Field(default_factory=lambda: [DEFAULT_GALLERY], min_length=1)


# ---- feedback ----


class FeedbackRequest(BaseModel):
    """An operator's answer on a decision: ``correct``; ``identity_id``: who it really was
    (with correct = false), recorded in the audit log."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    correct: bool
    identity_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,128}$")


class FeedbackView(_Answer):
    """What a feedback did: the identity after it (``tau``: the one now applied to it) and the
    template quarantined (None when the match was right)."""

    event_id: str
    correct: bool
    identity: IdentityView
    tau: float
    quarantined_template: str | None
    correct_identity_id: str | None

    @classmethod
    def from_result(cls, result: FeedbackResult, tau: float) -> FeedbackView:
        return cls(
            event_id=result.event_id,
            correct=result.correct,
            identity=IdentityView.from_identity(result.identity),
            tau=tau,
            quarantined_template=result.quarantined_template,
            correct_identity_id=result.correct_identity_id,
        )


class QuarantinedView(_Answer):
    """A template taken out of the search by a correction; restorable."""

    template_id: str
    model_id: str


class QuarantinedList(_Answer):
    identity_id: str
    templates: list[QuarantinedView]

    @classmethod
    def from_templates(
        cls, identity_id: str, templates: list[QuarantinedTemplate]
    ) -> QuarantinedList:
        return cls(
            identity_id=identity_id,
            templates=[
                QuarantinedView(template_id=each.template_id, model_id=each.model_id)
                for each in templates
            ],
        )
