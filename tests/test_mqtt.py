"""The MQTT bridge against a real broker (Debian's mosquitto on 127.0.0.1) and a real Redis:
every event arrives on its topics, Home Assistant discovery is announced, events written
while the broker is down arrive once it is up, and Redis failing under the bridge does not end
it."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
import redis
from paho.mqtt.enums import CallbackAPIVersion
from ports import free_port
from pydantic import ValidationError
from waiting import wait_until

from pipeline.errors import WebhookSignatureError
from pipeline.events.bus import EventBus
from pipeline.events.config import EventsConfig, MqttConfig
from pipeline.events.mqtt import MqttBridge
from pipeline.events.mqtt_messages import verify_message
from pipeline.metrics import PipelineMetrics
from pipeline.redis.server import EmbeddedRedis
from pipeline.types import Event

DEADLINE_SECONDS = 20.0


class Broker:
    """mosquitto on 127.0.0.1:port, startable and stoppable."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists():
            pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
        self.binary = binary
        self.port = free_port()
        self.config = directory / "mosquitto.conf"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    made = Broker(tmp_path)
    yield made
    made.stop()


class Subscriber:
    """A paho client collecting every message under a topic filter."""

    def __init__(self, port: int, topic: str) -> None:
        self.messages: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id="test-subscriber")
        self._client.on_message = self._on_message
        self._client.connect("127.0.0.1", port)
        self._client.subscribe(topic, qos=1)
        self._client.loop_start()

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.setdefault(message.topic, []).append(message.payload.decode())

    def wait_for(self, topic: str) -> list[str]:
        deadline = time.monotonic() + DEADLINE_SECONDS
        while time.monotonic() < deadline:
            with self._lock:
                if topic in self.messages:
                    return list(self.messages[topic])
            time.sleep(0.05)
        raise AssertionError(f"nothing on {topic} within {DEADLINE_SECONDS} s: {self.messages}")

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


def _decision(name: str) -> Event:
    payload = {"door_id": "front", "outcome": "granted", "name": name, "identity_id": "p1"}
    return Event.create("decision", "front-door", payload)


def _bridge(
    clients: Callable[[], redis.Redis], port: int
) -> tuple[MqttBridge, EventBus, PipelineMetrics]:
    client = clients()
    metrics = PipelineMetrics.create()
    bus = EventBus(client, EventsConfig(), metrics)
    config = MqttConfig(url=f"mqtt://127.0.0.1:{port}", client_id="facestream-test")
    bridge = MqttBridge(client, bus, config, metrics, doors=["front"], cameras=["front-door"])
    return bridge, bus, metrics


def test_events_reach_their_topics_with_discovery(
    broker: Broker, clients: Callable[[], redis.Redis]
) -> None:
    broker.start()
    subscriber = Subscriber(broker.port, "#")
    bridge, bus, metrics = _bridge(clients, broker.port)
    bridge.start()
    try:
        event = _decision("Ada")
        bus.publish(event)
        bus.publish(Event.create("camera_down", "front-door", {"last_error": "timeout"}))
        (body,) = subscriber.wait_for("facestream/events/decision")
        assert json.loads(body)["event_id"] == event.event_id
        wait_until(  # "" first: the bridge clears a retained name when it connects
            lambda: subscriber.wait_for("facestream/door/front/person")[-1:] == ["Ada"],
            DEADLINE_SECONDS,
            "Ada on the door's person topic",
        )
        assert subscriber.wait_for("facestream/camera/front-door/state") == ["offline"]
        assert "online" in subscriber.wait_for("facestream/status")
        discovery = subscriber.wait_for("homeassistant/sensor/facestream_test/door_front/config")
        assert json.loads(discovery[0])["state_topic"] == "facestream/door/front/person"
        assert metrics.registry.get_sample_value("facestream_mqtt_connected") == 1
        deadline = time.monotonic() + DEADLINE_SECONDS
        while (
            metrics.registry.get_sample_value(
                "facestream_mqtt_published_total", {"kind": "camera_down"}
            )
            != 1
            and time.monotonic() < deadline
        ):
            time.sleep(0.05)
        assert (
            metrics.registry.get_sample_value(
                "facestream_mqtt_published_total", {"kind": "decision"}
            )
            == 1
        )
    finally:
        bridge.stop()
        subscriber.close()
    assert metrics.registry.get_sample_value("facestream_mqtt_connected") == 0


