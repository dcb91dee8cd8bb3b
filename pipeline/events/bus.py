"""Events: a Redis stream for consumers, and signed webhooks delivered from a durable outbox.

``EventBus.publish`` writes one event in one MULTI/EXEC transaction: the stream entry (XADD,
``MAXLEN ~``) and, for each configured webhook that takes the event (its ``doors``), a delivery
in the outbox. Once ``publish`` returns, the event is in Redis (and in its AOF): a crash of this
process loses nothing, and a consumer group reads each stream entry once (XREADGROUP, then XACK).

``WebhookDeliverer`` is a background thread that claims due deliveries one at a time and POSTs
each event's JSON with its signature. A claim is a Lua script that moves the delivery's due
time a lease into the future and records a claim token, so two processes never work on the
same attempt; a delivery whose process died is claimed again when its lease runs out. Failed
attempts are rescheduled with capped exponential backoff and jitter; after the last attempt a
delivery moves to the dead-letter list. Each POST has one deadline as a whole
(``request_timeout_seconds``; httpx's own timeouts bound each network step only, so a receiver
dripping its reply would hold the thread). Webhook delivery is at least once: a receiver
dedupes by the ``event_id`` in the signed body (``X-Facestream-Event-Id`` repeats it, unsigned).

Redis is not trusted with what a delivery says. Whoever can write to Redis could otherwise add
a delivery of their own (a grant for any door) and have it signed with the real secret, or
point a delivery at their own host and collect signed bodies (a signing oracle). So:

* an outbox record names its webhook by the key of the current config (``Webhook.key``, the
  first 16 hex of the SHA-256 of its url), never by url: the deliverer posts only to urls it
  was configured with;
* each record carries an HMAC-SHA256 (``mac``) over its delivery id, webhook key, event and
  expiry, under a key derived from that webhook's secret (``outbox_key``), which is not in
  Redis;
* a record whose webhook is unknown, whose MAC does not match or that cannot be read is not
  POSTed: it moves to the dead-letter list and counts in
  ``facestream_events_rejected_total{reason}`` (alert ``FacestreamForgedDelivery``).

What this does not stop: someone with Redis write access can still delete or delay deliveries
(a denial of service), read event bodies, and re-queue a genuine record within its expiry (the
receiver dedupes by event id). See docs/security.md.

A granted decision is only useful while the person is at the door: its deliveries expire
``grant_expiry_seconds`` after the decision (``created``). An expired delivery is not POSTed;
it moves to the dead-letter list (``last_error`` says expired), whether it waited in retries,
in the outbox while the deliverer was down, or in ``DecisionRecorder``'s queue while Redis was.
Receivers should check the decision's age too (``deploy/examples/door_controller.py``).

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

Webhook requests carry ``X-Facestream-Timestamp`` (unix seconds), ``X-Facestream-Event-Id``,
``X-Facestream-Destination`` (the url as configured), ``X-Facestream-Door`` (the event's door
id, empty for events of no door) and ``X-Facestream-Signature``: ``v2=`` and the hex
HMAC-SHA256, under that webhook's secret, of ``"<timestamp>\\n<destination>\\n<door>\\n<body>"``
(``SignedMessage.signed_bytes``). A receiver checks it with ``verify_signature`` against its
own url and door, so a request meant for another receiver or door is refused even where two
receivers were given the same secret.
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
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Final, Literal, TypeAlias, cast, get_args

import httpx
import redis
from pydantic import Field, PrivateAttr, SecretStr, field_validator, model_validator
from redis.client import Pipeline

from pipeline.config.base import StrictModel
from pipeline.config.secrets import SecretSpec, resolve_secret
from pipeline.errors import (
    EventFormatError,
    EventStoreError,
    EventsUnavailableError,
    WebhookSignatureError,
)
from pipeline.metrics import PipelineMetrics

__all__ = [
    "DESTINATION_HEADER",
    "DOOR_HEADER",
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
    "PurgeReport",
    "SignedMessage",
    "Webhook",
    "WebhookConfig",
    "WebhookDeliverer",
    "derived_key",
    "event_door",
    "sign",
    "stream_entry_mac",
    "verify_signature",
]

LOGGER = logging.getLogger(__name__)

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
]
EVENT_KINDS: Final[tuple[str, ...]] = get_args(EventKind)
JsonValue: TypeAlias = (
    "str | int | float | bool | Sequence[JsonValue] | Mapping[str, JsonValue] | None"
)

TIMESTAMP_HEADER: Final = "X-Facestream-Timestamp"
SIGNATURE_HEADER: Final = "X-Facestream-Signature"
EVENT_ID_HEADER: Final = "X-Facestream-Event-Id"
DESTINATION_HEADER: Final = "X-Facestream-Destination"
DOOR_HEADER: Final = "X-Facestream-Door"
SIGNATURE_VERSION: Final = "v2="
WEBHOOK_SECRET_ENVIRONMENT: Final = "FACESTREAM_WEBHOOK_SECRET"
# labels of the keys derived from one secret, so that no two uses share a key
_OUTBOX_KEY_LABEL: Final = b"facestream/outbox-record/v1"

_EVENT_ID = re.compile(r"^[0-9a-f]{32}$")
_CAMERA_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_MAX_EVENT_BYTES: Final = 1 << 20
_MAX_PAYLOAD_DEPTH: Final = 16
_SIGNATURE = re.compile(r"^[0-9a-f]{64}$")
_STREAM_FIELD: Final = b"event"
_STREAM_MAC_FIELD: Final = b"mac"
_DOOR_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
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


def _check_webhook_url(url: str) -> str:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise ValueError(f"webhook url {_redacted(url)!r}: {exc}") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"webhook url {_redacted(url)!r}: expected http(s)://host/...")
    return url


def derived_key(secret: SecretStr, label: bytes) -> bytes:
    """A key for one use of ``secret`` (HMAC-SHA256 of ``label`` under it): knowing a key made
    for one label tells nothing of the secret nor of the keys made for other labels."""
    return hmac.new(secret.get_secret_value().encode(), label, hashlib.sha256).digest()


def _webhook_key(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Webhook:
    """One receiver as the deliverer uses it: ``key`` names it in Redis (never the url),
    ``secret`` signs its requests and keys its outbox records, ``doors`` are the doors whose
    events it gets (empty: every event, doorless ones included)."""

    key: str
    url: str
    secret: SecretStr
    doors: frozenset[str]

    def takes(self, event: Event) -> bool:
        """Whether ``event`` is delivered to this receiver."""
        return not self.doors or event_door(event) in self.doors

    @property
    def outbox_key(self) -> bytes:
        """The key of this webhook's outbox record MACs (derived, so never the signing key)."""
        return derived_key(self.secret, _OUTBOX_KEY_LABEL)


