"""Events: a Redis stream for consumers, and signed webhooks delivered from a durable outbox.

``EventBus.publish`` writes one event in one MULTI/EXEC transaction: the stream entry (XADD,
``MAXLEN ~``) and, for each configured webhook, a delivery in the outbox. Once ``publish``
returns, the event is in Redis (and in its AOF): a crash of this process loses nothing, and a
consumer group reads each stream entry once (XREADGROUP, then XACK).

``WebhookDeliverer`` is a background thread that claims due deliveries one at a time and POSTs
each event's JSON with its signature. A claim is a Lua script that moves the delivery's due
time a lease into the future and records a claim token, so two processes never work on the
same attempt; a delivery whose process died is claimed again when its lease runs out. Failed
attempts are rescheduled with capped exponential backoff and jitter; after the last attempt a
delivery moves to the dead-letter list. Each POST has one deadline as a whole
(``request_timeout_seconds``; httpx's own timeouts bound each network step only, so a receiver
dripping its reply would hold the thread). Webhook delivery is at least once: a receiver
dedupes by the ``event_id`` in the signed body (``X-Facestream-Event-Id`` repeats it, unsigned).

A granted decision is only useful while the person is at the door: its deliveries expire
``grant_expiry_seconds`` after the decision (``created``). An expired delivery is not POSTed;
it moves to the dead-letter list (``last_error`` says expired), whether it waited in retries,
in the outbox while the deliverer was down, or in ``DecisionRecorder``'s queue while Redis was.
Receivers should check the decision's age too (``deploy/examples/door_controller.py``).

Keys (all share the hash tag ``{namespace}``, one Redis Cluster slot)::

    fs:{events}:stream               stream  field "event" -> the event's JSON
    fs:{events}:published:<event id> string  set on publish (expires): a retried publish of the
                                     same event is a no-op
    fs:{events}:outbox               zset    delivery id -> next attempt (unix seconds)
    fs:{events}:deliveries           hash    delivery id -> JSON {url, event, expires_at}
                                     (expires_at: unix seconds, or null: never)
    fs:{events}:attempts             hash    delivery id -> attempts started
    fs:{events}:claims               hash    delivery id -> token of the current claim
    fs:{events}:dead                 list    JSON {delivery_id, url, attempts, last_error,
                                     dead_at, event}, newest first, capped

A delivery id is ``<event id>:<first 16 hex of sha256(url)>``.

Webhook requests carry ``X-Facestream-Timestamp`` (unix seconds), ``X-Facestream-Event-Id``
and ``X-Facestream-Signature``: hex HMAC-SHA256 of ``f"{timestamp}.{body}"`` under the shared
secret. Receivers check them with ``verify_signature``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import math
import random
import re
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import MappingProxyType, TracebackType
from typing import Final, Literal, TypeAlias, cast, get_args

import httpx
import redis
from pydantic import Field, SecretStr, field_validator, model_validator
from redis.client import Pipeline

from pipeline.configbase import StrictModel
from pipeline.errors import (
    EventFormatError,
    EventStoreError,
    EventsUnavailableError,
    WebhookSignatureError,
)
from pipeline.metrics import PipelineMetrics

__all__ = [
    "EVENT_ID_HEADER",
    "EVENT_KINDS",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "DeadLetter",
    "Event",
    "EventBus",
    "EventKind",
    "EventsConfig",
    "JsonValue",
    "WebhookDeliverer",
    "sign",
    "verify_signature",
]

LOGGER = logging.getLogger(__name__)

EventKind = Literal["decision", "unknown_face", "spoof_suspected", "camera_down", "camera_up"]
EVENT_KINDS: Final[tuple[str, ...]] = get_args(EventKind)
JsonValue: TypeAlias = (
    "str | int | float | bool | Sequence[JsonValue] | Mapping[str, JsonValue] | None"
)

TIMESTAMP_HEADER: Final = "X-Facestream-Timestamp"
SIGNATURE_HEADER: Final = "X-Facestream-Signature"
EVENT_ID_HEADER: Final = "X-Facestream-Event-Id"

_EVENT_ID = re.compile(r"^[0-9a-f]{32}$")
_CAMERA_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_MAX_EVENT_BYTES: Final = 1 << 20
_MAX_PAYLOAD_DEPTH: Final = 16
_SIGNATURE = re.compile(r"^[0-9a-f]{64}$")
_STREAM_FIELD: Final = b"event"
_MIN_SECRET_CHARS: Final = 16

# Claim the earliest due delivery: push its due time a lease ahead, record the claim token and
# count the attempt, all atomically, so no other process can claim it until the lease ends.
# KEYS: outbox, claims, attempts, deliveries; ARGV: now, lease end, token.
# Returns {delivery id, attempt, record} or nil when nothing is due.
_CLAIM_SCRIPT: Final = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 1)
if #due == 0 then return nil end
local id = due[1]
redis.call('ZADD', KEYS[1], ARGV[2], id)
redis.call('HSET', KEYS[2], id, ARGV[3])
local attempt = redis.call('HINCRBY', KEYS[3], id, 1)
local record = redis.call('HGET', KEYS[4], id)
return {id, attempt, record or ''}
"""
# Settle a claimed delivery, only while the claim is still ours (its lease may have ended and
# another process may hold it now). KEYS: outbox, claims, attempts, deliveries, dead;
# ARGV: delivery id, token, action ('done' | 'retry' | 'dead'), due time or dead record,
# dead-letter list length. Returns 1 when settled, 0 when the claim was lost.
_SETTLE_SCRIPT: Final = """
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[2], ARGV[1])
if ARGV[3] == 'retry' then
  redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])
  return 1
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])
if ARGV[3] == 'dead' then
  redis.call('LPUSH', KEYS[5], ARGV[4])
  redis.call('LTRIM', KEYS[5], 0, tonumber(ARGV[5]) - 1)
end
return 1
"""


