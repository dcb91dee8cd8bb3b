"""Events to MQTT (Home Assistant and other home/building automation), at least once.

The bridge is a consumer group (``mqtt``) on the Redis event stream: it reads each event,
publishes it with QoS 1, waits for the broker's acknowledgement, and only then acknowledges
the stream entry. A broker that is down or slow loses nothing: unacknowledged entries are read
again (the group's pending list first) once it is back, and so are entries written while the
service was stopped. The broker being away never stops recognition or doors; it shows as
``facestream_mqtt_connected 0`` and in /readyz. Redis failing under the bridge (a restart
between reading an entry and acknowledging it) is retried with capped backoff, from the
pending entries again; should the forwarding thread end all the same, ``connected`` (what
/readyz reports) turns false with it.

Topics (``topic_prefix`` default ``facestream``):

* ``<prefix>/status``: ``online`` / ``offline`` (retained; ``offline`` is the last will)
* ``<prefix>/events/<kind>``: every event as JSON (decision, unknown_face, spoof_suspected,
  camera_up, camera_down)
* ``<prefix>/door/<door_id>/decision``: door decisions as JSON
* ``<prefix>/door/<door_id>/person``: the person just granted, for a HA sensor. NOT retained:
  a broker keeping the last name per door would keep it after the identity is deleted (and
  tell every later subscriber who came in last). The bridge clears what older versions
  retained there when it connects and when an identity is deleted.
* ``<prefix>/camera/<camera_id>/state``: ``online`` / ``offline`` (retained)

Transport: ``mqtts://`` (TLS, port 8883) with ``ca_file`` (the broker's CA; default: the
system's) and ``cert_file``/``key_file`` (a client certificate). The password and the signing
secret come from the environment, a file or the config (``pipeline.config.secrets``).

Signed payloads (``signing_secret``): every message but ``<prefix>/status`` and the Home
Assistant discovery configs (which Home Assistant reads as they are) is sent as
``{"payload": <text>, "topic": <topic>, "timestamp": <unix s>, "signature": "v1=<hex>"}``, the
HMAC-SHA256 under the secret of ``"<timestamp>\\n<topic>\\n<payload>"`` (``verify_message``),
so a subscriber can tell the service's messages from anyone's who can publish on the broker,
and one replayed to another topic fails. The bridge signs only stream entries that carry the
service's MAC (``EventBus(entry_key=...)``, a key derived from the same secret): an event
someone wrote into the Redis stream is skipped, not signed.

With ``home_assistant_discovery`` on, a sensor per door (last person granted) and a binary
sensor per camera are announced under ``homeassistant/`` (retained), so they appear in Home
Assistant without YAML.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit

import paho.mqtt.client as paho
import redis
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import Field, PrivateAttr, SecretStr, field_validator, model_validator

from pipeline.config.base import StrictModel
from pipeline.config.secrets import SecretSpec, resolve_secret
from pipeline.errors import EventFormatError, WebhookSignatureError
from pipeline.events.bus import EventBus
from pipeline.events.signing import derived_key, stream_entry_mac
from pipeline.metrics import PipelineMetrics
from pipeline.types import Event

__all__ = [
    "MqttBridge",
    "MqttConfig",
    "MqttMessage",
    "event_messages",
    "sign_message",
    "verify_message",
]

_log = logging.getLogger(__name__)
_StreamEntries = list[tuple[bytes, dict[bytes, bytes]]]
_READ_BLOCK_MILLISECONDS = 1000
_RETRY_SECONDS = 1.0
_RETRY_MAX_SECONDS = 30.0  # cap of the doubling wait while Redis keeps failing
_SCHEMES = {"mqtt": 1883, "tcp": 1883, "mqtts": 8883, "ssl": 8883}
_TLS_SCHEMES = frozenset({"mqtts", "ssl"})
_STREAM_KEY_LABEL = b"facestream/stream-entry/v1"
_SIGNATURE_VERSION = "v1="


@dataclass(frozen=True, slots=True)
class MqttMessage:
    """One message to publish: topic, text payload, and whether the broker retains it."""

    topic: str
    payload: str
    retain: bool


def _signed_bytes(timestamp: int, topic: str, payload: str) -> bytes:
    return f"{timestamp}\n{topic}\n{payload}".encode()


def sign_message(secret: SecretStr, message: MqttMessage, timestamp: int) -> MqttMessage:
    """``message`` with its payload wrapped in the signed envelope (module docstring)."""
    digest = hmac.new(
        secret.get_secret_value().encode(),
        _signed_bytes(timestamp, message.topic, message.payload),
        hashlib.sha256,
    ).hexdigest()
    envelope = {
        "payload": message.payload,
        "topic": message.topic,
        "timestamp": timestamp,
        "signature": _SIGNATURE_VERSION + digest,
    }
    return MqttMessage(message.topic, json.dumps(envelope, sort_keys=True), message.retain)


def verify_message(
    secret: SecretStr, topic: str, raw: bytes, *, now: float, window_seconds: float
) -> str:
    """The payload of a signed message received on ``topic``; WebhookSignatureError unless the
    envelope is well formed, fresh (``window_seconds`` of ``now``), for this topic, and its
    signature matches (compared in constant time)."""
    try:
        envelope = json.loads(raw)
        payload, timestamp = str(envelope["payload"]), int(envelope["timestamp"])
        signature = str(envelope["signature"])
    except (ValueError, KeyError, TypeError) as exc:
        raise WebhookSignatureError(f"MQTT message on {topic}: not a signed envelope") from exc
    if abs(now - timestamp) > window_seconds:
        raise WebhookSignatureError(f"MQTT message on {topic}: outside the replay window")
    expected = sign_message(secret, MqttMessage(topic, payload, False), timestamp)
    expected_signature = json.loads(expected.payload)["signature"]
    if not hmac.compare_digest(str(expected_signature).encode(), signature.encode()):
        raise WebhookSignatureError(f"MQTT message on {topic}: signature does not match")
    return payload


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
        if url is not None and urlsplit(url).scheme not in _SCHEMES:
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
        if any(tls_files) and (self.url is None or urlsplit(self.url).scheme not in _TLS_SCHEMES):
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


def _slug(text: str) -> str:
    return "".join(char if char.isalnum() else "_" for char in text).strip("_") or "x"


def event_messages(event: Event, prefix: str) -> list[MqttMessage]:
    """The messages announcing ``event`` (unsigned)."""
    body = event.to_json().decode()
    messages = [MqttMessage(f"{prefix}/events/{event.kind}", body, False)]
    payload = event.payload
    if event.kind in ("decision", "unknown_face", "spoof_suspected"):
        door = str(payload.get("door_id", "unknown"))
        messages.append(MqttMessage(f"{prefix}/door/{door}/decision", body, False))
        if payload.get("outcome") == "granted":
            # not retained: the broker must not keep a name (see the module docstring)
            person = str(payload.get("name"))
            messages.append(MqttMessage(f"{prefix}/door/{door}/person", person, False))
    elif event.kind in ("camera_up", "camera_down"):
        state = "online" if event.kind == "camera_up" else "offline"
        messages.append(MqttMessage(f"{prefix}/camera/{event.camera_id}/state", state, True))
    return messages


def _discovery_messages(
    config: MqttConfig, doors: Sequence[str], cameras: Sequence[str]
) -> list[MqttMessage]:
    prefix, root = config.topic_prefix, config.discovery_prefix
    device = {"identifiers": [config.client_id], "name": "facestream", "manufacturer": "facestream"}
    availability = {"topic": f"{prefix}/status"}
    # signed messages wrap the value in an envelope (Home Assistant does not check the MAC)
    template = (
        {"value_template": "{{ value_json.payload }}"}
        if config.resolved_signing_secret is not None
        else {}
    )
    messages = []
    for door in doors:
        entity = {
            "name": f"{door} last person",
            "unique_id": f"{_slug(config.client_id)}_door_{_slug(door)}",
            "state_topic": f"{prefix}/door/{door}/person",
            "icon": "mdi:door",
            "availability": availability,
            "device": device,
            **template,
        }
        topic = f"{root}/sensor/{_slug(config.client_id)}/door_{_slug(door)}/config"
        messages.append(MqttMessage(topic, json.dumps(entity), True))
    for camera in cameras:
        entity = {
            "name": f"{camera} camera",
            "unique_id": f"{_slug(config.client_id)}_camera_{_slug(camera)}",
            "state_topic": f"{prefix}/camera/{camera}/state",
            "payload_on": "online",
            "payload_off": "offline",
            "device_class": "connectivity",
            "availability": availability,
            "device": device,
            **template,
        }
        topic = f"{root}/binary_sensor/{_slug(config.client_id)}/camera_{_slug(camera)}/config"
        messages.append(MqttMessage(topic, json.dumps(entity), True))
    return messages


class MqttBridge:
    """Forwards the event stream to an MQTT broker from a background thread.

    client: Redis with bytes responses (``pipeline.gallery.store.connect``); doors and cameras:
    ids announced to Home Assistant (when discovery is on).
    """

    def __init__(
        self,
        client: redis.Redis,
        bus: EventBus,
        config: MqttConfig,
        metrics: PipelineMetrics,
        *,
        doors: Sequence[str] = (),
        cameras: Sequence[str] = (),
    ) -> None:
        if config.url is None:
            raise ValueError("MqttBridge needs mqtt.url")
        self._redis = client
        self._stream = bus.stream_key
        self._config = config
        self._metrics = metrics
        self._discovery = (
            _discovery_messages(config, doors, cameras) if config.home_assistant_discovery else []
        )
        parts = urlsplit(config.url)
        self._host = parts.hostname or "localhost"
        self._port = parts.port or _SCHEMES[parts.scheme]
        self._doors = tuple(doors)
        self._signing = config.resolved_signing_secret
        self._entry_key = config.stream_entry_key
        self._connected = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._mqtt = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=config.client_id, clean_session=False
        )
        if parts.scheme in _TLS_SCHEMES:
            self._mqtt.tls_set(
                ca_certs=None if config.ca_file is None else str(config.ca_file),
                certfile=None if config.cert_file is None else str(config.cert_file),
                keyfile=None if config.key_file is None else str(config.key_file),
            )
        if config.username is not None:
            secret = config.resolved_password
            password = secret.get_secret_value() if secret is not None else None
            if password is not None and parts.scheme not in _TLS_SCHEMES:
                _log.warning(
                    "MQTT password sent in clear to %s:%d (mqtt://): use mqtts://",
                    self._host,
                    self._port,
                )
            self._mqtt.username_pw_set(config.username, password)
        self._mqtt.will_set(f"{config.topic_prefix}/status", "offline", qos=1, retain=True)
        self._mqtt.reconnect_delay_set(min_delay=1, max_delay=30)
        self._mqtt.on_connect = self._on_connect
        self._mqtt.on_disconnect = self._on_disconnect
        self._metrics.mqtt_connected.set(0)

    @property
    def connected(self) -> bool:
        """True while the broker connection is up and the thread forwarding events runs."""
        thread = self._thread
        return self._connected.is_set() and thread is not None and thread.is_alive()

    def start(self) -> None:
        """Connect in the background and start forwarding."""
        self._mqtt.connect_async(self._host, self._port, keepalive=30)
        self._mqtt.loop_start()
        self._thread = threading.Thread(target=self._run, name="mqtt-bridge", daemon=True)
        self._thread.start()
        _log.info("MQTT bridge started for %s:%d", self._host, self._port)

    def stop(self, timeout_seconds: float = 10.0) -> None:
        """Say offline, stop forwarding and disconnect."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout_seconds)
        if self._connected.is_set():
            self._mqtt.publish(f"{self._config.topic_prefix}/status", "offline", 1, retain=True)
        self._mqtt.disconnect()
        self._mqtt.loop_stop()
        self._metrics.mqtt_connected.set(0)

    def _on_connect(
        self,
        client: paho.Client,
        userdata: object,
        flags: paho.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            _log.warning(
                "MQTT broker %s:%d refused the connection: %s", self._host, self._port, reason
            )
            return
        client.publish(f"{self._config.topic_prefix}/status", "online", 1, retain=True)
        for message in self._discovery:
            client.publish(message.topic, message.payload, 1, retain=message.retain)
        self.clear_retained_people()
        self._connected.set()
        self._metrics.mqtt_connected.set(1)
        _log.info("MQTT broker %s:%d connected", self._host, self._port)

    def clear_retained_people(self) -> None:
        """Clear what a broker retains on each door's person topic (older versions retained
        the last name granted): an empty retained message deletes it. Fire and forget: a
        broker that is away gets it on the next connect."""
        for door in self._doors:
            self._mqtt.publish(f"{self._config.topic_prefix}/door/{door}/person", b"", 1, True)

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: object,
        flags: paho.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._connected.clear()
        self._metrics.mqtt_connected.set(0)
        if not self._stopping.is_set():
            _log.warning(
                "MQTT broker %s:%d lost (%s); reconnecting", self._host, self._port, reason
            )

    def _run(self) -> None:
        try:
            self._forward_until_stopped()
        finally:
            if not self._stopping.is_set():  # BaseException only: everything else is retried
                _log.error("MQTT bridge stopped forwarding events unexpectedly")
                self._metrics.mqtt_connected.set(0)

    def _forward_until_stopped(self) -> None:
        group_ready = False
        backlog = True  # read this consumer's unacknowledged entries before new ones
        failures = 0  # Redis errors in a row
        while not self._stopping.is_set():
            if not self._connected.wait(_RETRY_SECONDS):
                continue
            try:
                if not group_ready:
                    self._create_group()
                    group_ready = True
                entries = self._read("0" if backlog else ">")
                if backlog and not entries:
                    backlog = False
                    continue
                forwarded = self._forward(entries)
            except (redis.RedisError, OSError) as exc:
                # a Redis restart: published entries not yet acknowledged are pending, and are
                # read again (so a broker may get one twice: at least once); the group itself
                # may be gone with an unsaved Redis
                failures += 1
                group_ready = False
                backlog = True
                if failures == 1:
                    _log.warning("MQTT bridge cannot use the Redis event stream: %s", exc)
                self._stopping.wait(
                    min(_RETRY_MAX_SECONDS, _RETRY_SECONDS * 2 ** min(failures - 1, 5))
                )
                continue
            except Exception:  # a bug must not end forwarding for good: log it and go on
                _log.exception("MQTT bridge failed unexpectedly; retrying")
                backlog = True
                self._stopping.wait(_RETRY_MAX_SECONDS)
                continue
            if failures:
                _log.info("MQTT bridge reads the event stream again after %d failures", failures)
                failures = 0
            if not forwarded:
                backlog = True  # the broker went away mid-batch: start again from the pending
                self._stopping.wait(_RETRY_SECONDS)

    def _genuine(self, entry_id: bytes, fields: dict[bytes, bytes]) -> bool:
        """Whether a stream entry may be signed: always when unsigned; else only an entry
        carrying the service's MAC (someone with Redis access could add any event)."""
        if self._entry_key is None:
            return True
        expected = stream_entry_mac(self._entry_key, fields.get(b"event", b""))
        if hmac.compare_digest(expected, fields.get(b"mac", b"")):
            return True
        _log.error(
            "event stream entry %r has no valid MAC: not written by this service, skipped "
            "(someone with write access to Redis)",
            entry_id,
        )
        return False

    def _signed(self, messages: list[MqttMessage]) -> list[MqttMessage]:
        if self._signing is None:
            return messages
        now = int(time.time())
        return [sign_message(self._signing, message, now) for message in messages]

    def _create_group(self) -> None:
        try:
            self._redis.xgroup_create(self._stream, self._config.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):  # the group exists: resume where it stopped
                raise

    def _read(self, start: str) -> _StreamEntries:
        reply = self._redis.xreadgroup(
            self._config.group,
            self._config.client_id,
            {self._stream: start},
            count=100,
            block=None if start == "0" else _READ_BLOCK_MILLISECONDS,
        )
        streams = cast(list[tuple[bytes, _StreamEntries]], reply or [])
        return [entry for _, entries in streams for entry in entries]

    def _forward(self, entries: _StreamEntries) -> bool:
        """Publish each entry and acknowledge it; False when the broker stopped answering."""
        for entry_id, fields in entries:
            try:
                event = Event.from_stream_fields(fields)
            except EventFormatError as exc:
                _log.warning("event stream entry %r is malformed, skipped: %s", entry_id, exc)
                self._redis.xack(self._stream, self._config.group, entry_id)
                continue
            if not self._genuine(entry_id, fields):
                self._redis.xack(self._stream, self._config.group, entry_id)
                continue
            for message in self._signed(event_messages(event, self._config.topic_prefix)):
                info = self._mqtt.publish(
                    message.topic, message.payload, self._config.qos, retain=message.retain
                )
                try:
                    info.wait_for_publish(self._config.publish_timeout_seconds)
                except (RuntimeError, ValueError) as exc:  # not queued: the client is offline
                    _log.warning("MQTT publish of %s failed: %s", event.event_id, exc)
                    return False
                if not info.is_published():
                    return False
            self._redis.xack(self._stream, self._config.group, entry_id)
            self._metrics.mqtt_published.labels(kind=event.kind).inc()
        return True