def test_events_written_while_the_broker_is_down_arrive_later(
    broker: Broker, clients: Callable[[], redis.Redis]
) -> None:
    bridge, bus, metrics = _bridge(clients, broker.port)
    bridge.start()  # no broker yet: the bridge keeps retrying
    try:
        early = _decision("early")
        bus.publish(early)
        time.sleep(1.0)
        assert not bridge.connected
        assert metrics.registry.get_sample_value("facestream_mqtt_connected") == 0
        broker.start()
        subscriber = Subscriber(broker.port, "facestream/events/#")
        try:
            bodies = subscriber.wait_for("facestream/events/decision")
            assert early.event_id in {json.loads(body)["event_id"] for body in bodies}
        finally:
            subscriber.close()
    finally:
        bridge.stop()


def test_a_non_mqtt_url_is_a_config_error() -> None:
    with pytest.raises(ValidationError, match="mqtt://"):
        MqttConfig(url="http://127.0.0.1:1883")


def _refused_commands(admin: redis.Redis) -> set[str]:
    """The commands Redis refused to user "bridge" (ACL LOG)."""
    refused = set()
    for entry in admin.acl_log():
        fields = {
            (k.decode() if isinstance(k, bytes) else str(k)): (
                v.decode() if isinstance(v, bytes) else str(v)
            )
            for k, v in entry.items()
        }
        if fields.get("username") == "bridge" and fields.get("reason") == "command":
            refused.add(fields.get("object", "").lower())
    return refused


def test_the_bridge_rides_out_redis_refusing_its_acknowledgements(
    broker: Broker,
    server: EmbeddedRedis,
    clients: Callable[[], redis.Redis],
) -> None:
    """Redis refuses XACK after an event was published (a real ACL rule, as a restart between
    read and acknowledgement would fail it): the bridge keeps running and reporting ready,
    and once XACK is allowed again it acknowledges the first event and forwards the next."""
    broker.start()
    admin = clients()
    password = "bridge-password-0123456789"
    admin.acl_setuser(
        "bridge", enabled=True, passwords=[f"+{password}"], keys=["*"],
        categories=["+@all"], commands=["-xack"],
    )  # fmt: skip
    bridge_redis = redis.Redis(
        unix_socket_path=str(server.socket_path),
        username="bridge",
        password=password,
        socket_timeout=2.0,
    )
    metrics = PipelineMetrics.create()
    bus = EventBus(admin, EventsConfig(), metrics)
    config = MqttConfig(
        url=f"mqtt://127.0.0.1:{broker.port}",
        client_id="facestream-test",
        home_assistant_discovery=False,
    )
    bridge = MqttBridge(bridge_redis, bus, config, metrics)
    subscriber = Subscriber(broker.port, "facestream/events/#")
    bridge.start()
    try:
        first = _decision("first")
        bus.publish(first)
        subscriber.wait_for("facestream/events/decision")
        wait_until(  # Redis's ACL LOG: XACK was tried
            lambda: "xack" in _refused_commands(admin),
            DEADLINE_SECONDS,
            "the bridge trying to acknowledge",
        )
        assert bridge.connected  # the thread is alive and the broker up: ready, rightly

        admin.acl_setuser("bridge", enabled=True, commands=["+xack"])
        second = _decision("second")
        bus.publish(second)
        deadline = time.monotonic() + DEADLINE_SECONDS
        while True:
            bodies = subscriber.wait_for("facestream/events/decision")
            if second.event_id in {json.loads(body)["event_id"] for body in bodies}:
                break
            assert time.monotonic() < deadline, "the bridge stopped forwarding"
            time.sleep(0.05)
        while admin.xpending(bus.stream_key, config.group)["pending"] != 0:
            assert time.monotonic() < deadline, "the first event was never acknowledged"
            time.sleep(0.05)
        assert bridge.connected
    finally:
        bridge.stop()
        subscriber.close()
        bridge_redis.close()
    assert not bridge.connected


def test_a_non_tls_option_without_mqtts_and_secrets_from_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """mqtts:// is accepted (port 8883 by default) with CA and client certificate options;
    those options without mqtts:// are refused; the password and signing secret come from
    files named in the environment."""
    assert MqttConfig(url="mqtts://broker.example", ca_file=tmp_path / "ca.pem").url
    with pytest.raises(ValidationError, match="need an mqtts"):
        MqttConfig(url="mqtt://broker.example", ca_file=tmp_path / "ca.pem")
    with pytest.raises(ValidationError, match="go together"):
        MqttConfig(url="mqtts://broker.example", cert_file=tmp_path / "client.pem")
    (tmp_path / "password").write_text("broker-password\n")
    (tmp_path / "signing").write_text("mqtt-signing-secret-0123456789\n")
    monkeypatch.setenv("FACESTREAM_MQTT_PASSWORD_FILE", str(tmp_path / "password"))
    monkeypatch.setenv("FACESTREAM_MQTT_SIGNING_SECRET_FILE", str(tmp_path / "signing"))
    config = MqttConfig(url="mqtts://broker.example", username="facestream")
    assert config.resolved_password is not None
    assert config.resolved_password.get_secret_value() == "broker-password"
    assert config.resolved_signing_secret is not None
    assert "broker-password" not in str(config.model_dump())


