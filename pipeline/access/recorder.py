"""Where door decisions go: the audit log first (local, fsynced), then the event bus.

A decision is appended to the hash-chained audit log before it is published, so a decision
that was acted upon is always on disk. Publishing is retried: events that could not reach
Redis wait in a bounded in-memory queue (oldest first) and are published again, with the same
event id, before the next decision; since ``EventBus.publish`` deduplicates by id, a retry
never doubles an event. Events still waiting at shutdown, or pushed out of a full queue, are
lost to the stream (and so to MQTT and the webhooks): each is logged and counted in
``facestream_events_unpublished_dropped_total``; decisions among them stay in the audit log.

Anchoring the audit log: each decision event carries ``audit_seq`` and ``audit_head`` (the seq
and SHA-256 of its audit line), and every ``checkpoint_seconds`` the publisher thread publishes
an ``audit_checkpoint`` event ``{audit_seq, audit_head, mac}`` (MAC under the audit key), so
copies of the head live in Redis, in MQTT and at every webhook receiver that takes doorless
events: ``facestream audit verify --expect-head SEQ:DIGEST`` then tells a log cut short or
replaced. An audit line holds the identity id, never the name (see pipeline.access.audit).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Mapping

from pipeline.access.audit import AuditLog, AuditRecord
from pipeline.errors import EventStoreError, EventsUnavailableError
from pipeline.events.bus import EventBus
from pipeline.metrics import PipelineMetrics
from pipeline.types import Decision, Event, EventKind, JsonValue

__all__ = ["DecisionRecorder", "audit_entry", "decision_event"]

_log = logging.getLogger(__name__)
_KINDS: dict[str, EventKind] = {
    "granted": "decision",
    "denied": "decision",
    "unknown": "unknown_face",
    "spoof_suspected": "spoof_suspected",
}


def decision_event(
    decision: Decision, audited: AuditRecord | None = None, *, event_id: str | None = None
) -> Event:
    """The event announcing ``decision`` (kind: decision, unknown_face or spoof_suspected);
    with ``audited`` (its audit line), the payload carries ``audit_seq`` and ``audit_head``."""
    payload: dict[str, JsonValue] = decision.announced()
    if audited is not None:
        payload["audit_seq"] = audited.seq
        payload["audit_head"] = audited.digest
    return Event(
        event_id=event_id or decision.event_id,
        kind=_KINDS[decision.outcome],
        camera_id=decision.camera_id,
        created=decision.at,
        payload=payload,
    )


def audit_entry(event_id: str, decision: Decision) -> dict[str, object]:
    """What the audit log keeps of a decision: everything but the person's name (the id
    stays; a name in a log that cannot be rewritten could never be erased)."""
    entry: dict[str, object] = {**decision.announced(), "event_id": event_id}
    del entry["name"]
    return entry


class DecisionRecorder:
    """Audits and publishes decisions; ``record`` is the ``on_decision`` of live recognition.

    Other events (camera up/down) go through ``publish``, which shares the retry queue, so all
    events reach the stream in the order they happened. Thread-safe. Without ``start`` the
    caller publishes inline; after ``start`` a background thread publishes, so a recognition
    thread never waits on an unreachable Redis (it retries every ``retry_seconds``).

    max_unpublished: events kept for retry while Redis is away; beyond it the oldest is dropped
    from the retry queue (a decision stays in the audit log) and a warning is logged.
    metrics: where the retry queue's length (``facestream_events_unpublished``) and the events
    dropped unpublished (``facestream_events_unpublished_dropped_total``) are exported.
    checkpoint_seconds: how often the publisher thread publishes the audit head as an
    ``audit_checkpoint`` event (None: never; ``publish_checkpoint`` does it on demand).
    """

    def __init__(
        self,
        audit: AuditLog,
        bus: EventBus,
        *,
        max_unpublished: int = 10_000,
        metrics: PipelineMetrics | None = None,
        retry_seconds: float = 1.0,
        checkpoint_seconds: float | None = None,
    ) -> None:
        self._audit = audit
        self._bus = bus
        self._unpublished: deque[Event] = deque(maxlen=max_unpublished)
        self._gauge = None if metrics is None else metrics.events_unpublished
        self._dropped = None if metrics is None else metrics.events_unpublished_dropped
        self._lock = threading.Lock()  # guards the queue and the audit log's order
        self._flush_lock = threading.Lock()  # one publisher at a time keeps events in order
        self._retry_seconds = retry_seconds
        self._checkpoint_seconds = checkpoint_seconds
        self._last_checkpoint = float("-inf")  # monotonic seconds
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Publish from a background thread from now on (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="events-publisher", daemon=True)
            self._thread.start()

    def stop(self, timeout_seconds: float = 10.0) -> None:
        """Stop the background thread after one last attempt to publish the backlog; what
        still waits then is dropped, logged and counted (decisions stay in the audit log)."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stopping.set()
            self._wake.set()
            thread.join(timeout_seconds)
        self.flush()
        with self._lock:
            left = [event.event_id for event in self._unpublished]
            self._unpublished.clear()
        if left:
            _log.warning(
                "%d events never reached Redis and are dropped at shutdown, the oldest %s "
                "(decisions among them stay in the audit log, under their event ids)",
                len(left),
                left[0],
            )
            if self._dropped is not None:
                self._dropped.labels(reason="shutdown").inc(len(left))
            if self._gauge is not None:
                self._gauge.set(0)

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self._retry_seconds)
            self._wake.clear()
            if (
                self._checkpoint_seconds is not None
                and time.monotonic() - self._last_checkpoint >= self._checkpoint_seconds
            ):
                self.publish_checkpoint()
            self.flush()

    def publish_checkpoint(self) -> Event:
        """Queue an ``audit_checkpoint`` event stating the audit head (with its MAC under the
        audit key when the log has one); returns it."""
        self._last_checkpoint = time.monotonic()
        with self._lock:
            checkpoint = self._audit.checkpoint()
            event = Event.create(
                "audit_checkpoint",
                "audit",
                {
                    "audit_seq": checkpoint.seq,
                    "audit_head": checkpoint.digest,
                    "mac": checkpoint.mac,
                },
            )
            self._enqueue(event)
        self._publish_soon()
        return event

    def _publish_soon(self) -> None:
        if self._thread is None:
            self.flush()
        else:
            self._wake.set()

    @property
    def unpublished(self) -> int:
        """Events waiting for Redis to come back."""
        with self._lock:
            return len(self._unpublished)

    def record(self, decision: Decision) -> Event:
        """Append ``decision`` to the audit log, then publish it (and any earlier backlog);
        returns the event that announces it (under the decision's event id)."""
        event_id = decision.event_id
        with self._lock:
            audited = self._audit.append(audit_entry(event_id, decision))
            event = decision_event(decision, audited, event_id=event_id)
            self._enqueue(event)
        self._publish_soon()
        return event

    def record_feedback(self, entry: Mapping[str, JsonValue], camera_id: str) -> Event:
        """Append an operator's feedback on a decision to the audit log, then publish it as a
        ``decision_feedback`` event; ``entry`` names ids only (no names, no encodings)."""
        event = Event.create("decision_feedback", camera_id, dict(entry))
        with self._lock:
            audited = self._audit.append({"event_id": event.event_id, **entry})
            payload = {**entry, "audit_seq": audited.seq, "audit_head": audited.digest}
            event = Event(event.event_id, event.kind, event.camera_id, event.created, payload)
            self._enqueue(event)
        self._publish_soon()
        return event

    def publish(self, event: Event) -> None:
        """Publish an event that is not a decision (after any earlier backlog)."""
        with self._lock:
            self._enqueue(event)
        self._publish_soon()

    def flush(self) -> None:
        """Publish waiting events in order; stop at the first that Redis does not take.

        The queue lock is not held while Redis is called, so ``record`` never waits on it.
        """
        with self._flush_lock:
            while True:
                with self._lock:
                    if not self._unpublished:
                        break
                    event = self._unpublished[0]
                try:
                    self._bus.publish(event)
                except (EventsUnavailableError, EventStoreError) as exc:
                    _log.warning("%d events wait for Redis: %s", self.unpublished, exc)
                    break
                with self._lock:
                    if self._unpublished and self._unpublished[0] is event:
                        self._unpublished.popleft()
            if self._gauge is not None:
                self._gauge.set(self.unpublished)

    def _enqueue(self, event: Event) -> None:
        if len(self._unpublished) == self._unpublished.maxlen:
            _log.warning(
                "event retry queue full: event %s is dropped from it (a decision stays in the "
                "audit log)",
                self._unpublished[0].event_id,
            )
            if self._dropped is not None:
                self._dropped.labels(reason="queue_full").inc()
        self._unpublished.append(event)
