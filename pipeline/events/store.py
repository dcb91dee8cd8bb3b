"""Where events live in Redis: the keys, the outbox record (with its MAC), and redis-py's
errors in the project's terms. Shared by the bus (which writes) and the deliverer (which claims).

Keys (all share the hash tag ``{namespace}``, one Redis Cluster slot)::

    fs:{events}:stream               stream  field "event" -> the event's JSON; field "mac" ->
                                     HMAC of it when the bus has an entry key (MQTT signing)
    fs:{events}:published:<event id> string  set on publish (expires): a retried publish of the
                                     same event is a no-op
    fs:{events}:outbox               zset    delivery id -> next attempt (unix seconds)
    fs:{events}:deliveries           hash    delivery id -> JSON {webhook, event, expires_at,
                                     mac} (expires_at: unix seconds, or null: never)
    fs:{events}:attempts             hash    delivery id -> attempts started
    fs:{events}:claims               hash    delivery id -> token of the current claim
    fs:{events}:dead                 list    JSON {delivery_id, url, attempts, last_error,
                                     dead_at, event}, newest first, capped

A delivery id is ``<event id>:<webhook key>``.

An outbox record is trusted only when its ``mac`` (HMAC-SHA256 over delivery id, expiry and
event, under ``Webhook.outbox_key``, a key derived from the webhook's secret and not in Redis)
matches: see ``pipeline.events.webhooks``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeAlias

from pipeline.errors import EventFormatError, EventStoreError, EventsUnavailableError
from pipeline.events.config import Webhook
from pipeline.redis.cluster import RedisClient
from pipeline.redis.errors import translated_redis_errors
from pipeline.redis.ha import redis_location
from pipeline.types import Event

__all__ = [
    "EventKeys",
    "StreamEntries",
    "delivery_id_for",
    "event_or_none",
    "outbox_record",
    "record_mac",
    "redis_address",
    "talking_to_redis",
]

StreamEntries: TypeAlias = list[tuple[bytes, dict[bytes, bytes]]]
"""A stream's entries as XRANGE/XREAD return them with bytes responses: (id, {field: value})."""


@dataclass(frozen=True, slots=True)
class EventKeys:
    """The Redis keys of one events namespace (module docstring)."""

    stream: str
    published_prefix: str
    outbox: str
    deliveries: str
    attempts: str
    claims: str
    dead: str

    @classmethod
    def of(cls, namespace: str) -> EventKeys:
        """The keys under hash tag ``{namespace}``."""
        prefix = f"fs:{{{namespace}}}:"
        return cls(
            stream=prefix + "stream",
            published_prefix=prefix + "published:",
            outbox=prefix + "outbox",
            deliveries=prefix + "deliveries",
            attempts=prefix + "attempts",
            claims=prefix + "claims",
            dead=prefix + "dead",
        )


def redis_address(client: RedisClient) -> str:
    """Where ``client`` connects (socket path, host:port, Sentinel master or Cluster seed
    nodes), for error messages."""
    return redis_location(client)


@contextmanager
def talking_to_redis(action: str, where: str) -> Iterator[None]:
    """Turn redis-py errors into the events' errors, naming what was being done."""
    with translated_redis_errors(
        f"events: cannot {action}",
        where,
        unavailable=EventsUnavailableError,
        refused=EventStoreError,
    ):
        yield


def delivery_id_for(event_id: str, webhook: Webhook) -> str:
    """The outbox id of one event's delivery to one webhook."""
    return f"{event_id}:{webhook.key}"


def outbox_record(delivery_id: str, webhook: Webhook, body: bytes, expires_at: float | None) -> str:
    """The JSON of an outbox record, with its MAC under the webhook's outbox key."""
    return json.dumps(
        {
            "webhook": webhook.key,
            "event": body.decode(),
            "expires_at": expires_at,
            "mac": record_mac(webhook.outbox_key, delivery_id, body, expires_at),
        }
    )


def record_mac(key: bytes, delivery_id: str, body: bytes, expires_at: float | None) -> str:
    """The hex HMAC-SHA256 of an outbox record under ``key`` (``Webhook.outbox_key``)."""
    # delivery id (event id and webhook key), expiry and body, unambiguously delimited: the
    # first two hold no newline and the body is last
    signed = f"{delivery_id}\n{json.dumps(expires_at)}\n".encode() + body
    return hmac.new(key, signed, hashlib.sha256).hexdigest()


def event_or_none(body: object) -> Event | None:
    """The event of a stored JSON text (str or bytes), or None when it is not one."""
    try:
        return Event.from_json(body) if isinstance(body, str | bytes) else None
    except EventFormatError:
        return None
