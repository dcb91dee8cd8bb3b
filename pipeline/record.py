"""Where door decisions go: the audit log first (local, fsynced), then the event bus.

A decision is appended to the hash-chained audit log before it is published, so a decision
that was acted upon is always on disk. Publishing is retried: events that could not reach
Redis wait in a bounded in-memory queue (oldest first) and are published again, with the same
event id, before the next decision; since ``EventBus.publish`` deduplicates by id, a retry
never doubles an event.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import asdict

from pipeline.audit import AuditLog
from pipeline.decide import Decision
from pipeline.errors import EventStoreError, EventsUnavailableError
from pipeline.events import Event, EventBus, EventKind

__all__ = ["DecisionRecorder", "decision_event"]

_log = logging.getLogger(__name__)
_KINDS: dict[str, EventKind] = {
    "granted": "decision",
    "denied": "decision",
    "unknown": "unknown_face",
    "spoof_suspected": "spoof_suspected",
}


def decision_event(decision: Decision) -> Event:
    """The event announcing ``decision`` (kind: decision, unknown_face or spoof_suspected)."""
    return Event.create(
        _KINDS[decision.outcome], decision.camera_id, asdict(decision), created=decision.at
    )


class DecisionRecorder:
    """Audits and publishes decisions; ``record`` is the ``on_decision`` of live recognition.

    max_unpublished: events kept for retry while Redis is away; beyond it the oldest is dropped
    from the retry queue (it stays in the audit log) and a warning is logged.
    """

    def __init__(self, audit: AuditLog, bus: EventBus, *, max_unpublished: int = 10_000) -> None:
        self._audit = audit
        self._bus = bus
        self._unpublished: deque[Event] = deque(maxlen=max_unpublished)

    @property
    def unpublished(self) -> int:
        """Events waiting for Redis to come back."""
        return len(self._unpublished)

    def record(self, decision: Decision) -> None:
        """Append ``decision`` to the audit log, then publish it (and any earlier backlog)."""
        event = decision_event(decision)
        self._audit.append({"event_id": event.event_id, **asdict(decision)})
        if len(self._unpublished) == self._unpublished.maxlen:
            _log.warning(
                "event retry queue full: event %s is only in the audit log",
                self._unpublished[0].event_id,
            )
        self._unpublished.append(event)
        self.flush()

    def flush(self) -> None:
        """Publish waiting events in order; stop at the first that Redis does not take."""
        while self._unpublished:
            try:
                self._bus.publish(self._unpublished[0])
            except (EventsUnavailableError, EventStoreError) as exc:
                _log.warning("%d events wait for Redis: %s", len(self._unpublished), exc)
                return
            self._unpublished.popleft()
