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

Transport: ``mqtts://`` (TLS, port 8883) with ``ca_file`` (the broker's CA; default: the
system's) and ``cert_file``/``key_file`` (a client certificate). The password and the signing
secret come from the environment, a file or the config (``pipeline.config.secrets``).

Topics, the signed envelope and Home Assistant discovery: ``pipeline.events.mqtt_messages``.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections.abc import Sequence
from typing import cast
from urllib.parse import urlsplit

import paho.mqtt.client as paho
import redis
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from pipeline.errors import EventFormatError
from pipeline.events.bus import EventBus
from pipeline.events.config import MQTT_PORTS, MQTT_TLS_SCHEMES, MqttConfig
from pipeline.events.mqtt_messages import (
    MqttMessage,
    discovery_messages,
    event_messages,
    sign_message,
)
from pipeline.events.signing import stream_entry_mac
from pipeline.events.store import StreamEntries
from pipeline.metrics import PipelineMetrics
from pipeline.redis.cluster import RedisClient
from pipeline.types import EVENT_STREAM_FIELD, Event

__all__ = ["MqttBridge"]

_log = logging.getLogger(__name__)
_READ_BLOCK_MILLISECONDS = 1000
_RETRY_SECONDS = 1.0
_RETRY_MAX_SECONDS = 30.0  # cap of the doubling wait while Redis keeps failing


class MqttBridge:
    """Forwards the event stream to an MQTT broker from a background thread.

    client: Redis with bytes responses (``pipeline.gallery.store.connect``); doors and cameras:
    ids announced to Home Assistant (when discovery is on).
    """

    def __init__(
        self,
        client: RedisClient,
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
            discovery_messages(config, doors, cameras) if config.home_assistant_discovery else []
        )
        parts = urlsplit(config.url)
        self._host = parts.hostname or "localhost"
        self._port = parts.port or MQTT_PORTS[parts.scheme]
        self._doors = tuple(doors)
        self._signing = config.resolved_signing_secret
        self._entry_key = config.stream_entry_key
        self._connected = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._mqtt = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=config.client_id, clean_session=False
        )
        if parts.scheme in MQTT_TLS_SCHEMES:
            self._mqtt.tls_set(
                ca_certs=None if config.ca_file is None else str(config.ca_file),
                certfile=None if config.cert_file is None else str(config.cert_file),
                keyfile=None if config.key_file is None else str(config.key_file),
            )
        if config.username is not None:
            secret = config.resolved_password
            password = secret.get_secret_value() if secret is not None else None
            if password is not None and parts.scheme not in MQTT_TLS_SCHEMES:
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
        expected = stream_entry_mac(self._entry_key, fields.get(EVENT_STREAM_FIELD, b""))
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

    def _read(self, start: str) -> StreamEntries:
        reply = self._redis.xreadgroup(
            self._config.group,
            self._config.client_id,
            {self._stream: start},
            count=100,
            block=None if start == "0" else _READ_BLOCK_MILLISECONDS,
        )
        streams = cast(list[tuple[bytes, StreamEntries]], reply or [])
        return [entry for _, entries in streams for entry in entries]

    def _forward(self, entries: StreamEntries) -> bool:
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