class EventsConfig(StrictModel):
    """Events: the Redis stream, and the webhooks each event is POSTed to (signed, retried)."""

    namespace: str = Field(
        default="events",
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="Redis hash tag of every event key (fs:{namespace}:...), one Cluster slot",
    )
    stream_maxlen: int = Field(
        default=100_000,
        ge=1,
        le=100_000_000,
        description="events kept in the Redis stream; older ones are trimmed (MAXLEN ~, so "
        "Redis may keep somewhat more)",
    )
    webhook_urls: tuple[str, ...] = Field(
        default=(),
        max_length=16,
        description="http(s) URLs every event is POSTed to; empty: stream only",
    )
    webhook_secret: SecretStr | None = Field(
        default=None,
        description="shared HMAC-SHA256 key of the webhook signatures (at least 16 characters; "
        "required when webhook_urls is set; never logged)",
    )
    request_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        le=120,
        description="deadline of one webhook POST as a whole (connect, send, reply headers): a "
        "receiver that answers a byte at a time is cut off too",
    )
    retry_initial_seconds: float = Field(
        default=1.0, gt=0, le=3600, description="backoff after a delivery's first failure"
    )
    retry_max_seconds: float = Field(
        default=300.0, gt=0, le=86_400, description="cap of the doubling backoff between attempts"
    )
    max_attempts: int = Field(
        default=10,
        ge=1,
        le=1000,
        description="attempts per delivery before it moves to the dead-letter list",
    )
    replay_window_seconds: float = Field(
        default=300.0,
        gt=0,
        le=3600,
        description="receivers reject signatures whose timestamp is further than this from now",
    )
    claim_lease_seconds: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="how long a claimed delivery is reserved for the process that claimed it; "
        "after that (a crashed process) another one may try again; above the request timeout",
    )
    poll_interval_seconds: float = Field(
        default=0.5, gt=0, le=60, description="how often an idle deliverer looks for due work"
    )
    store_retry_max_seconds: float = Field(
        default=5.0,
        gt=0,
        le=300,
        description="cap of the backoff between tries while Redis is unreachable",
    )
    dedupe_ttl_seconds: int = Field(
        default=86_400,
        ge=1,
        le=30 * 86_400,
        description="how long a published event id is remembered, so a retried publish of the "
        "same event writes nothing",
    )
    dead_letter_maxlen: int = Field(
        default=10_000, ge=1, le=10_000_000, description="dead deliveries kept (newest first)"
    )
    grant_expiry_seconds: float | None = Field(
        default=10.0,
        gt=0,
        le=86_400,
        description="a granted decision's webhook not delivered within this many seconds of the "
        "decision is never delivered (it moves to the dead-letter list as expired), so a door "
        "cannot open late after retries or an outage; none: no expiry",
    )

    @field_validator("webhook_urls")
    @classmethod
    def _urls_are_http(cls, urls: tuple[str, ...]) -> tuple[str, ...]:
        for url in urls:
            try:
                parsed = httpx.URL(url)
            except httpx.InvalidURL as exc:
                raise ValueError(f"webhook url {_redacted(url)!r}: {exc}") from exc
            if parsed.scheme not in ("http", "https") or not parsed.host:
                raise ValueError(f"webhook url {_redacted(url)!r}: expected http(s)://host/...")
        if len(set(urls)) != len(urls):
            raise ValueError("webhook_urls lists a url twice")
        return urls

    @model_validator(mode="after")
    def _consistent(self) -> EventsConfig:
        if self.webhook_urls and self.webhook_secret is None:
            raise ValueError("webhook_urls is set but webhook_secret is not")
        if (
            self.webhook_secret is not None
            and len(self.webhook_secret.get_secret_value()) < _MIN_SECRET_CHARS
        ):
            raise ValueError(f"webhook_secret: expected at least {_MIN_SECRET_CHARS} characters")
        if self.retry_initial_seconds > self.retry_max_seconds:
            raise ValueError(
                f"retry_initial_seconds ({self.retry_initial_seconds}) exceeds "
                f"retry_max_seconds ({self.retry_max_seconds})"
            )
        if self.claim_lease_seconds <= self.request_timeout_seconds:
            raise ValueError(
                f"claim_lease_seconds ({self.claim_lease_seconds}) must exceed "
                f"request_timeout_seconds ({self.request_timeout_seconds})"
            )
        return self


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
        body = fields.get(_STREAM_FIELD)
        if body is None:
            raise EventFormatError(f"stream entry: no {_STREAM_FIELD.decode()!r} field")
        return cls.from_json(body)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A webhook delivery given up after its last attempt (dead_at: unix seconds)."""

    delivery_id: str
    url: str
    attempts: int
    last_error: str
    dead_at: float
    event: Event


@dataclass(frozen=True, slots=True)
class _Keys:
    stream: str
    published_prefix: str
    outbox: str
    deliveries: str
    attempts: str
    claims: str
    dead: str

    @classmethod
    def of(cls, namespace: str) -> _Keys:
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


def _where(client: redis.Redis) -> str:
    connection = client.get_connection_kwargs()
    return str(
        connection.get("path") or f"{connection.get('host', '?')}:{connection.get('port', '?')}"
    )


@contextmanager
def _talking_to_redis(action: str, where: str) -> Iterator[None]:
    """Turn redis-py errors into the project's errors, naming what was being done."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise EventsUnavailableError(
            f"events: cannot {action}: Redis at {where} is unreachable or still loading ({exc})"
        ) from exc
    except redis.RedisError as exc:
        raise EventStoreError(f"events: cannot {action}: Redis at {where} refused: {exc}") from exc


