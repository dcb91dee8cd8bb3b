"""Events against a real redis-server (the service's launcher) and a real HTTP receiver."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import random
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import cast

import pytest
import redis
from pydantic import SecretStr, ValidationError

from engines.errors import FaceStreamError
from pipeline.config.service import GalleryConfig
from pipeline.errors import (
    EventFormatError,
    EventStoreError,
    EventsUnavailableError,
    WebhookSignatureError,
)
from pipeline.events.bus import EventBus
from pipeline.events.config import EventsConfig
from pipeline.events.signing import (
    DESTINATION_HEADER,
    DOOR_HEADER,
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SignedMessage,
    sign,
    verify_signature,
)
from pipeline.events.webhooks import WebhookDeliverer
from pipeline.gallery.store import connect
from pipeline.metrics import PipelineMetrics
from pipeline.redis.server import EmbeddedRedis
from pipeline.types import Event, JsonValue

READY_SECONDS = 10.0
DELIVERY_SECONDS = 15.0
SECRET = "test-secret-7f3a9c1e5b2d4a68"
REDIS_CLIENT_CONFIG = GalleryConfig(socket_timeout_seconds=2.0)


def _eventually(condition: Callable[[], bool], timeout_seconds: float = DELIVERY_SECONDS) -> bool:
    """Poll ``condition`` until it holds or the deadline passes."""
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def _sample(metrics: PipelineMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


@dataclass(frozen=True, slots=True)
class Received:
    """One request the receiver got: headers (lower-case names) and the raw body."""

    headers: dict[str, str]
    body: bytes


class Receiver:
    """A webhook receiver on 127.0.0.1 that records requests.

    It binds a port at once but refuses connections (bound, not listening) until ``listen()``;
    ``status`` is the HTTP status it answers with.
    """

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.status = 200
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                with receiver._lock:
                    receiver.requests.append(
                        Received({k.lower(): v for k, v in self.headers.items()}, body)
                    )
                    status = receiver.status
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass  # keep test output quiet

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler, bind_and_activate=False)
        self._server.daemon_threads = True
        self._server.server_bind()  # a bound socket that is not listening refuses connections
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The URL webhooks are POSTed to."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/hook"

    def listen(self) -> None:
        """Start accepting and answering requests."""
        self._server.server_activate()
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def received(self) -> list[Received]:
        """A copy of the requests so far."""
        with self._lock:
            return list(self.requests)

    def close(self) -> None:
        """Stop serving and release the port."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A receiver that refuses connections until ``listen()``; closed at teardown."""
    made = Receiver()
    yield made
    made.close()


@pytest.fixture
def deliverers() -> Iterator[Callable[[WebhookDeliverer], WebhookDeliverer]]:
    """Registers deliverers so that every one is stopped at teardown, even on failure."""
    made: list[WebhookDeliverer] = []

    def register(deliverer: WebhookDeliverer) -> WebhookDeliverer:
        made.append(deliverer)
        return deliverer

    yield register
    for deliverer in made:
        deliverer.stop(timeout_seconds=10)


def _config(receiver: Receiver | None = None, **overrides: object) -> EventsConfig:
    fields: dict[str, object] = {
        "webhook_urls": (receiver.url,) if receiver is not None else (),
        "webhook_secret": SECRET if receiver is not None else None,
        "request_timeout_seconds": 2.0,
        "retry_initial_seconds": 0.05,
        "retry_max_seconds": 0.2,
        "poll_interval_seconds": 0.02,
        "store_retry_max_seconds": 0.2,
        "claim_lease_seconds": 10.0,
    }
    fields.update(overrides)
    return EventsConfig.model_validate(fields)


def _decision(camera_id: str = "door-1", **payload: JsonValue) -> Event:
    return Event.create("decision", camera_id, {"identity_id": "alice", "granted": True, **payload})


StreamEntries = list[tuple[bytes, dict[bytes, bytes]]]


def _read_group(client: redis.Redis, stream_key: str, consumer: str) -> StreamEntries:
    """New entries for ``consumer`` of group "doors" (redis-py types the reply loosely)."""
    reply = client.xreadgroup("doors", consumer, {stream_key: ">"}, count=100)
    if not reply:
        return []
    [(_stream, entries)] = cast(list[tuple[bytes, StreamEntries]], reply)
    return entries


