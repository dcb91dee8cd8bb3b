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
* ``<prefix>/door/<door_id>/person``: the last person granted (retained), for a HA sensor
* ``<prefix>/camera/<camera_id>/state``: ``online`` / ``offline`` (retained)

With ``home_assistant_discovery`` on, a sensor per door (last person granted) and a binary
sensor per camera are announced under ``homeassistant/`` (retained), so they appear in Home
Assistant without YAML.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Sequence
from typing import cast
from urllib.parse import urlsplit

import paho.mqtt.client as paho
import redis
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import Field, SecretStr, field_validator

from pipeline.configbase import StrictModel
from pipeline.errors import EventFormatError
from pipeline.events import Event, EventBus
from pipeline.metrics import PipelineMetrics

__all__ = ["MqttBridge", "MqttConfig", "event_messages"]

_log = logging.getLogger(__name__)
_StreamEntries = list[tuple[bytes, dict[bytes, bytes]]]
_READ_BLOCK_MILLISECONDS = 1000
_RETRY_SECONDS = 1.0
_RETRY_MAX_SECONDS = 30.0  # cap of the doubling wait while Redis keeps failing


class MqttConfig(StrictModel):
    """Publishing events to an MQTT broker (optional: no ``url``, no bridge)."""

    url: str | None = Field(
        default=None, description="mqtt://host[:1883]; none disables the MQTT bridge"
    )
    username: str | None = Field(default=None, description="broker user name")
    password: SecretStr | None = Field(default=None, description="broker password")
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

    @field_validator("url")
    @classmethod
    def _mqtt_scheme(cls, url: str | None) -> str | None:
        if url is not None and urlsplit(url).scheme not in ("mqtt", "tcp"):
            raise ValueError("expected mqtt://host[:port]")
        return url


def _slug(text: str) -> str:
    return "".join(char if char.isalnum() else "_" for char in text).strip("_") or "x"


def event_messages(event: Event, prefix: str) -> list[tuple[str, str, bool]]:
    """The (topic, payload, retain) messages announcing ``event``."""
    body = event.to_json().decode()
    messages = [(f"{prefix}/events/{event.kind}", body, False)]
    payload = event.payload
    if event.kind in ("decision", "unknown_face", "spoof_suspected"):
        door = str(payload.get("door_id", "unknown"))
        messages.append((f"{prefix}/door/{door}/decision", body, False))
        if payload.get("outcome") == "granted":
            messages.append((f"{prefix}/door/{door}/person", str(payload.get("name")), True))
    elif event.kind in ("camera_up", "camera_down"):
        state = "online" if event.kind == "camera_up" else "offline"
        messages.append((f"{prefix}/camera/{event.camera_id}/state", state, True))
    return messages


def _discovery_messages(
    config: MqttConfig, doors: Sequence[str], cameras: Sequence[str]
) -> list[tuple[str, str, bool]]:
    prefix, root = config.topic_prefix, config.discovery_prefix
    device = {"identifiers": [config.client_id], "name": "facestream", "manufacturer": "facestream"}
    availability = {"topic": f"{prefix}/status"}
    messages = []
    for door in doors:
        entity = {
            "name": f"{door} last person",
            "unique_id": f"{_slug(config.client_id)}_door_{_slug(door)}",
            "state_topic": f"{prefix}/door/{door}/person",
            "icon": "mdi:door",
            "availability": availability,
            "device": device,
        }
        topic = f"{root}/sensor/{_slug(config.client_id)}/door_{_slug(door)}/config"
        messages.append((topic, json.dumps(entity), True))
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
        }
        topic = f"{root}/binary_sensor/{_slug(config.client_id)}/camera_{_slug(camera)}/config"
        messages.append((topic, json.dumps(entity), True))
    return messages


class MqttBridge:
    """Forwards the event stream to an MQTT broker from a background thread.

    client: Redis with bytes responses (``pipeline.gallery.connect``); doors and cameras:
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
        self._port = parts.port or 1883
        self._connected = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._mqtt = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=config.client_id, clean_session=False
        )
        if config.username is not None:
            password = config.password.get_secret_value() if config.password else None
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
        for topic, payload, retain in self._discovery:
            client.publish(topic, payload, 1, retain=retain)
        self._connected.set()
        self._metrics.mqtt_connected.set(1)
        _log.info("MQTT broker %s:%d connected", self._host, self._port)

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
            for topic, payload, retain in event_messages(event, self._config.topic_prefix):
                info = self._mqtt.publish(topic, payload, self._config.qos, retain=retain)
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