class WebhookConfig(StrictModel):
    """One webhook receiver (``[[events.webhooks]]``) with its own secret and doors."""

    url: str = Field(description="http(s) URL the events are POSTed to")
    secret: SecretStr | None = Field(
        default=None,
        description="this receiver's HMAC-SHA256 key (at least 16 characters; never logged); "
        "or secret_file / secret_env",
    )
    secret_file: Path | None = Field(
        default=None, description="file holding the secret (a mounted Kubernetes Secret)"
    )
    secret_env: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$",
        description="environment variable holding the secret (NAME_FILE: a file holding it); "
        "wins over secret_file and secret",
    )
    doors: tuple[str, ...] = Field(
        default=(),
        max_length=1024,
        description="door ids whose events this receiver gets (a door controller: its own "
        "door); empty: every event, camera and checkpoint events included",
    )
    _resolved: SecretStr | None = PrivateAttr(default=None)

    @field_validator("url")
    @classmethod
    def _url_is_http(cls, url: str) -> str:
        return _check_webhook_url(url)

    @field_validator("doors")
    @classmethod
    def _door_ids(cls, doors: tuple[str, ...]) -> tuple[str, ...]:
        for door in doors:
            if not _DOOR_ID.match(door):
                raise ValueError(f"door id {door!r}: expected 1-64 of A-Z a-z 0-9 _ . -")
        return doors

    @model_validator(mode="after")
    def _secret_resolves(self) -> WebhookConfig:
        secret = resolve_secret(
            SecretSpec(
                what=f"webhook {_redacted(self.url)} secret",
                environment=self.secret_env,
                file=self.secret_file,
                inline=self.secret,
            )
        )
        if secret is None:
            raise ValueError(
                f"webhook {_redacted(self.url)}: set secret, secret_file or secret_env"
            )
        _check_secret_length(secret, f"webhook {_redacted(self.url)} secret")
        self._resolved = secret
        return self

    def resolved(self) -> Webhook:
        """This receiver with its secret read (environment, file or config)."""
        assert self._resolved is not None  # set by the validator
        return Webhook(_webhook_key(self.url), self.url, self._resolved, frozenset(self.doors))