def _assert_genuine(
    request: Received, event: Event, url: str, *, secret: str = SECRET, door: str = ""
) -> None:
    """The request carries ``event`` as its body, its id, and a fresh signature that is valid
    for ``url`` and ``door`` under ``secret``."""
    assert request.headers["content-type"] == "application/json"
    assert request.headers[EVENT_ID_HEADER.lower()] == event.event_id
    assert request.headers[DESTINATION_HEADER.lower()] == url
    assert request.headers[DOOR_HEADER.lower()] == door
    assert Event.from_json(request.body) == event
    message = SignedMessage(request.headers[TIMESTAMP_HEADER.lower()], url, door, request.body)
    verify_signature(
        secret,
        message,
        request.headers[SIGNATURE_HEADER.lower()],
        now=time.time(),
        window_seconds=300,
    )


@pytest.mark.parametrize(
    ("error", "builtin"),
    [
        (EventFormatError, ValueError),
        (EventsUnavailableError, ConnectionError),
        (EventStoreError, RuntimeError),
        (WebhookSignatureError, ValueError),
    ],
)
def test_event_errors_have_project_root_and_builtin(
    error: type[Exception], builtin: type[Exception]
) -> None:
    """Every events error derives from FaceStreamError and the builtin a caller would catch."""
    assert issubclass(error, FaceStreamError)
    assert issubclass(error, builtin)


def test_event_json_round_trip_and_read_only_payload() -> None:
    """An event survives to_json/from_json unchanged, and its payload cannot be edited."""
    event = _decision(distances=[0.31, 0.4], where={"door": "front"})
    decoded = Event.from_json(event.to_json())
    assert decoded == event
    assert len(event.event_id) == 32
    assert decoded.payload["distances"] == (0.31, 0.4)
    with pytest.raises(TypeError):
        event.payload["granted"] = False  # type: ignore[index]  # proves it is read-only


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{", "not valid JSON"),
        (b"[]", "expected an object"),
        (b'{"kind": "decision"}', "expected keys"),
        (
            b'{"event_id": "x", "kind": "decision", "camera_id": "c", "created": 1, "payload": {}}',
            "event_id",
        ),
        (
            b'{"event_id": "' + b"a" * 32 + b'", "kind": "party", "camera_id": "c", '
            b'"created": 1, "payload": {}}',
            "kind",
        ),
        (
            b'{"event_id": "' + b"a" * 32 + b'", "kind": "camera_up", "camera_id": "c", '
            b'"created": 1, "payload": []}',
            "payload",
        ),
        (
            b'{"event_id": "' + b"a" * 32 + b'", "kind": "camera_up", "camera_id": "c d", '
            b'"created": 1, "payload": {}}',
            "camera_id",
        ),
    ],
)
def test_event_from_json_rejects_malformed_input(data: bytes, message: str) -> None:
    """Malformed event JSON raises EventFormatError naming what is wrong."""
    with pytest.raises(EventFormatError, match=message):
        Event.from_json(data)


def test_event_rejects_payloads_that_are_not_json() -> None:
    """NaN, non-string keys and arbitrary objects in a payload are refused at construction."""
    with pytest.raises(EventFormatError, match="finite"):
        Event.create("decision", "door-1", {"distance": float("nan")})
    with pytest.raises(EventFormatError, match="string keys"):
        Event.create("decision", "door-1", {"nested": {1: "x"}})  # type: ignore[dict-item]
    with pytest.raises(EventFormatError, match="got object"):
        Event.create("decision", "door-1", {"thing": object()})  # type: ignore[dict-item]


def test_config_requires_a_long_secret_with_webhooks_and_hides_it() -> None:
    """Webhook urls need a secret of >= 16 characters; the secret never shows in repr."""
    with pytest.raises(ValidationError, match="webhook_secret is not"):
        EventsConfig(webhook_urls=("http://127.0.0.1:9/hook",))
    with pytest.raises(ValidationError, match="at least 16"):
        EventsConfig(webhook_urls=("http://127.0.0.1:9/hook",), webhook_secret=SecretStr("short"))
    with pytest.raises(ValidationError, match="expected http"):
        EventsConfig(webhook_urls=("ftp://example/hook",), webhook_secret=SecretStr(SECRET))
    with pytest.raises(ValidationError, match="claim_lease_seconds"):
        EventsConfig(claim_lease_seconds=5, request_timeout_seconds=5)
    with pytest.raises(ValidationError, match="retry_initial_seconds"):
        EventsConfig(retry_initial_seconds=10, retry_max_seconds=5)
    config = EventsConfig(webhook_urls=("http://127.0.0.1:9/hook",), webhook_secret=SECRET)
    assert SECRET not in repr(config)
    assert SECRET not in str(config.model_dump())


