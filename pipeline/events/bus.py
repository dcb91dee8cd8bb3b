"""The event bus: a Redis stream for consumers, and a durable outbox for the webhooks.

``EventBus.publish`` writes one event in one MULTI/EXEC transaction: the stream entry (XADD,
``MAXLEN ~``) and, for each configured webhook that takes the event (its ``doors``), a delivery
in the outbox. Once ``publish`` returns, the event is in Redis (and in its AOF): a crash of this
process loses nothing, and a consumer group reads each stream entry once (XREADGROUP, then XACK).
A granted decision's deliveries expire ``grant_expiry_seconds`` after the decision (a door must
not open late); ``pipeline.events.webhooks`` delivers the outbox. The keys are drawn in
``pipeline.events.store``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final, cast

from pipeline.errors import EventFormatError, EventStoreError, EventsUnavailableError
from pipeline.events.config import EventsConfig
from pipeline.events.purge import PurgeReport, purge_identity
from pipeline.events.signing import stream_entry_mac
from pipeline.events.store import (
    EventKeys,
    StreamEntries,
    delivery_id_for,
    event_or_none,
    outbox_record,
    redis_address,
    talking_to_redis,
)
from pipeline.metrics import PipelineMetrics
from pipeline.redis.cluster import RedisClient, RedisPipeline
from pipeline.types import EVENT_STREAM_FIELD, Event

__all__ = ["DeadLetter", "EventBus"]

LOGGER = logging.getLogger(__name__)

_STREAM_MAC_FIELD: Final = b"mac"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A webhook delivery given up after its last attempt, or refused (dead_at: unix seconds).

    url: the configured url ("" when the record named no configured webhook); event: None when
    the record's event could not be read (a forged or damaged record).
    """

    delivery_id: str
    url: str
    attempts: int
    last_error: str
    dead_at: float
    event: Event | None