def _delivery_id(event_id: str, url: str) -> str:
    return f"{event_id}:{hashlib.sha256(url.encode()).hexdigest()[:16]}"


def _redacted(url: str) -> str:
    """A url for logs: no user info, query or fragment (they may hold tokens)."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return "<invalid url>"
    port = f":{parsed.port}" if parsed.port is not None else ""
    return f"{parsed.scheme}://{parsed.host}{port}{parsed.path}"


_StreamEntries: TypeAlias = list[tuple[bytes, dict[bytes, bytes]]]


class EventBus:
    """Publishes events to the Redis stream and queues them for every configured webhook."""

    def __init__(self, client: redis.Redis, config: EventsConfig, metrics: PipelineMetrics) -> None:
        """Use ``client`` (bytes responses, e.g. ``pipeline.gallery.connect``) for ``config``."""
        self._client = client
        self._config = config
        self._metrics = metrics
        self._keys = _Keys.of(config.namespace)
        self._where = _where(client)

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

        def transaction(pipe: Pipeline) -> None:
            # under WATCH: a read is immediate; writes are queued after multi()
            if pipe.exists(published_key):
                return  # queue nothing: EXEC returns no replies
            pipe.multi()
            pipe.set(published_key, b"1", ex=self._config.dedupe_ttl_seconds)
            pipe.xadd(
                self._keys.stream,
                {_STREAM_FIELD: body},
                maxlen=self._config.stream_maxlen,
                approximate=True,
            )
            for url in self._config.webhook_urls:
                delivery_id = _delivery_id(event.event_id, url)
                record = json.dumps({"url": url, "event": body.decode(), "expires_at": expires_at})
                pipe.hset(self._keys.deliveries, delivery_id, record)
                pipe.zadd(self._keys.outbox, {delivery_id: now})

        with _talking_to_redis(f"publish event {event.event_id}", self._where):
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
        with _talking_to_redis("read recent events", self._where):
            entries = self._client.xrevrange(self._keys.stream, count=scan)
        events: list[Event] = []
        # with bytes responses (see ``connect``) each entry is (id, {field: value}) in bytes
        for entry_id, fields in cast(_StreamEntries, entries or []):
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
            with _talking_to_redis("follow events", self._where):
                reply = self._client.xread(
                    {self._keys.stream: last_id}, block=round(block_seconds * 1000), count=100
                )
            for _stream, entries in cast(list[tuple[bytes, _StreamEntries]], reply or []):
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
        with _talking_to_redis("count pending deliveries", self._where):
            return int(self._client.zcard(self._keys.outbox))

    def dead_letters(self, count: int = 100) -> tuple[DeadLetter, ...]:
        """The newest ``count`` dead-lettered deliveries, newest first."""
        with _talking_to_redis("read dead letters", self._where):
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
                        event=Event.from_json(fields["event"]),
                    )
                )
            except (ValueError, KeyError, TypeError, EventFormatError) as exc:
                raise EventStoreError(
                    f"events: dead-letter record in {self._keys.dead} is malformed: {exc}"
                ) from exc
        return tuple(letters)


@dataclass(frozen=True, slots=True)
class _Claim:
    delivery_id: str
    token: str
    attempt: int
    url: str
    event_id: str
    body: bytes
    expires_at: float | None  # unix seconds; None: never


@dataclass(frozen=True, slots=True)
class _Failure:
    reason: Literal["connect", "timeout", "http_status", "http_error"]
    detail: str


def sign(secret: SecretStr | str | bytes, timestamp: str, body: bytes) -> str:
    """Hex HMAC-SHA256 of ``f"{timestamp}.{body}"`` under ``secret``."""
    return hmac.new(
        _secret_bytes(secret), timestamp.encode() + b"." + body, hashlib.sha256
    ).hexdigest()


def _secret_bytes(secret: SecretStr | str | bytes) -> bytes:
    if isinstance(secret, SecretStr):
        return secret.get_secret_value().encode()
    return secret.encode() if isinstance(secret, str) else secret


def verify_signature(
    secret: SecretStr | str | bytes,
    timestamp: str,
    body: bytes,
    signature: str,
    *,
    now: float,
    window_seconds: float,
) -> None:
    """Check a received webhook: raise WebhookSignatureError unless it is genuine and fresh.

    timestamp and signature: the ``X-Facestream-Timestamp`` and ``X-Facestream-Signature``
    header values; body: the raw request body; now: unix seconds; window_seconds: how far the
    timestamp may lie from ``now``, either way (older ones are replays). The signature is
    compared in constant time.
    """
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
        raise WebhookSignatureError(f"timestamp: expected unix seconds, got {timestamp[:32]!r}")
    age_seconds = now - int(timestamp)
    if abs(age_seconds) > window_seconds:
        raise WebhookSignatureError(
            f"timestamp is {age_seconds:.0f} s from now, outside the {window_seconds:.0f} s "
            "replay window"
        )
    expected = sign(secret, timestamp, body)
    if not hmac.compare_digest(expected.encode(), signature.strip().lower().encode()):
        raise WebhookSignatureError("signature does not match the body and timestamp")


class WebhookDeliverer:
    """A thread that POSTs due outbox deliveries, retries them, and dead-letters the hopeless.

    Several deliverers (threads or processes) may share one outbox: each attempt is claimed
    atomically by one of them. Use as a context manager, or ``start()`` and ``stop()``.
    """

    def __init__(
        self,
        client: redis.Redis,
        config: EventsConfig,
        metrics: PipelineMetrics,
        *,
        jitter: random.Random | None = None,
    ) -> None:
        """Deliver ``config``'s outbox through ``client``.

        jitter: the random source of backoff jitter (seeded in tests).
        """
        self._client = client
        self._config = config
        self._metrics = metrics
        self._keys = _Keys.of(config.namespace)
        self._where = _where(client)
        # one TLS context for every attempt: making one loads the CA bundle
        self._tls = httpx.create_ssl_context()
        self._jitter = jitter if jitter is not None else random.Random()
        self._claim_script = client.register_script(_CLAIM_SCRIPT)
        self._settle_script = client.register_script(_SETTLE_SCRIPT)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        """True while the delivery thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the delivery thread (returns at once)."""
        if self.running:
            raise EventStoreError("the webhook deliverer is already running")
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._run, name=f"webhooks-{self._config.namespace}", daemon=True
        )
        self._thread.start()
        LOGGER.info(
            "webhook deliverer started for %d url(s): %s",
            len(self._config.webhook_urls),
            ", ".join(_redacted(url) for url in self._config.webhook_urls),
        )

    def stop(self, timeout_seconds: float | None = None) -> None:
        """Stop the thread and wait for it (seconds; default: one request timeout + 5 s).

        An attempt in flight finishes first (at most one request timeout); a backoff does
        not delay stopping. Idempotent.
        """
        self._stopping.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(
                self._config.request_timeout_seconds + 5.0
                if timeout_seconds is None
                else timeout_seconds
            )
            if thread.is_alive():
                LOGGER.warning("webhook deliverer did not stop within its timeout")
            else:
                LOGGER.info("webhook deliverer stopped")

    def __enter__(self) -> WebhookDeliverer:
        """Start the delivery thread."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop the delivery thread."""
        self.stop()

    def deliver_due(self) -> int:
        """Attempt every delivery due now, one by one; returns how many were attempted.

        Stops early when ``stop()`` is called. Raises EventsUnavailableError or
        EventStoreError when Redis fails (what was claimed is retried after its lease).
        """
        attempted = 0
        while not self._stopping.is_set():
            claim = self._claim()
            if claim is None:
                break
            attempted += 1
            self._attempt(claim)
        with _talking_to_redis("count pending deliveries", self._where):
            self._metrics.events_pending.set(self._client.zcard(self._keys.outbox))
        return attempted

    def _run(self) -> None:
        store_failures = 0
        while not self._stopping.is_set():
            try:
                attempted = self.deliver_due()
            except (EventsUnavailableError, EventStoreError) as exc:
                self._metrics.events_store_errors.labels(operation="deliver").inc()
                store_failures += 1
                if store_failures == 1:
                    LOGGER.warning("webhook outbox unavailable, retrying: %s", exc)
                self._stopping.wait(self._store_backoff(store_failures))
                continue
            except Exception:  # a bug must not end delivery for good: log it and go on
                LOGGER.exception("webhook deliverer failed unexpectedly; retrying")
                self._stopping.wait(self._config.store_retry_max_seconds)
                continue
            if store_failures:
                LOGGER.info("webhook outbox reachable again after %d failed tries", store_failures)
                store_failures = 0
            if attempted == 0:
                self._stopping.wait(self._config.poll_interval_seconds)

    def _store_backoff(self, failures: int) -> float:
        base = min(
            self._config.store_retry_max_seconds,
            self._config.poll_interval_seconds * 2.0 ** min(failures - 1, 30),
        )
        return base / 2 + self._jitter.uniform(0, base / 2)

    def _retry_delay(self, attempt: int) -> float:
        """Seconds before the next attempt: capped doubling, half of it jittered."""
        base = min(
            self._config.retry_max_seconds,
            self._config.retry_initial_seconds * 2.0 ** min(attempt - 1, 60),
        )
        return base / 2 + self._jitter.uniform(0, base / 2)

    def _claim(self) -> _Claim | None:
        now = time.time()
        token = uuid.uuid4().hex
        with _talking_to_redis("claim a delivery", self._where):
            reply = self._claim_script(
                keys=[
                    self._keys.outbox,
                    self._keys.claims,
                    self._keys.attempts,
                    self._keys.deliveries,
                ],
                args=[now, now + self._config.claim_lease_seconds, token],
            )
        if reply is None:
            return None
        raw_id, attempt, record = reply
        delivery_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
        try:
            fields = json.loads(record)
            url = str(fields["url"])
            body = str(fields["event"]).encode()
            event_id = delivery_id.split(":", 1)[0]
            expiry = fields.get("expires_at")  # absent in records written before expiry existed
            expires_at = None if expiry is None else float(expiry)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            LOGGER.error("delivery %s has a malformed outbox record; dropping it", delivery_id)
            self._settle(delivery_id, token, "done", "")
            raise EventStoreError(
                f"events: delivery {delivery_id} in {self._keys.deliveries} is malformed: {exc}"
            ) from exc
        return _Claim(
            delivery_id=delivery_id,
            token=token,
            attempt=int(attempt),
            url=url,
            event_id=event_id,
            body=body,
            expires_at=expires_at,
        )

    def _attempt(self, claim: _Claim) -> None:
        if claim.attempt > self._config.max_attempts:  # attempts cut short by crashes
            self._dead_letter(claim, "attempts exhausted (the deliverer stopped mid-attempt)")
            return
        if claim.expires_at is not None and time.time() > claim.expires_at:
            self._dead_letter(
                claim,
                "expired: a granted decision not delivered within events.grant_expiry_seconds "
                "is not delivered (a door must not open late)",
            )
            return
        failure = self._post(claim)
        if failure is None:
            if self._settle(claim.delivery_id, claim.token, "done", ""):
                self._metrics.events_delivered.inc()
                LOGGER.debug("delivered %s (attempt %d)", claim.delivery_id, claim.attempt)
            return
        self._metrics.events_failed.labels(reason=failure.reason).inc()
        if claim.attempt >= self._config.max_attempts:
            self._dead_letter(claim, failure.detail)
            return
        delay = self._retry_delay(claim.attempt)
        LOGGER.info(
            "delivery %s to %s failed (attempt %d of %d: %s); next try in %.1f s",
            claim.delivery_id,
            _redacted(claim.url),
            claim.attempt,
            self._config.max_attempts,
            failure.detail,
            delay,
        )
        self._settle(claim.delivery_id, claim.token, "retry", str(time.time() + delay))

    def _post(self, claim: _Claim) -> _Failure | None:
        secret = self._config.webhook_secret
        if secret is None:  # EventsConfig requires a secret with urls; old outbox entries
            return _Failure("http_error", "no webhook_secret configured to sign with")
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(secret, timestamp, claim.body),
            EVENT_ID_HEADER: claim.event_id,
        }
        try:
            status = asyncio.run(self._post_by_deadline(claim.url, claim.body, headers))
        except (TimeoutError, httpx.TimeoutException) as exc:  # the deadline, or one step's
            return _Failure(
                "timeout",
                f"timed out: {type(exc).__name__} (events.request_timeout_seconds is "
                f"{self._config.request_timeout_seconds:g} s for the whole request)",
            )
        except httpx.TransportError as exc:
            return _Failure("connect", f"connection failed: {type(exc).__name__}: {exc}")
        except httpx.HTTPError as exc:
            return _Failure("http_error", f"{type(exc).__name__}: {exc}")
        if 200 <= status < 300:
            return None
        return _Failure("http_status", f"HTTP {status}")

    async def _post_by_deadline(self, url: str, body: bytes, headers: Mapping[str, str]) -> int:
        """POST ``body`` and return the reply's status; TimeoutError past the deadline.

        httpx's timeouts bound each network step, not the request: a receiver sending its
        reply a byte at a time would hold the deliverer for ever. Only cancelling bounds the
        whole request, hence an event loop (and a client, whose connections belong to that
        loop) per attempt.
        """
        deadline_seconds = self._config.request_timeout_seconds
        async with httpx.AsyncClient(
            timeout=deadline_seconds, follow_redirects=False, verify=self._tls
        ) as http:
            async with asyncio.timeout(deadline_seconds):
                # streamed and closed unread: a receiver's reply body is not ours to buffer
                async with http.stream("POST", url, content=body, headers=headers) as reply:
                    return reply.status_code

    def _dead_letter(self, claim: _Claim, last_error: str) -> None:
        record = json.dumps(
            {
                "delivery_id": claim.delivery_id,
                "url": claim.url,
                "attempts": claim.attempt,
                "last_error": last_error,
                "dead_at": time.time(),
                "event": claim.body.decode(),
            }
        )
        if self._settle(claim.delivery_id, claim.token, "dead", record):
            self._metrics.events_dead_lettered.inc()
            LOGGER.warning(
                "delivery %s to %s dead-lettered after %d attempts: %s",
                claim.delivery_id,
                _redacted(claim.url),
                claim.attempt,
                last_error,
            )

    def _settle(
        self, delivery_id: str, token: str, action: Literal["done", "retry", "dead"], value: str
    ) -> bool:
        with _talking_to_redis(f"settle delivery {delivery_id}", self._where):
            settled = self._settle_script(
                keys=[
                    self._keys.outbox,
                    self._keys.claims,
                    self._keys.attempts,
                    self._keys.deliveries,
                    self._keys.dead,
                ],
                args=[delivery_id, token, action, value, self._config.dead_letter_maxlen],
            )
        if not settled:
            LOGGER.warning(
                "delivery %s: claim expired before the attempt was settled (another deliverer "
                "may repeat it; receivers dedupe by event id)",
                delivery_id,
            )
        return bool(settled)