def test_verify_signature_accepts_genuine_and_rejects_forgeries_and_replays() -> None:
    """A fresh, correct signature passes; a wrong one, a tampered body, another destination,
    another door, a replay older than 5 minutes, a timestamp from the future and a
    non-numeric timestamp are rejected."""
    now = 1_700_000_000.0
    body = _decision().to_json()
    url = "https://door.example/hook"
    message = SignedMessage(str(int(now)), url, "front", body)
    signature = sign(SECRET, message)
    assert signature.startswith("v2=")
    verify_signature(SECRET, message, signature, now=now, window_seconds=300)
    verify_signature(SecretStr(SECRET), message, signature, now=now + 299, window_seconds=300)

    def rejected(candidate: SignedMessage, signed: str, match: str, secret: str = SECRET) -> None:
        with pytest.raises(WebhookSignatureError, match=match):
            verify_signature(secret, candidate, signed, now=now, window_seconds=300)

    rejected(message, "v2=" + "0" * 64, "does not match")
    rejected(message, signature, "does not match", secret="another-secret-of-16+")
    tampered = body.replace(b'"granted":true', b'"granted":false')
    assert tampered != body
    rejected(SignedMessage(message.timestamp, url, "front", tampered), signature, "does not match")
    later = SignedMessage(str(int(now) + 1), url, "front", body)
    rejected(later, signature, "does not match")  # the timestamp is signed
    rejected(SignedMessage(message.timestamp, "https://log.example/", "front", body), signature,
             "does not match")  # fmt: skip
    rejected(SignedMessage(message.timestamp, url, "server-room", body), signature,
             "does not match")  # fmt: skip

    old = SignedMessage(str(int(now) - 301), url, "front", body)
    rejected(old, sign(SECRET, old), "replay window")
    future = SignedMessage(str(int(now) + 301), url, "front", body)
    rejected(future, sign(SECRET, future), "replay window")
    rejected(SignedMessage("soon", url, "front", body), signature, "unix seconds")


def test_stream_entries_are_read_once_by_a_consumer_group(
    clients: Callable[[], redis.Redis],
) -> None:
    """Published events reach a consumer group once each (XREADGROUP, XACK); publishing the
    same event again writes nothing; MAXLEN ~ trims the stream."""
    metrics = PipelineMetrics.create()
    bus = EventBus(clients(), _config(stream_maxlen=10), metrics)
    events = [_decision(), Event.create("camera_down", "door-2", {"reason": "stalled"})]
    for event in events:
        assert bus.publish(event) is not None
    assert bus.publish(events[0]) is None  # a retried publish: the idempotency key holds
    assert _sample(metrics, "facestream_events_published_total", kind="decision") == 1

    consumer = clients()
    consumer.xgroup_create(bus.stream_key, "doors", id="0")
    entries = _read_group(consumer, bus.stream_key, "c1")
    assert [Event.from_stream_fields(fields) for _, fields in entries] == events
    assert _read_group(consumer, bus.stream_key, "c2") == []
    assert consumer.xack(bus.stream_key, "doors", *[entry_id for entry_id, _ in entries]) == 2
    assert consumer.xpending(bus.stream_key, "doors")["pending"] == 0
    assert bus.pending_deliveries() == 0  # no webhooks configured: stream only

    for _ in range(400):
        bus.publish(_decision())
    assert consumer.xlen(bus.stream_key) < 402  # approximate trimming removed whole nodes


