"""Erasure: remove what the events' Redis keys hold about a deleted identity.

Stream entries, pending webhook deliveries and dead letters whose event names the identity
(``payload.identity_id``) are deleted; the audit log is not touched (see docs/security.md: its
new lines hold ids only). ``EventBus.purge_identity`` calls this and translates Redis errors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import cast

from pipeline.events.store import EventKeys, StreamEntries, event_or_none
from pipeline.redis.cluster import RedisClient
from pipeline.types import EVENT_STREAM_FIELD

__all__ = ["PurgeReport", "purge_identity"]


@dataclass(frozen=True, slots=True)
class PurgeReport:
    """What ``EventBus.purge_identity`` removed: stream entries, pending deliveries and
    dead letters about the identity."""

    stream_entries: int
    deliveries: int
    dead_letters: int


def purge_identity(client: RedisClient, keys: EventKeys, identity_id: str) -> PurgeReport:
    """Delete the stream entries, deliveries and dead letters under ``keys`` that name
    ``identity_id``; redis-py errors pass through (the caller names what failed)."""
    return PurgeReport(
        stream_entries=_purge_stream(client, keys, identity_id),
        deliveries=_purge_deliveries(client, keys, identity_id),
        dead_letters=_purge_dead_letters(client, keys, identity_id),
    )


def _purge_stream(client: RedisClient, keys: EventKeys, identity_id: str) -> int:
    removed = 0
    start: bytes | str = "-"
    while True:
        entries = cast(StreamEntries, client.xrange(keys.stream, min=start, count=500))
        if not entries:
            return removed
        doomed = [
            entry_id
            for entry_id, fields in entries
            if _names(fields.get(EVENT_STREAM_FIELD), identity_id)
        ]
        if doomed:
            removed += int(client.xdel(keys.stream, *doomed))
        last = entries[-1][0].decode()
        milliseconds, _, sequence = last.partition("-")
        start = f"{milliseconds}-{int(sequence) + 1}"  # exclusive of the last one read


def _purge_deliveries(client: RedisClient, keys: EventKeys, identity_id: str) -> int:
    doomed = []
    for delivery_id, record in client.hscan_iter(keys.deliveries, count=500):
        try:
            body = json.loads(record).get("event")
        except (ValueError, AttributeError):
            continue
        if _names(body, identity_id):
            doomed.append(delivery_id)
    if doomed:
        pipe = client.pipeline()
        pipe.hdel(keys.deliveries, *doomed)
        pipe.zrem(keys.outbox, *doomed)
        pipe.hdel(keys.attempts, *doomed)
        pipe.hdel(keys.claims, *doomed)
        pipe.execute()
    return len(doomed)


def _purge_dead_letters(client: RedisClient, keys: EventKeys, identity_id: str) -> int:
    removed = 0
    for record in client.lrange(keys.dead, 0, -1):
        try:
            body = json.loads(record).get("event")
        except (ValueError, AttributeError):
            continue
        if _names(body, identity_id):
            removed += int(client.lrem(keys.dead, 1, cast(str, record)))
    return removed


def _names(body: object, identity_id: str) -> bool:
    """Whether an event's JSON (str or bytes) is about ``identity_id``."""
    event = event_or_none(body)
    return event is not None and event.payload.get("identity_id") == identity_id
