"""The ``[events]`` section (the Redis stream, the outbox's retries, the webhook receivers)
and the ``[mqtt]`` section (the broker the MQTT bridge publishes to).

Each receiver (``[[events.webhooks]]``, or the older ``webhook_urls`` with one shared secret)
is resolved, once, into a ``Webhook``: its key in Redis, its url and its secret read from the
environment, a file or the config (``pipeline.config.secrets``).
"""

from __future__ import annotations

import hashlib
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

import httpx
from pydantic import Field, PrivateAttr, SecretStr, field_validator, model_validator

from pipeline.config.base import StrictModel
from pipeline.config.secrets import SecretSpec, resolve_secret
from pipeline.events.signing import derived_key
from pipeline.redact import url_for_logs
from pipeline.types import Event, event_door

__all__ = [
    "MQTT_PORTS",
    "MQTT_TLS_SCHEMES",
    "WEBHOOK_SECRET_ENVIRONMENT",
    "EventsConfig",
    "MqttConfig",
    "Webhook",
    "WebhookConfig",
]

WEBHOOK_SECRET_ENVIRONMENT: Final = "FACESTREAM_WEBHOOK_SECRET"
# labels of the keys derived from one secret, so that no two uses share a key
_OUTBOX_KEY_LABEL: Final = b"facestream/outbox-record/v1"
_STREAM_KEY_LABEL: Final = b"facestream/stream-entry/v1"
MQTT_PORTS: Final = {"mqtt": 1883, "tcp": 1883, "mqtts": 8883, "ssl": 8883}
"""The broker url schemes, each with its default port."""
MQTT_TLS_SCHEMES: Final = frozenset({"mqtts", "ssl"})

_DOOR_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_MIN_SECRET_CHARS: Final = 16


def _check_webhook_url(url: str) -> str:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise ValueError(f"webhook url {url_for_logs(url)!r}: {exc}") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"webhook url {url_for_logs(url)!r}: expected http(s)://host/...")
    return url


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
                what=f"webhook {url_for_logs(self.url)} secret",
                environment=self.secret_env,
                file=self.secret_file,
                inline=self.secret,
            )
        )
        if secret is None:
            raise ValueError(
                f"webhook {url_for_logs(self.url)}: set secret, secret_file or secret_env"
            )
        _check_secret_length(secret, f"webhook {url_for_logs(self.url)} secret")
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


class MqttConfig(StrictModel):
    """Publishing events to an MQTT broker (optional: no ``url``, no bridge)."""

    url: str | None = Field(
        default=None,
        description="mqtt://host[:1883] or mqtts://host[:8883] (TLS); none disables the MQTT "
        "bridge",
    )
    username: str | None = Field(default=None, description="broker user name")
    password: SecretStr | None = Field(
        default=None,
        description="broker password (sent in clear over mqtt://: use mqtts://); "
        "FACESTREAM_MQTT_PASSWORD or a file named by FACESTREAM_MQTT_PASSWORD_FILE win",
    )
    password_file: Path | None = Field(default=None, description="file holding the password")
    ca_file: Path | None = Field(
        default=None, description="mqtts: CA bundle the broker's certificate must chain to"
    )
    cert_file: Path | None = Field(default=None, description="mqtts: client certificate (PEM)")
    key_file: Path | None = Field(default=None, description="mqtts: client certificate's key")
    signing_secret: SecretStr | None = Field(
        default=None,
        description="HMAC key signing every message (16+ characters; subscribers verify); "
        "FACESTREAM_MQTT_SIGNING_SECRET or ..._FILE win; none: unsigned",
    )
    signing_secret_file: Path | None = Field(
        default=None, description="file holding the signing secret"
    )
    replay_window_seconds: float = Field(
        default=300.0, gt=0, le=3600, description="subscribers refuse older signed messages"
    )
    client_id: str = Field(
        default_factory=lambda: f"facestream-{socket.gethostname()}",
        max_length=128,
        description="MQTT client id (also this bridge's consumer name in the stream group)",
    )
    topic_prefix: str = Field(
        default="facestream", pattern=r"^[A-Za-z0-9_/-]{1,64}$", description="root of topics"
    )
    qos: int = Field(default=1, ge=0, le=2, description="QoS of event messages")
    publish_timeout_seconds: float = Field(
        default=5.0, gt=0, le=120, description="wait this long for the broker's PUBACK"
    )
    group: str = Field(
        default="mqtt", pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Redis consumer group"
    )
    home_assistant_discovery: bool = Field(
        default=True, description="announce door and camera entities to Home Assistant"
    )
    discovery_prefix: str = Field(default="homeassistant", description="HA discovery root")

    _password: SecretStr | None = PrivateAttr(default=None)
    _signing: SecretStr | None = PrivateAttr(default=None)

    @field_validator("url")
    @classmethod
    def _mqtt_scheme(cls, url: str | None) -> str | None:
        if url is not None and urlsplit(url).scheme not in MQTT_PORTS:
            raise ValueError("expected mqtt://host[:port] or mqtts://host[:port]")
        return url

    @model_validator(mode="after")
    def _secrets_resolve(self) -> MqttConfig:
        self._password = resolve_secret(
            SecretSpec(
                "mqtt.password", "FACESTREAM_MQTT_PASSWORD", self.password_file, self.password
            )
        )
        signing = resolve_secret(
            SecretSpec(
                "mqtt.signing_secret",
                "FACESTREAM_MQTT_SIGNING_SECRET",
                self.signing_secret_file,
                self.signing_secret,
            )
        )
        if signing is not None and len(signing.get_secret_value()) < 16:
            raise ValueError("mqtt signing secret: expected at least 16 characters")
        self._signing = signing
        tls_files = (self.ca_file, self.cert_file, self.key_file)
        if any(tls_files) and (
            self.url is None or urlsplit(self.url).scheme not in MQTT_TLS_SCHEMES
        ):
            raise ValueError("ca_file, cert_file and key_file need an mqtts:// url")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self

    @property
    def resolved_password(self) -> SecretStr | None:
        """The broker password (environment, file or config)."""
        return self._password

    @property
    def resolved_signing_secret(self) -> SecretStr | None:
        """The message signing secret (environment, file or config), or None: unsigned."""
        return self._signing

    @property
    def stream_entry_key(self) -> bytes | None:
        """The key of the stream entries' MACs (``EventBus(entry_key=...)``), derived from the
        signing secret; None without one."""
        return None if self._signing is None else derived_key(self._signing, _STREAM_KEY_LABEL)