class EventBus:
    """Publishes events to the Redis stream and queues them for every configured webhook."""

    def __init__(
        self,
        client: RedisClient,
        config: EventsConfig,
        metrics: PipelineMetrics,
        *,
        entry_key: bytes | None = None,
    ) -> None:
        """Use ``client`` (bytes responses, e.g. ``pipeline.gallery.store.connect``) for ``config``.

        entry_key: when given, each stream entry carries ``stream_entry_mac(entry_key, body)``
        in its ``mac`` field (the MQTT bridge signs only entries that carry a good one).
        """
        self._client = client
        self._config = config
        self._metrics = metrics
        self._keys = EventKeys.of(config.namespace)
        self._where = redis_address(client)
        self._entry_key = entry_key

    @property
    def stream_key(self) -> str:
        """The Redis stream's key, for XREADGROUP consumers."""
        return self._keys.stream

    def publish(self, event: Event) -> str | None:
        """Write ``event`` to the stream and the webhook outbox in one MULTI/EXEC.

        Returns the stream entry id, or None when this event id was already published (a
        retried publish writes nothing). Raises EventsUnavailableError when Redis cannot be
        reached (the event may or may not have been written: publishing it again is safe) and
        EventStoreError when Redis refuses.
        """
        try:
            entry_id = self._publish(event)
        except (EventsUnavailableError, EventStoreError):
            self._metrics.events_store_errors.labels(operation="publish").inc()
            raise
        if entry_id is not None:
            self._metrics.events_published.labels(kind=event.kind).inc()
        return entry_id

    def _publish(self, event: Event) -> str | None:
        body = event.to_json()
        published_key = self._keys.published_prefix + event.event_id
        now = time.time()
        expires_at = self._delivery_expiry(event)

        def transaction(pipe: RedisPipeline) -> None:
            # under WATCH: a read is immediate; writes are queued after multi()
            if pipe.exists(published_key):
                return  # queue nothing: EXEC returns no replies
            pipe.multi()
            pipe.set(published_key, b"1", ex=self._config.dedupe_ttl_seconds)
            fields = {EVENT_STREAM_FIELD: body}
            if self._entry_key is not None:
                fields[_STREAM_MAC_FIELD] = stream_entry_mac(self._entry_key, body)
            pipe.xadd(
                self._keys.stream,
                fields,  # type: ignore[arg-type]  # redis-py types the fields too narrowly
                maxlen=self._config.stream_maxlen,
                approximate=True,
            )
            for webhook in self._config.receivers:
                if not webhook.takes(event):
                    continue
                delivery_id = delivery_id_for(event.event_id, webhook)
                record = outbox_record(delivery_id, webhook, body, expires_at)
                pipe.hset(self._keys.deliveries, delivery_id, record)
                pipe.zadd(self._keys.outbox, {delivery_id: now})

        with talking_to_redis(f"publish event {event.event_id}", self._where):
            replies = self._client.transaction(transaction, published_key)
        if not replies:  # nothing was queued: the event id was already published
            LOGGER.debug("event %s was already published", event.event_id)
            return None
        entry_id = replies[1]
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    def _delivery_expiry(self, event: Event) -> float | None:
        """When ``event``'s webhook deliveries expire (unix seconds): grants only, counted from
        the decision, since a door opened late lets in whoever stands there then."""
        expiry_seconds = self._config.grant_expiry_seconds
        if (
            expiry_seconds is None
            or event.kind != "decision"
            or event.payload.get("outcome") != "granted"
        ):
            return None
        return event.created + expiry_seconds

    def recent(self, count: int = 100, *, kind: str | None = None) -> tuple[Event, ...]:
        """The newest ``count`` events of the stream (of one ``kind`` when given), newest first.

        With a kind, up to ten times ``count`` of the newest entries are scanned for it.
        """
        scan = count if kind is None else count * 10
        with talking_to_redis("read recent events", self._where):
            entries = self._client.xrevrange(self._keys.stream, count=scan)
        events: list[Event] = []
        # with bytes responses (see ``connect``) each entry is (id, {field: value}) in bytes
        for entry_id, fields in cast(StreamEntries, entries or []):
            try:
                event = Event.from_stream_fields(fields)
            except EventFormatError as exc:
                LOGGER.warning("event stream entry %r skipped: %s", entry_id, exc)
                continue
            if kind is None or event.kind == kind:
                events.append(event)
            if len(events) == count:
                break
        return tuple(events)

    def follow(self, *, kind: str | None = None, block_seconds: float = 1.0) -> Iterator[Event]:
        """Events added to the stream from now on (of one ``kind`` when given), as they come;
        endless. Raises EventsUnavailableError when Redis goes away."""
        last_id: bytes | str = "$"
        while True:
            with talking_to_redis("follow events", self._where):
                reply = self._client.xread(
                    {self._keys.stream: last_id}, block=round(block_seconds * 1000), count=100
                )
            for _stream, entries in cast(list[tuple[bytes, StreamEntries]], reply or []):
                for entry_id, fields in entries:
                    last_id = entry_id
                    try:
                        event = Event.from_stream_fields(fields)
                    except EventFormatError as exc:
                        LOGGER.warning("event stream entry %r skipped: %s", entry_id, exc)
                        continue
                    if kind is None or event.kind == kind:
                        yield event

    def pending_deliveries(self) -> int:
        """Webhook deliveries in the outbox (due, backing off or being attempted)."""
        with talking_to_redis("count pending deliveries", self._where):
            return int(self._client.zcard(self._keys.outbox))

    def dead_letters(self, count: int = 100) -> tuple[DeadLetter, ...]:
        """The newest ``count`` dead-lettered deliveries, newest first."""
        with talking_to_redis("read dead letters", self._where):
            records = self._client.lrange(self._keys.dead, 0, count - 1)
        letters: list[DeadLetter] = []
        for record in records:
            try:
                fields = json.loads(record)
                letters.append(
                    DeadLetter(
                        delivery_id=str(fields["delivery_id"]),
                        url=str(fields["url"]),
                        attempts=int(fields["attempts"]),
                        last_error=str(fields["last_error"]),
                        dead_at=float(fields["dead_at"]),
                        event=event_or_none(fields["event"]),
                    )
                )
            except (ValueError, KeyError, TypeError) as exc:
                raise EventStoreError(
                    f"events: dead-letter record in {self._keys.dead} is malformed: {exc}"
                ) from exc
        return tuple(letters)

    def purge_identity(self, identity_id: str) -> PurgeReport:
        """Remove what Redis holds about a deleted identity: the stream entries, the pending
        deliveries and the dead letters whose event names it (``payload.identity_id``).

        The audit log is not touched (see docs/security.md: its new lines hold ids only).
        Entries written while this runs may be missed: call it after the identity is gone
        from the gallery, when no new event can name it.
        """
        with talking_to_redis(f"purge identity {identity_id}", self._where):
            return purge_identity(self._client, self._keys, identity_id)