def _check_secret_length(secret: SecretStr, what: str) -> None:
    if len(secret.get_secret_value()) < _MIN_SECRET_CHARS:
        raise ValueError(f"{what}: expected at least {_MIN_SECRET_CHARS} characters")


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
    webhooks: tuple[WebhookConfig, ...] = Field(
        default=(),
        max_length=16,
        description="webhook receivers ([[events.webhooks]] url, secret, doors), each with its "
        "own secret, so that no receiver can sign for another",
    )
    webhook_urls: tuple[str, ...] = Field(
        default=(),
        max_length=16,
        description="older form: http(s) URLs every event is POSTed to, all signed with "
        "webhook_secret; prefer [[events.webhooks]] (one secret per receiver: with one shared "
        "secret any receiver can forge requests to the others)",
    )
    webhook_secret: SecretStr | None = Field(
        default=None,
        description="the shared key of webhook_urls (at least 16 characters; never logged); "
        "FACESTREAM_WEBHOOK_SECRET or a file named by FACESTREAM_WEBHOOK_SECRET_FILE wins",
    )
    webhook_secret_file: Path | None = Field(
        default=None, description="file holding webhook_secret (a mounted Kubernetes Secret)"
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
    _receivers: tuple[Webhook, ...] = PrivateAttr(default=())

    @field_validator("webhook_urls")
    @classmethod
    def _urls_are_http(cls, urls: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(_check_webhook_url(url) for url in urls)

    @model_validator(mode="after")
    def _consistent(self) -> EventsConfig:
        legacy = resolve_secret(
            SecretSpec(
                what="events.webhook_secret",
                environment=WEBHOOK_SECRET_ENVIRONMENT,
                file=self.webhook_secret_file,
                inline=self.webhook_secret,
            )
        )
        if self.webhook_urls and legacy is None:
            raise ValueError(
                "webhook_urls is set but webhook_secret is not (better: one [[events.webhooks]] "
                "table per receiver, each with its own secret)"
            )
        if legacy is not None and self.webhook_urls:
            _check_secret_length(legacy, "webhook_secret")
        receivers = [webhook.resolved() for webhook in self.webhooks]
        if legacy is not None:
            receivers += [
                Webhook(_webhook_key(url), url, legacy, frozenset()) for url in self.webhook_urls
            ]
        urls = [receiver.url for receiver in receivers]
        if len(set(urls)) != len(urls):
            raise ValueError("a webhook url is listed twice (webhooks and webhook_urls together)")
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
        self._receivers = tuple(receivers)
        return self

    @property
    def receivers(self) -> tuple[Webhook, ...]:
        """Every webhook receiver, from ``webhooks`` and the older ``webhook_urls``, with its
        secret read."""
        return self._receivers


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


def event_door(event: Event) -> str:
    """The door an event is about (its payload's ``door_id``), or "" for events of no door."""
    door = event.payload.get("door_id")
    return door if isinstance(door, str) and _DOOR_ID.match(door) else ""


def stream_entry_mac(key: bytes, body: bytes) -> bytes:
    """The hex HMAC-SHA256 a stream entry carries in its ``mac`` field, so that a reader holding
    ``key`` (the MQTT bridge, before it signs) can tell the service's entries from entries
    someone else wrote to Redis."""
    return hmac.new(key, body, hashlib.sha256).hexdigest().encode()


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


@dataclass(frozen=True, slots=True)
class PurgeReport:
    """What ``EventBus.purge_identity`` removed: stream entries, pending deliveries and
    dead letters about the identity."""

    stream_entries: int
    deliveries: int
    dead_letters: int


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


def _delivery_id(event_id: str, webhook: Webhook) -> str:
    return f"{event_id}:{webhook.key}"


def _outbox_record(
    delivery_id: str, webhook: Webhook, body: bytes, expires_at: float | None
) -> str:
    """The JSON of an outbox record, with its MAC under the webhook's outbox key."""
    return json.dumps(
        {
            "webhook": webhook.key,
            "event": body.decode(),
            "expires_at": expires_at,
            "mac": _record_mac(webhook.outbox_key, delivery_id, body, expires_at),
        }
    )


def _record_mac(key: bytes, delivery_id: str, body: bytes, expires_at: float | None) -> str:
    # delivery id (event id and webhook key), expiry and body, unambiguously delimited: the
    # first two hold no newline and the body is last
    signed = f"{delivery_id}\n{json.dumps(expires_at)}\n".encode() + body
    return hmac.new(key, signed, hashlib.sha256).hexdigest()


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

    def __init__(
        self,
        client: redis.Redis,
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
        self._keys = _Keys.of(config.namespace)
        self._where = _where(client)
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

        def transaction(pipe: Pipeline) -> None:
            # under WATCH: a read is immediate; writes are queued after multi()
            if pipe.exists(published_key):
                return  # queue nothing: EXEC returns no replies
            pipe.multi()
            pipe.set(published_key, b"1", ex=self._config.dedupe_ttl_seconds)
            fields = {_STREAM_FIELD: body}
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
                delivery_id = _delivery_id(event.event_id, webhook)
                record = _outbox_record(delivery_id, webhook, body, expires_at)
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
                        event=_event_or_none(fields["event"]),
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
        with _talking_to_redis(f"purge identity {identity_id}", self._where):
            return PurgeReport(
                stream_entries=self._purge_stream(identity_id),
                deliveries=self._purge_deliveries(identity_id),
                dead_letters=self._purge_dead_letters(identity_id),
            )

    def _purge_stream(self, identity_id: str) -> int:
        removed = 0
        start: bytes | str = "-"
        while True:
            entries = cast(
                _StreamEntries, self._client.xrange(self._keys.stream, min=start, count=500)
            )
            if not entries:
                return removed
            doomed = [
                entry_id
                for entry_id, fields in entries
                if _names(fields.get(_STREAM_FIELD), identity_id)
            ]
            if doomed:
                removed += int(self._client.xdel(self._keys.stream, *doomed))
            last = entries[-1][0].decode()
            milliseconds, _, sequence = last.partition("-")
            start = f"{milliseconds}-{int(sequence) + 1}"  # exclusive of the last one read

    def _purge_deliveries(self, identity_id: str) -> int:
        doomed = []
        for delivery_id, record in self._client.hscan_iter(self._keys.deliveries, count=500):
            try:
                body = json.loads(record).get("event")
            except (ValueError, AttributeError):
                continue
            if _names(body, identity_id):
                doomed.append(delivery_id)
        if doomed:
            pipe = self._client.pipeline()
            pipe.hdel(self._keys.deliveries, *doomed)
            pipe.zrem(self._keys.outbox, *doomed)
            pipe.hdel(self._keys.attempts, *doomed)
            pipe.hdel(self._keys.claims, *doomed)
            pipe.execute()
        return len(doomed)

    def _purge_dead_letters(self, identity_id: str) -> int:
        removed = 0
        for record in self._client.lrange(self._keys.dead, 0, -1):
            try:
                body = json.loads(record).get("event")
            except (ValueError, AttributeError):
                continue
            if _names(body, identity_id):
                removed += int(self._client.lrem(self._keys.dead, 1, cast(str, record)))
        return removed


def _readable_event(record: bytes) -> str:
    """The ``event`` text of an outbox record that fails its checks, or "" when it has none."""
    try:
        fields = json.loads(record)
    except ValueError:
        return ""
    event = fields.get("event") if isinstance(fields, dict) else None
    return event if isinstance(event, str) else ""


def _event_or_none(body: object) -> Event | None:
    try:
        return Event.from_json(body) if isinstance(body, str | bytes) else None
    except EventFormatError:
        return None


def _names(body: object, identity_id: str) -> bool:
    """Whether an event's JSON (str or bytes) is about ``identity_id``."""
    event = _event_or_none(body)
    return event is not None and event.payload.get("identity_id") == identity_id


@dataclass(frozen=True, slots=True)
class _Claim:
    delivery_id: str
    token: str
    attempt: int
    webhook: Webhook
    event_id: str
    door: str
    body: bytes
    expires_at: float | None  # unix seconds; None: never


@dataclass(frozen=True, slots=True)
class _Refused:
    """A claimed record that is not ours to POST: why, and what it held (for the dead letter)."""

    delivery_id: str
    token: str
    attempt: int
    reason: Literal["forged", "unknown_destination", "malformed"]
    detail: str
    url: str
    event: str


@dataclass(frozen=True, slots=True)
class _Failure:
    reason: Literal["connect", "timeout", "http_status", "http_error"]
    detail: str


@dataclass(frozen=True, slots=True)
class SignedMessage:
    """What a webhook signature covers: the ``X-Facestream-Timestamp`` value, the destination
    url as configured, the event's door id ("" for events of no door) and the raw body."""

    timestamp: str
    destination: str
    door: str
    body: bytes

    def signed_bytes(self) -> bytes:
        """``"<timestamp>\\n<destination>\\n<door>\\n"`` then the body: none of the first three
        can hold a newline, and the body comes last, so no two messages sign alike."""
        for part in (self.timestamp, self.destination, self.door):
            if "\n" in part or "\r" in part:
                raise WebhookSignatureError("a signed header holds a line break")
        return f"{self.timestamp}\n{self.destination}\n{self.door}\n".encode() + self.body


def sign(secret: SecretStr | str | bytes, message: SignedMessage) -> str:
    """``v2=`` and the hex HMAC-SHA256 of ``message.signed_bytes()`` under ``secret``."""
    digest = hmac.new(_secret_bytes(secret), message.signed_bytes(), hashlib.sha256)
    return SIGNATURE_VERSION + digest.hexdigest()


def _secret_bytes(secret: SecretStr | str | bytes) -> bytes:
    if isinstance(secret, SecretStr):
        return secret.get_secret_value().encode()
    return secret.encode() if isinstance(secret, str) else secret


def verify_signature(
    secret: SecretStr | str | bytes,
    message: SignedMessage,
    signature: str,
    *,
    now: float,
    window_seconds: float,
) -> None:
    """Check a received webhook: raise WebhookSignatureError unless it is genuine and fresh.

    message: the ``X-Facestream-Timestamp`` header, the receiver's OWN url (as facestream is
    configured to call it) and door id (not the request's headers: a request signed for
    another receiver or door must fail), and the raw body; signature: the
    ``X-Facestream-Signature`` header; now: unix seconds; window_seconds: how far the timestamp
    may lie from ``now``, either way (older ones are replays). Compared in constant time.
    """
    timestamp = message.timestamp
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
        raise WebhookSignatureError(f"timestamp: expected unix seconds, got {timestamp[:32]!r}")
    age_seconds = now - int(timestamp)
    if abs(age_seconds) > window_seconds:
        raise WebhookSignatureError(
            f"timestamp is {age_seconds:.0f} s from now, outside the {window_seconds:.0f} s "
            "replay window"
        )
    expected = sign(secret, message)
    if not hmac.compare_digest(expected.encode(), signature.strip().lower().encode()):
        raise WebhookSignatureError(
            "signature does not match the body, timestamp, destination and door"
        )


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
        self._webhooks = {webhook.key: webhook for webhook in config.receivers}
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
            len(self._webhooks),
            ", ".join(_redacted(webhook.url) for webhook in self._webhooks.values()),
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
            if isinstance(claim, _Refused):
                self._refuse(claim)
            else:
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

    def _claim(self) -> _Claim | _Refused | None:
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
        return self._checked(delivery_id, token, int(attempt), record)

    def _checked(
        self, delivery_id: str, token: str, attempt: int, record: bytes
    ) -> _Claim | _Refused:
        """The claim of a record this service wrote for a webhook of its config, or why not.

        Nothing in the record is believed before its MAC is checked under the key of the
        webhook it names; the url comes from the config, never from Redis."""

        def refused(reason: Literal["forged", "unknown_destination", "malformed"], detail: str,
                    url: str = "", event: str = "") -> _Refused:  # fmt: skip
            return _Refused(delivery_id, token, attempt, reason, detail, url, event)

        try:
            fields = json.loads(record)
            webhook_key, event_text = str(fields["webhook"]), str(fields["event"])
            mac = str(fields["mac"])
            expiry = fields["expires_at"]
            expires_at = None if expiry is None else float(expiry)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            # records of older versions ({"url", "event"}) end here too: they name a url
            kept = _readable_event(record)  # evidence for the dead letter, never POSTed
            return refused("malformed", f"refused: the outbox record is malformed ({exc!r})",
                           event=kept)  # fmt: skip
        webhook = self._webhooks.get(webhook_key)
        event_id, _, named_key = delivery_id.partition(":")
        if webhook is None or named_key != webhook_key:
            return refused(
                "unknown_destination",
                f"refused: the record names webhook {webhook_key[:16]!r}, which the config "
                "does not list",
                event=event_text,
            )
        body = event_text.encode()
        expected = _record_mac(webhook.outbox_key, delivery_id, body, expires_at)
        if not hmac.compare_digest(expected.encode(), mac.encode()):
            return refused(
                "forged",
                "refused: the record's MAC does not match (not written by this service: someone "
                "with write access to Redis)",
                webhook.url,
                event_text,
            )
        try:
            event = Event.from_json(body)
        except EventFormatError as exc:  # ours, yet unreadable: a bug, never a POST
            return refused("malformed", f"refused: {exc}", webhook.url, event_text)
        return _Claim(
            delivery_id=delivery_id,
            token=token,
            attempt=attempt,
            webhook=webhook,
            event_id=event_id,
            door=event_door(event),
            body=body,
            expires_at=expires_at,
        )

    def _refuse(self, refused: _Refused) -> None:
        self._metrics.events_rejected.labels(reason=refused.reason).inc()
        LOGGER.error(
            "delivery %s refused and dead-lettered: %s",
            refused.delivery_id[:64],
            refused.detail,
        )
        record = json.dumps(
            {
                "delivery_id": refused.delivery_id,
                "url": refused.url,
                "attempts": refused.attempt,
                "last_error": refused.detail,
                "dead_at": time.time(),
                "event": refused.event,
            }
        )
        if self._settle(refused.delivery_id, refused.token, "dead", record):
            self._metrics.events_dead_lettered.inc()

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
            _redacted(claim.webhook.url),
            claim.attempt,
            self._config.max_attempts,
            failure.detail,
            delay,
        )
        self._settle(claim.delivery_id, claim.token, "retry", str(time.time() + delay))

    def _post(self, claim: _Claim) -> _Failure | None:
        webhook = claim.webhook
        timestamp = str(int(time.time()))
        message = SignedMessage(timestamp, webhook.url, claim.door, claim.body)
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: timestamp,
            DESTINATION_HEADER: webhook.url,
            DOOR_HEADER: claim.door,
            SIGNATURE_HEADER: sign(webhook.secret, message),
            EVENT_ID_HEADER: claim.event_id,
        }
        try:
            status = asyncio.run(self._post_by_deadline(webhook.url, claim.body, headers))
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
                "url": claim.webhook.url,
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
                _redacted(claim.webhook.url),
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