SIGNING_SECRET = "mqtt-signing-secret-0123456789"


class OrderedSubscriber:
    """A client that subscribes to ``topics`` one after another and records every message in
    arrival order as (topic, payload, retained)."""

    def __init__(self, port: int, topics: list[str]) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"ordered-{port}")
        self._client.on_message = self._on_message
        self._client.connect("127.0.0.1", port)
        for topic in topics:  # a broker sends a SUBSCRIBE's retained messages in order
            self._client.subscribe(topic, qos=1)
        self._client.loop_start()

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((message.topic, bytes(message.payload), bool(message.retain)))

    def received(self) -> list[tuple[str, bytes, bool]]:
        with self._lock:
            return list(self.messages)

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()


def test_messages_are_signed_forged_entries_skipped_and_no_name_is_retained(
    broker: Broker, clients: Callable[[], redis.Redis]
) -> None:
    """Issue 23 (MQTT): decisions went out unsigned and door/<id>/person kept the last name
    retained. With a signing secret every message verifies for its own topic, an event that
    someone wrote straight into the Redis stream (no MAC) is not forwarded, and after the
    bridge ran, a new subscriber gets no retained name: not the one an older version left,
    not the one just granted."""
    broker.start()
    leftover = paho.Client(CallbackAPIVersion.VERSION2, client_id="older-version")
    leftover.connect("127.0.0.1", broker.port)
    leftover.loop_start()
    leftover.publish(
        "facestream/door/front/person", "Old Name", qos=1, retain=True
    ).wait_for_publish(5)
    leftover.loop_stop()
    leftover.disconnect()

    client = clients()
    metrics = PipelineMetrics.create()
    config = MqttConfig(
        url=f"mqtt://127.0.0.1:{broker.port}", client_id="facestream-test",
        signing_secret=SIGNING_SECRET, home_assistant_discovery=False,
    )  # fmt: skip
    bus = EventBus(client, EventsConfig(), metrics, entry_key=config.stream_entry_key)
    bridge = MqttBridge(client, bus, config, metrics, doors=["front"])
    subscriber = Subscriber(broker.port, "facestream/door/#")
    bridge.start()
    try:
        bus.publish(_decision("Ada"))
        forged = _decision("MALLORY")
        client.xadd(bus.stream_key, {b"event": forged.to_json()})  # no MAC: not the service's
        last = _decision("Bob")
        bus.publish(last)
        wait_until(
            lambda: len(subscriber.messages.get("facestream/door/front/decision", [])) >= 2,
            DEADLINE_SECONDS,
            "both genuine decisions",
        )
        decisions = subscriber.wait_for("facestream/door/front/decision")
        now = time.time()
        payloads = [
            verify_message(
                config.resolved_signing_secret,  # type: ignore[arg-type]  # set above
                "facestream/door/front/decision", body.encode(), now=now, window_seconds=300,
            )
            for body in decisions
        ]  # fmt: skip
        names = [json.loads(payload)["payload"]["name"] for payload in payloads]
        assert names == ["Ada", "Bob"]  # MALLORY, between them, was skipped
        with pytest.raises(WebhookSignatureError):  # replayed to another topic
            verify_message(
                config.resolved_signing_secret,  # type: ignore[arg-type]  # set above
                "facestream/door/back/decision", decisions[0].encode(), now=now,
                window_seconds=300,
            )  # fmt: skip
    finally:
        bridge.stop()
        subscriber.close()

    late = OrderedSubscriber(broker.port, ["facestream/door/front/person", "facestream/status"])
    try:
        wait_until(
            lambda: any(topic == "facestream/status" for topic, _, _ in late.received()),
            DEADLINE_SECONDS,
            "the retained status",
        )
        retained_people = [
            payload for topic, payload, _ in late.received() if topic.endswith("/person")
        ]
        assert retained_people == []
    finally:
        late.close()