def test_webhook_is_delivered_signed_once(
    clients: Callable[[], redis.Redis],
    receiver: Receiver,
    deliverers: Callable[[WebhookDeliverer], WebhookDeliverer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A published event is POSTed once with its id and a valid signature; the secret never
    appears in the logs (captured at DEBUG)."""
    caplog.set_level(logging.DEBUG)
    receiver.listen()
    metrics = PipelineMetrics.create()
    config = _config(receiver)
    bus = EventBus(clients(), config, metrics)
    event = _decision()
    bus.publish(event)
    assert bus.pending_deliveries() == 1

    deliverers(WebhookDeliverer(clients(), config, metrics)).start()
    assert _eventually(lambda: len(receiver.received()) == 1)
    _assert_genuine(receiver.received()[0], event, receiver.url)
    assert _eventually(lambda: bus.pending_deliveries() == 0)
    assert _eventually(lambda: _sample(metrics, "facestream_events_delivered_total") == 1)
    assert len(receiver.received()) == 1
    assert SECRET not in caplog.text
    assert "webhook deliverer started" in caplog.text  # the logs were captured at all


def test_receiver_down_then_up_is_delivered_after_retries(
    clients: Callable[[], redis.Redis],
    receiver: Receiver,
    deliverers: Callable[[WebhookDeliverer], WebhookDeliverer],
) -> None:
    """Connection refused, then HTTP 503, then 200: the event arrives with the same id."""
    metrics = PipelineMetrics.create()
    config = _config(receiver, max_attempts=1000)
    bus = EventBus(clients(), config, metrics)
    event = _decision()
    bus.publish(event)
    deliverers(WebhookDeliverer(clients(), config, metrics, jitter=random.Random(0))).start()

    assert _eventually(
        lambda: _sample(metrics, "facestream_events_failed_total", reason="connect") >= 2
    )
    assert bus.pending_deliveries() == 1
    receiver.status = 503
    receiver.listen()
    assert _eventually(lambda: len(receiver.received()) >= 2)
    assert _sample(metrics, "facestream_events_failed_total", reason="http_status") >= 1
    receiver.status = 200
    assert _eventually(lambda: bus.pending_deliveries() == 0)
    requests = receiver.received()
    assert {request.headers[EVENT_ID_HEADER.lower()] for request in requests} == {event.event_id}
    _assert_genuine(requests[-1], event, receiver.url)
    assert _sample(metrics, "facestream_events_delivered_total") == 1


def test_two_deliverers_never_send_the_same_attempt(
    clients: Callable[[], redis.Redis],
    receiver: Receiver,
    deliverers: Callable[[WebhookDeliverer], WebhookDeliverer],
) -> None:
    """Two deliverers on one outbox: every event is POSTed exactly once (atomic claims)."""
    receiver.listen()
    metrics = PipelineMetrics.create()
    config = _config(receiver)
    bus = EventBus(clients(), config, metrics)
    events = [_decision() for _ in range(40)]
    for event in events:
        bus.publish(event)
    for _ in range(2):
        deliverers(WebhookDeliverer(clients(), config, metrics)).start()
    assert _eventually(lambda: bus.pending_deliveries() == 0)
    ids = [request.headers[EVENT_ID_HEADER.lower()] for request in receiver.received()]
    assert sorted(ids) == sorted(event.event_id for event in events)


def test_hopeless_delivery_is_dead_lettered(
    clients: Callable[[], redis.Redis],
    receiver: Receiver,
    deliverers: Callable[[WebhookDeliverer], WebhookDeliverer],
) -> None:
    """A receiver answering 500 gets max_attempts tries, then the delivery is dead-lettered."""
    receiver.status = 500
    receiver.listen()
    metrics = PipelineMetrics.create()
    config = _config(receiver, max_attempts=3)
    bus = EventBus(clients(), config, metrics)
    event = _decision()
    bus.publish(event)
    deliverers(WebhookDeliverer(clients(), config, metrics)).start()
    assert _eventually(lambda: len(bus.dead_letters()) == 1)
    [letter] = bus.dead_letters()
    assert letter.event == event
    assert letter.attempts == 3
    assert letter.last_error == "HTTP 500"
    assert letter.url == receiver.url
    assert len(receiver.received()) == 3
    assert bus.pending_deliveries() == 0
    assert _sample(metrics, "facestream_events_dead_lettered_total") == 1


def test_stop_returns_promptly_during_a_long_backoff(
    clients: Callable[[], redis.Redis], receiver: Receiver
) -> None:
    """With an hour's backoff ahead, stop() ends the thread at once; the delivery stays queued."""
    metrics = PipelineMetrics.create()
    config = _config(receiver, retry_initial_seconds=3600, retry_max_seconds=3600)
    bus = EventBus(clients(), config, metrics)
    bus.publish(_decision())
    deliverer = WebhookDeliverer(clients(), config, metrics)
    deliverer.start()
    try:
        assert _eventually(
            lambda: _sample(metrics, "facestream_events_failed_total", reason="connect") == 1
        )
    finally:
        deliverer.stop(timeout_seconds=5)  # far below the 1800-3600 s backoff
    assert not deliverer.running
    assert bus.pending_deliveries() == 1  # nothing lost: retried by the next deliverer


def test_event_survives_redis_killed_between_publish_and_delivery(
    server: EmbeddedRedis,
    receiver: Receiver,
    deliverers: Callable[[WebhookDeliverer], WebhookDeliverer],
) -> None:
    """Publish while the receiver is down, SIGKILL Redis, restart it on the same data dir, then
    bring the receiver up: the event is in the stream (AOF) and is delivered; the deliverer
    rode out the outage and counted it."""
    metrics = PipelineMetrics.create()
    config = _config(receiver, max_attempts=1000)
    publisher = connect(server.url, REDIS_CLIENT_CONFIG)
    delivering = connect(server.url, REDIS_CLIENT_CONFIG)
    try:
        bus = EventBus(publisher, config, metrics)
        event = _decision()
        bus.publish(event)
        deliverers(WebhookDeliverer(delivering, config, metrics)).start()
        assert _eventually(
            lambda: _sample(metrics, "facestream_events_failed_total", reason="connect") >= 1
        )

        os.kill(server.process_id, signal.SIGKILL)
        server.stop()
        assert _eventually(
            lambda: (
                _sample(metrics, "facestream_events_store_errors_total", operation="deliver") >= 1
            )
        )
        with pytest.raises(EventsUnavailableError):
            bus.publish(_decision())

        with EmbeddedRedis(server.data_dir) as restarted:
            restarted.wait_ready(timeout_seconds=READY_SECONDS)
            receiver.listen()
            assert _eventually(lambda: len(receiver.received()) >= 1)
            _assert_genuine(receiver.received()[0], event, receiver.url)
            assert _eventually(lambda: bus.pending_deliveries() == 0)
            [(_, fields)] = cast(StreamEntries, publisher.xrange(bus.stream_key))
            assert Event.from_stream_fields(fields) == event
    finally:
        publisher.close()
        delivering.close()


class DrippingReceiver:
    """An HTTP server on 127.0.0.1 that reads a request, then sends its reply's status line
    and headers one byte at a time (each byte well within a read timeout) and never finishes,
    until ``close()``."""

    def __init__(self, byte_interval_seconds: float = 0.2) -> None:
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen()
        self._interval_seconds = byte_interval_seconds
        self._closing = threading.Event()
        self.connections = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._listener.getsockname()[:2]
        return f"http://{host}:{port}/hook"

    def _serve(self) -> None:
        self._listener.settimeout(0.1)
        while not self._closing.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed
            self.connections += 1
            threading.Thread(target=self._drip, args=(connection,), daemon=True).start()

    def _drip(self, connection: socket.socket) -> None:
        with connection:
            connection.recv(65536)
            reply = b"HTTP/1.1 200 OK\r\nX-Drip: " + b"a" * 100_000
            for index in range(len(reply)):
                if self._closing.wait(self._interval_seconds):
                    return
                try:
                    connection.sendall(reply[index : index + 1])
                except OSError:
                    return  # the deliverer gave up and closed the connection

    def close(self) -> None:
        self._closing.set()
        self._listener.close()
        self._thread.join(timeout=5)


def test_a_receiver_dripping_its_reply_is_cut_off_at_the_deadline(
    clients: Callable[[], redis.Redis],
    receiver: Receiver,
    deliverers: Callable[[WebhookDeliverer], WebhookDeliverer],
) -> None:
    """A receiver that sends a byte every 0.2 s never trips httpx's per-step timeouts; the
    deadline on the whole request (request_timeout_seconds) ends the attempt, the delivery is
    dead-lettered as a timeout, and the healthy receiver behind it gets its event."""
    receiver.listen()
    dripping = DrippingReceiver()
    try:
        metrics = PipelineMetrics.create()
        config = _config(
            receiver,
            webhook_urls=(dripping.url, receiver.url),
            request_timeout_seconds=1.0,
            max_attempts=1,
        )
        bus = EventBus(clients(), config, metrics)
        event = _decision()
        bus.publish(event)
        deliverers(WebhookDeliverer(clients(), config, metrics)).start()
        assert _eventually(lambda: len(bus.dead_letters()) == 1)
        [letter] = bus.dead_letters()
        assert letter.url == dripping.url
        assert "timed out" in letter.last_error
        assert "request_timeout_seconds" in letter.last_error
        assert _sample(metrics, "facestream_events_failed_total", reason="timeout") == 1
        assert _eventually(lambda: len(receiver.received()) == 1)
        _assert_genuine(receiver.received()[0], event, receiver.url)
        assert dripping.connections == 1
    finally:
        dripping.close()


def test_a_grant_is_not_delivered_after_it_expires(
    clients: Callable[[], redis.Redis],
    receiver: Receiver,
    deliverers: Callable[[WebhookDeliverer], WebhookDeliverer],
) -> None:
    """A granted decision older than grant_expiry_seconds (it waited out an outage) is
    dead-lettered as expired without being POSTed; a denial of the same age and a fresh grant
    are delivered."""
    receiver.listen()
    metrics = PipelineMetrics.create()
    config = _config(receiver, grant_expiry_seconds=30.0)
    bus = EventBus(clients(), config, metrics)
    hour_ago = time.time() - 3600
    stale_grant = Event.create(
        "decision", "door-1", {"door_id": "front", "outcome": "granted"}, created=hour_ago
    )
    stale_denial = Event.create(
        "decision", "door-1", {"door_id": "front", "outcome": "denied"}, created=hour_ago
    )
    fresh_grant = Event.create("decision", "door-1", {"door_id": "front", "outcome": "granted"})
    for event in (stale_grant, stale_denial, fresh_grant):
        bus.publish(event)
    deliverers(WebhookDeliverer(clients(), config, metrics)).start()
    assert _eventually(lambda: bus.pending_deliveries() == 0)
    [letter] = bus.dead_letters()
    assert letter.event == stale_grant
    assert letter.last_error.startswith("expired")
    assert "grant_expiry_seconds" in letter.last_error
    delivered = {request.headers[EVENT_ID_HEADER.lower()] for request in receiver.received()}
    assert delivered == {stale_denial.event_id, fresh_grant.event_id}


# ---- what someone with write access to Redis can no longer do (issue 23) ----

ATTACKER_SECRET_GUESS = "attacker-guess-0123456789abcdef"


def _forge(client: redis.Redis, bus: EventBus, delivery_id: str, record: dict[str, object]) -> None:
    """Write a delivery straight into the outbox, as an attacker with Redis access would."""
    namespace_prefix = bus.stream_key.removesuffix("stream")
    client.hset(namespace_prefix + "deliveries", delivery_id, json.dumps(record))
    client.zadd(namespace_prefix + "outbox", {delivery_id: time.time()})


def _mallory_grant() -> Event:
    return Event.create(
        "decision",
        "server-room-cam",
        {"door_id": "server-room", "outcome": "granted", "name": "MALLORY"},
    )


def test_a_forged_outbox_record_is_dead_lettered_and_counted_never_delivered(
    clients: Callable[[], redis.Redis], receiver: Receiver
) -> None:
    """The attack of issue 23: a grant written straight into the outbox (HSET + ZADD) was
    signed with the real secret and POSTed. Now the record of the old shape (url + event) and
    one naming the real webhook with a made-up MAC are both refused: no request reaches the
    receiver, both are dead-lettered, and both are counted by reason. A genuine event
    published afterwards is still delivered."""
    receiver.listen()
    metrics = PipelineMetrics.create()
    config = _config(receiver)
    [webhook] = config.receivers
    client = clients()
    bus = EventBus(client, config, metrics)
    grant = _mallory_grant()
    body = grant.to_json().decode()
    _forge(client, bus, f"{grant.event_id}:{webhook.key}",
           {"url": receiver.url, "event": body, "expires_at": None})  # fmt: skip
    second = _mallory_grant()
    forged_mac = hmac.new(ATTACKER_SECRET_GUESS.encode(), body.encode(), hashlib.sha256)
    _forge(client, bus, f"{second.event_id}:{webhook.key}",
           {"webhook": webhook.key, "event": second.to_json().decode(), "expires_at": None,
            "mac": forged_mac.hexdigest()})  # fmt: skip

    deliverer = WebhookDeliverer(clients(), config, metrics)
    assert deliverer.deliver_due() == 2
    assert receiver.received() == []
    letters = bus.dead_letters()
    assert sorted(letter.event.event_id for letter in letters if letter.event) == sorted(
        [grant.event_id, second.event_id]
    )
    assert all(letter.last_error.startswith("refused") for letter in letters)
    assert _sample(metrics, "facestream_events_rejected_total", reason="malformed") == 1
    assert _sample(metrics, "facestream_events_rejected_total", reason="forged") == 1
    assert _sample(metrics, "facestream_events_dead_lettered_total") == 2
    assert bus.pending_deliveries() == 0

    genuine = _decision()
    bus.publish(genuine)
    assert deliverer.deliver_due() == 1
    [request] = receiver.received()
    _assert_genuine(request, genuine, receiver.url)


def test_a_record_naming_a_foreign_url_is_never_posted(clients: Callable[[], redis.Redis]) -> None:
    """The signing oracle of issue 23: a record pointing at the attacker's host got a validly
    signed body there. Now a record names its webhook by config key only: naming the key of a
    url the config does not list, or carrying a url beside a real key, sends nothing to that
    url, and the record is dead-lettered as unknown_destination or forged."""
    door, attacker = Receiver(), Receiver()
    try:
        door.listen()
        attacker.listen()
        metrics = PipelineMetrics.create()
        config = _config(door)
        [webhook] = config.receivers
        client = clients()
        bus = EventBus(client, config, metrics)
        event = _mallory_grant()
        body = event.to_json().decode()
        attacker_key = hashlib.sha256(attacker.url.encode()).hexdigest()[:16]
        _forge(client, bus, f"{event.event_id}:{attacker_key}",
               {"webhook": attacker_key, "url": attacker.url, "event": body,
                "expires_at": None, "mac": "0" * 64})  # fmt: skip
        other = _mallory_grant()
        _forge(client, bus, f"{other.event_id}:{webhook.key}",
               {"webhook": webhook.key, "url": attacker.url, "event": other.to_json().decode(),
                "expires_at": None, "mac": "0" * 64})  # fmt: skip

        assert WebhookDeliverer(clients(), config, metrics).deliver_due() == 2
        assert attacker.received() == []
        assert door.received() == []
        assert len(bus.dead_letters()) == 2
        assert (
            _sample(metrics, "facestream_events_rejected_total", reason="unknown_destination") == 1
        )
        assert _sample(metrics, "facestream_events_rejected_total", reason="forged") == 1
    finally:
        door.close()
        attacker.close()


def test_each_receiver_has_its_own_secret_and_gets_only_its_doors(
    clients: Callable[[], redis.Redis],
) -> None:
    """[[events.webhooks]]: the front door's controller gets only front's decisions, signed with
    its own secret for its url and door; a log sink taking everything has another secret, so
    the sink's requests do not verify at the controller (it cannot forge grants for it)."""
    controller, sink = Receiver(), Receiver()
    controller_secret, sink_secret = "front-controller-secret-0123", "log-sink-secret-0123456789"
    try:
        controller.listen()
        sink.listen()
        metrics = PipelineMetrics.create()
        config = _config(
            webhooks=(
                {"url": controller.url, "secret": controller_secret, "doors": ["front"]},
                {"url": sink.url, "secret": sink_secret},
            )
        )
        bus = EventBus(clients(), config, metrics)
        front = Event.create("decision", "cam-1", {"door_id": "front", "outcome": "granted"})
        back = Event.create("decision", "cam-2", {"door_id": "back", "outcome": "granted"})
        camera = Event.create("camera_up", "cam-1", {"state": "running"})
        for event in (front, back, camera):
            bus.publish(event)
        assert WebhookDeliverer(clients(), config, metrics).deliver_due() == 4
        [to_controller] = controller.received()
        _assert_genuine(to_controller, front, controller.url, secret=controller_secret,
                        door="front")  # fmt: skip
        sunk = {Event.from_json(request.body).event_id: request for request in sink.received()}
        assert set(sunk) == {front.event_id, back.event_id, camera.event_id}
        _assert_genuine(sunk[back.event_id], back, sink.url, secret=sink_secret, door="back")
        _assert_genuine(sunk[camera.event_id], camera, sink.url, secret=sink_secret)
        with pytest.raises(WebhookSignatureError):  # the sink's copy, replayed to the door
            _assert_genuine(sunk[front.event_id], front, sink.url, secret=controller_secret,
                            door="front")  # fmt: skip
    finally:
        controller.close()
        sink.close()


def test_webhook_secrets_come_from_a_file_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A webhook's secret can be a file (a mounted k8s Secret, trailing newline dropped) or an
    environment variable (which wins); the older shared secret reads FACESTREAM_WEBHOOK_SECRET
    or the file FACESTREAM_WEBHOOK_SECRET_FILE names. A missing file or no secret at all is a
    config error naming the webhook."""
    url = "http://127.0.0.1:9/hook"
    secret_file = tmp_path / "front-secret"
    secret_file.write_text("from-a-mounted-secret-0123\n")
    [webhook] = EventsConfig(webhooks=({"url": url, "secret_file": secret_file},)).receivers
    assert webhook.secret.get_secret_value() == "from-a-mounted-secret-0123"
    monkeypatch.setenv("FRONT_DOOR_SECRET", "from-the-environment-0123")
    [webhook] = EventsConfig(
        webhooks=({"url": url, "secret_file": secret_file, "secret_env": "FRONT_DOOR_SECRET"},)
    ).receivers
    assert webhook.secret.get_secret_value() == "from-the-environment-0123"
    with pytest.raises(ValidationError, match="cannot read the secret file"):
        EventsConfig(webhooks=({"url": url, "secret_file": tmp_path / "absent"},))
    with pytest.raises(ValidationError, match="set secret, secret_file or secret_env"):
        EventsConfig(webhooks=({"url": url},))

    monkeypatch.setenv("FACESTREAM_WEBHOOK_SECRET_FILE", str(secret_file))
    [legacy] = EventsConfig(webhook_urls=(url,)).receivers
    assert legacy.secret.get_secret_value() == "from-a-mounted-secret-0123"
    monkeypatch.setenv("FACESTREAM_WEBHOOK_SECRET", "legacy-from-the-environment")
    [legacy] = EventsConfig(webhook_urls=(url,), webhook_secret=SECRET).receivers
    assert legacy.secret.get_secret_value() == "legacy-from-the-environment"
    printed = str(EventsConfig(webhook_urls=(url,)).model_dump())
    assert "legacy-from-the-environment" not in printed


def test_deleting_an_identity_purges_it_from_stream_outbox_and_dead_letters(
    clients: Callable[[], redis.Redis], receiver: Receiver
) -> None:
    """After an identity is deleted, nothing in Redis's event keys names it: its stream
    entries, its pending deliveries and its dead letters go; another person's stay."""
    metrics = PipelineMetrics.create()
    config = _config(receiver, max_attempts=1)
    client = clients()
    bus = EventBus(client, config, metrics)

    def about(identity_id: str, name: str) -> Event:
        payload = {"door_id": "front", "outcome": "denied", "identity_id": identity_id,
                   "name": name}  # fmt: skip
        return Event.create("decision", "cam-1", payload)

    dead = about("alice", "Alice Liddell")
    bus.publish(dead)
    WebhookDeliverer(clients(), config, metrics).deliver_due()  # refused: dead-lettered
    assert [letter.event for letter in bus.dead_letters()] == [dead]
    pending, kept = about("alice", "Alice Liddell"), about("bob", "Bob Ross")
    bus.publish(pending)
    bus.publish(kept)

    report = bus.purge_identity("alice")
    assert (report.stream_entries, report.deliveries, report.dead_letters) == (2, 1, 1)
    assert [event.event_id for event in bus.recent()] == [kept.event_id]
    assert bus.dead_letters() == ()
    assert bus.pending_deliveries() == 1
    prefix = bus.stream_key.removesuffix("stream")
    stored = repr(client.xrange(bus.stream_key)) + repr(client.hgetall(prefix + "deliveries"))
    assert "Alice" not in stored
    assert "Bob Ross" in stored
