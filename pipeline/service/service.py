"""The running door-access service: cameras, recognition, door decisions, events, preview.

``run_service(config)`` builds everything on top of ``open_services`` and starts it; leaving
the ``with`` block stops it in reverse order: cameras and recognition first (the open tracks
are finished and decided), then the preview, webhooks, the event publisher (one last flush)
and the audit log. The HTTP API (``pipeline.service.http.app``) is a thin layer over
``FaceStreamService``.

Events: every door decision is appended to the audit log, then published (Redis stream and
webhook outbox) by a background publisher that retries while Redis is away; a camera coming
up or going down (waiting to reconnect, failed, ended) is published as camera_up/camera_down.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Collection, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from pipeline.access.audit import AuditLog
from pipeline.access.credentials import CredentialStore, OsdpMetrics
from pipeline.access.doors import AccessWiring, DoorAccess
from pipeline.access.policy import DoorPolicy
from pipeline.access.recorder import DecisionRecorder
from pipeline.capture import CameraConfig, CameraSet, CameraState, CameraStatus
from pipeline.capture.sharding import ShardStatus, resolve_shard
from pipeline.capture.source import SourceFactory, make_source
from pipeline.config.service import FaceStreamConfig
from pipeline.errors import (
    AuditEventError,
    AuditLogCorruptError,
    AuditLogError,
    GalleryUnavailableError,
    ServiceNotReadyError,
    UnknownsDisabledError,
)
from pipeline.events.bus import EventBus
from pipeline.events.mqtt import MqttBridge
from pipeline.events.webhooks import WebhookDeliverer
from pipeline.gallery.feedback import FeedbackResult, FeedbackStore, QuarantinedTemplate
from pipeline.gallery.model import DEFAULT_GALLERY, Enrollment, Identity
from pipeline.recognition.live import UNHEALTHY_AFTER_SECONDS, LiveOutputs, LiveRecognition
from pipeline.redis.cluster import redis_problem
from pipeline.service.app import Services, open_services
from pipeline.service.preview import PreviewHub
from pipeline.service.unknowns import UnknownFaces
from pipeline.types import Decision, Embeddings, Event, EventKind, JsonValue, Match

__all__ = ["FaceStreamService", "MatchStatus", "Readiness", "run_service"]

_log = logging.getLogger(__name__)
_DOWN_STATES: frozenset[CameraState] = frozenset({"waiting", "failed", "finished"})


@dataclass(frozen=True, slots=True)
class Readiness:
    """What /readyz reports: ready when Redis answers, the engines are loaded and recognition
    runs. Cameras are listed but do not decide readiness: one dead camera must not take the
    API (enrolment, the other cameras' previews) out of a load balancer."""

    redis: bool
    engines: dict[str, str]
    recognition: bool
    cameras: dict[str, CameraState]
    sinks: dict[str, bool]  # optional event sinks (mqtt): reported, not deciding readiness
    detail: str | None
    shard: ShardStatus  # configured cameras another worker runs are listed, not an error

    @property
    def ready(self) -> bool:
        """True when the service can do its job."""
        return self.redis and self.recognition and bool(self.engines)


@dataclass(frozen=True, slots=True)
class MatchStatus:
    """What /healthz says of the match threshold: ``outgrown`` when the gallery holds more
    identities than the (open-set) tau was chosen for."""

    tau: float
    gallery_size: int | None
    identities: int

    @property
    def outgrown(self) -> bool:
        return self.gallery_size is not None and self.identities > self.gallery_size

    def as_dict(self) -> dict[str, object]:
        return {
            "tau": self.tau,
            "gallery_size": self.gallery_size,
            "identities": self.identities,
            "outgrown": self.outgrown,
        }


class FaceStreamService:
    """Cameras, live recognition and door decisions over one set of ``Services``.

    Build it with ``run_service``; its methods are safe to call from API threads.
    """

    def __init__(
        self,
        services: Services,
        *,
        bus: EventBus,
        recorder: DecisionRecorder,
        preview: PreviewHub,
        source_factory: SourceFactory = make_source,
        mqtt: MqttBridge | None = None,
    ) -> None:
        self.services = services
        self.mqtt = mqtt
        self.config = services.config
        self.bus = bus
        self.recorder = recorder
        self.preview = preview
        self.started_at = time.time()
        # which configured cameras are this worker's (capture.shard / capture.shards)
        self.shard = resolve_shard(self.config.capture, os.environ)
        self.policy = DoorPolicy(self.config.doors)
        self.credentials = CredentialStore(services.redis, namespace=self.config.gallery.namespace)
        self.feedback_store = FeedbackStore(services.gallery, services.redis, self.config.feedback)
        # unknown faces grouped by person: only when an operator turned it on (privacy)
        self.unknown_faces = (
            UnknownFaces(services, recorder.publish) if self.config.unknowns.enabled else None
        )
        self.access = DoorAccess(  # OSDP readers, card readers, card + face windows
            self.config.doors,
            AccessWiring(
                policy=self.policy,
                credentials=self.credentials,
                metrics=OsdpMetrics.create(services.metrics.registry),
                publish=recorder.publish,
                on_decision=self._decided,
            ),
        )
        self.cameras = CameraSet(
            services.metrics, source_factory=source_factory, on_state=self._camera_changed
        )
        self.recognition = LiveRecognition(
            services.analyzer,
            services.gallery,
            self.cameras,
            config=self.config.recognition,
            metrics=services.metrics,
            outputs=LiveOutputs(
                on_track=None if self.unknown_faces is None else self.unknown_faces.track_ended,
                policy=self.policy,
                on_decision=self._decided,
                on_frame=preview.publish,
            ),
            liveness=self.config.liveness,
            liveness_engine=services.liveness_engine,
        )
        self._cameras_lock = threading.Lock()  # add/remove: one at a time, preview in step
        self._outgrown_logged = False
        services.metrics.match_gallery_size.set(self.config.recognition.match.gallery_size or 0)

    def start(self) -> None:
        """Start the doors' OSDP links, recognition, every configured camera and the purge of
        unknown faces past retention."""
        self.access.start()
        if self.unknown_faces is not None:
            self.unknown_faces.start()
        self.recognition.start()
        for camera in self.config.capture.cameras:
            if self.shard.owns(camera.id):
                self.add_camera(camera)
            else:
                _log.info("camera %s belongs to another shard: not started here", camera.id)

    def stop(self) -> None:
        """Stop cameras, then recognition (which decides the tracks still open)."""
        self.cameras.stop_all()
        self.recognition.stop()
        if self.unknown_faces is not None:
            self.unknown_faces.stop()
        self.access.stop()

    def add_camera(self, camera: CameraConfig) -> CameraStatus:
        """Start a camera at run time; ConfigError when its id is taken."""
        with self._cameras_lock:
            self.preview.add(camera.id)
            try:
                started = self.cameras.add(camera)
            except BaseException:
                if camera.id not in self.cameras.ids():
                    self.preview.remove(camera.id)
                raise
        return started.status()

    def remove_identity(self, identity_id: str) -> None:
        """Delete an identity from the gallery, then what the event keys in Redis and the MQTT
        broker's retained topics hold about it (the audit log keeps its id, never its name).
        IdentityNotFoundError when absent; EventsUnavailableError when Redis goes away between
        the two (the identity is gone; run the removal again to purge)."""
        self.services.gallery.remove(identity_id)  # with its quarantined templates, negatives
        self.feedback_store.forget_identity(identity_id)  # the probes kept for feedback
        purged = self.bus.purge_identity(identity_id)
        if self.mqtt is not None:
            self.mqtt.clear_retained_people()
        _log.info(
            "identity %s removed; purged %d stream entries, %d deliveries, %d dead letters",
            identity_id,
            purged.stream_entries,
            purged.deliveries,
            purged.dead_letters,
        )

    @property
    def tau(self) -> float:
        """The match threshold: Euclidean distance beyond which a face is nobody enrolled."""
        return self.config.recognition.match.max_distance

    def identities(self) -> list[Identity]:
        """Every enrolled identity."""
        return self.services.gallery.list_identities()

    def identity(self, identity_id: str) -> Identity:
        """One identity; IdentityNotFoundError when absent."""
        return self.services.gallery.get(identity_id)

    def enroll(
        self,
        name: str,
        templates: Embeddings,
        *,
        identity_id: str | None = None,
        galleries: Collection[str] = (DEFAULT_GALLERY,),
    ) -> Identity:
        """Store a new identity with ``templates`` in the named ``galleries``; warns once when
        the gallery outgrows tau."""
        identity = self.services.gallery.enroll(
            Enrollment(name, templates, identity_id=identity_id, galleries=tuple(galleries))
        )
        self.match_status()
        return identity

    def set_galleries(self, identity_id: str, galleries: Collection[str]) -> Identity:
        """Make ``galleries`` the identity's named galleries (``Gallery.set_galleries``)."""
        return self.services.gallery.set_galleries(identity_id, galleries)

    def add_templates(self, identity_id: str, templates: Embeddings) -> Identity:
        """Add face templates to an identity; IdentityNotFoundError when absent."""
        return self.services.gallery.add_templates(identity_id, templates)

    def feedback(
        self, event_id: str, *, correct: bool, correct_identity_id: str | None = None
    ) -> FeedbackResult:
        """An operator's answer on a decision (``FeedbackStore.give``), then audited and
        published as a ``decision_feedback`` event. A refused answer writes nothing; an audit
        failure after the gallery took the answer raises (AuditLogError) and is logged."""
        result = self.feedback_store.give(
            event_id, correct=correct, correct_identity_id=correct_identity_id
        )
        self.recorder.record_feedback(result.audit_entry(), "operator")
        return result

    def unknowns(self) -> UnknownFaces:
        """The unknown faces kept; UnknownsDisabledError when ``[unknowns] enabled = false``."""
        if self.unknown_faces is None:
            raise UnknownsDisabledError(
                "unknown faces are not enabled ([unknowns] enabled = false): no unknown face "
                "is kept, so there is nothing to list, enrol or delete"
            )
        return self.unknown_faces

    def enroll_unknown(
        self, cluster_id: str, name: str, *, galleries: Collection[str] = (DEFAULT_GALLERY,)
    ) -> Identity:
        """Make an identity of an unknown cluster's encodings (its templates) in the named
        ``galleries``; the cluster is marked enrolled. Warns once when the gallery outgrows
        tau."""
        identity = self.unknowns().enroll(cluster_id, name, tuple(galleries))
        self.match_status()
        return identity

    def quarantined(self, identity_id: str) -> list[QuarantinedTemplate]:
        """An identity's templates taken out of the search by corrections."""
        return self.feedback_store.quarantined(identity_id)

    def restore_template(self, identity_id: str, template_id: str) -> Identity:
        """Put a quarantined template back in the search."""
        return self.feedback_store.restore(identity_id, template_id)

    def identity_tau(self, identity: Identity) -> float:
        """The tau applied to ``identity``: the global one, or its tighter ceiling."""
        ceiling = identity.tau_ceiling
        return self.tau if ceiling is None else min(self.tau, ceiling)

    def identify(
        self, probe: Embeddings, *, top_k: int, galleries: Collection[str] | None = None
    ) -> tuple[Match, ...]:
        """1:N: the identities within tau of the probe's first row, nearest first, among those
        of the named ``galleries`` (None: every identity)."""
        return self.services.gallery.identify(
            probe, top_k=top_k, max_distance=self.tau, galleries=galleries
        )[0]

    def distance_to(self, probe: Embeddings, identity_id: str) -> float:
        """1:1: the distance from the probe's first row to the identity's nearest template."""
        return self.services.gallery.distance_to(probe, identity_id)

    def camera_status(self, camera_id: str) -> CameraStatus:
        """One camera's status; UnknownCameraError when absent."""
        return self.cameras.get(camera_id).status()

    def match_status(self) -> MatchStatus:
        """tau, the gallery size it was chosen for and the identities enrolled now; the first
        time the gallery is seen past that size, a warning is logged (once per process)."""
        match = self.config.recognition.match
        status = MatchStatus(
            tau=match.max_distance,
            gallery_size=match.gallery_size,
            identities=self.services.gallery.identity_count,
        )
        if status.outgrown and not self._outgrown_logged:
            self._outgrown_logged = True
            _log.warning(
                "the gallery holds %d identities but tau %.4f was chosen for %d: strangers now "
                "match someone more often than calibrated; run `facestream calibrate threshold "
                "--target-fpir X --gallery-size N` for the new size",
                status.identities,
                status.tau,
                status.gallery_size,
            )
        return status

    def remove_camera(self, camera_id: str) -> None:
        """Stop and forget a camera; UnknownCameraError when absent."""
        with self._cameras_lock:
            self.cameras.remove(camera_id)
            self.preview.remove(camera_id)

    def camera_statuses(self) -> list[CameraStatus]:
        """A status snapshot of every camera, by id."""
        return [camera.status() for camera in sorted(self.cameras, key=lambda c: c.camera_id)]

    def readiness(self) -> Readiness:
        """Check Redis (PING; on a Cluster, every master), the engines and the recognition
        worker."""
        detail = None
        redis_problem_now = redis_problem(self.services.redis)  # a Cluster: every master
        redis_ok = redis_problem_now is None
        if redis_problem_now is not None:
            detail = redis_problem_now
        engines = {"encoder": self.services.engine.backend}
        recognition = self.recognition.running
        failing_seconds = self.recognition.failing_seconds
        if not recognition:
            detail = "recognition worker is not running"
        elif failing_seconds > UNHEALTHY_AFTER_SECONDS:  # alive, but nothing gets through
            recognition = False
            detail = f"recognition has been failing for {failing_seconds:.0f} s (see the log)"
        return Readiness(
            redis=redis_ok,
            engines=engines,
            recognition=recognition,
            cameras={status.camera_id: status.state for status in self.camera_statuses()},
            sinks={} if self.mqtt is None else {"mqtt": self.mqtt.connected},
            detail=detail,
            shard=self.shard_status(),
        )

    def shard_status(self) -> ShardStatus:
        """This worker's shard and the configured cameras other shards run."""
        return self.shard.status(camera.id for camera in self.config.capture.cameras)

    def require_ready(self) -> None:
        """Raise ServiceNotReadyError naming the problem unless ``readiness().ready``."""
        readiness = self.readiness()
        if not readiness.ready:
            raise ServiceNotReadyError(readiness.detail or "the service is not ready")

    def _decided(self, decision: Decision) -> None:
        try:
            self.recorder.record(decision)
        except (AuditLogError, AuditLogCorruptError, AuditEventError):
            # not audited means not announced (record appends before it publishes): a door
            # controller must never act on a decision the log does not hold, so the door stays
            # shut; the operator sees this line and the metric. A log damaged by an earlier
            # failed write refuses every append until it is dealt with and the service
            # restarted; an unencodable decision is a bug. Neither of those two is an OSError
            # like AuditLogError (they are ValueErrors by design), hence three classes here.
            _log.exception(
                "decision %s on door %s (camera %s) not audited, so not announced: the door "
                "does not act on it",
                decision.outcome,
                decision.door_id,
                decision.camera_id,
            )
            self.services.metrics.events_store_errors.labels(operation="audit").inc()
            return
        self.access.decided(decision)  # audited: a grant may now reach the door's panel
        try:
            self.feedback_store.remember(decision)
        except GalleryUnavailableError as exc:
            _log.warning("decision %s cannot be corrected later: %s", decision.event_id, exc)

    def _camera_changed(self, status: CameraStatus, previous: CameraState) -> None:
        kind: EventKind
        if status.state == "up":
            kind = "camera_up"
        elif status.state in _DOWN_STATES and previous == "up":
            kind = "camera_down"
        else:
            return
        payload: dict[str, JsonValue] = {
            "camera_id": status.camera_id,
            "state": status.state,
            "previous_state": previous,
            "backend": status.backend,
            "reconnects": status.reconnects,
            "last_error": status.last_error if kind == "camera_down" else None,
        }
        self.recorder.publish(Event.create(kind, status.camera_id, payload))


@contextmanager
def run_service(
    config: FaceStreamConfig,
    *,
    redis_dir: Path | None = None,
    source_factory: SourceFactory = make_source,
) -> Iterator[FaceStreamService]:
    """Start the service for ``config`` (cameras of ``[capture]`` included); stop it on exit.

    redis_dir: where an embedded Redis keeps its data (default data_dir/redis).
    Raises AuditLogError when the audit log cannot be opened or its last line is damaged.
    """
    with ExitStack() as stack:
        services = stack.enter_context(open_services(config, redis_dir=redis_dir))
        audit_path = config.audit_path
        try:
            audit_path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise AuditLogError(f"audit log {audit_path}: cannot create its folder: {exc}") from exc
        audit = AuditLog(audit_path, key=config.audit.key_bytes)
        stack.callback(audit.close)
        if config.audit.key_bytes is None:
            _log.warning(
                "audit log %s has no key (audit.key, FACESTREAM_AUDIT_KEY): whoever can write "
                "it can rewrite it and recompute its hashes unseen",
                audit_path,
            )
        if audit.damage is not None:
            raise AuditLogError(
                f"audit log {audit_path}: {audit.damage}; run `facestream audit verify` and "
                "move the damaged file aside before starting"
            )
        # with signed MQTT, the bridge signs only stream entries that carry this MAC
        entry_key = config.mqtt.stream_entry_key if config.mqtt.url is not None else None
        bus = EventBus(services.redis, config.events, services.metrics, entry_key=entry_key)
        recorder = DecisionRecorder(
            audit,
            bus,
            metrics=services.metrics,
            checkpoint_seconds=config.audit.checkpoint_interval_seconds,
        )
        recorder.start()
        stack.callback(recorder.stop)
        if config.events.receivers:
            stack.enter_context(WebhookDeliverer(services.redis, config.events, services.metrics))
        api = config.api
        preview = PreviewHub(
            services.metrics,
            max_fps=api.preview_max_fps,
            jpeg_quality=api.preview_jpeg_quality,
            max_clients=api.preview_max_clients,
        )
        stack.callback(preview.close)
        mqtt = None
        if config.mqtt.url is not None:
            mqtt = MqttBridge(
                services.redis,
                bus,
                config.mqtt,
                services.metrics,
                doors=[door.id for door in config.doors],
                cameras=[camera.id for camera in config.capture.cameras],
            )
            mqtt.start()
            stack.callback(mqtt.stop)
        service = FaceStreamService(
            services,
            bus=bus,
            recorder=recorder,
            preview=preview,
            source_factory=source_factory,
            mqtt=mqtt,
        )
        stack.callback(service.stop)
        service.start()
        _log.info(
            "service running: %d camera(s), %d door(s), audit log %s",
            len(config.capture.cameras),
            len(config.doors),
            audit_path,
        )
        yield service
