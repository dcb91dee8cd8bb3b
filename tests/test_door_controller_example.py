"""deploy/examples/door_controller.py, the documented webhook receiver, against facestream's
real webhook delivery: a granted decision opens the door once (a redelivered event is
acknowledged without acting again), a forged or stale request opens nothing, and neither does
a captured grant sent again under another event id header or a grant delivered late."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import httpx
import pytest
import redis

from pipeline.events import Event, EventBus, EventsConfig, WebhookDeliverer
from pipeline.metrics import PipelineMetrics

EXAMPLE = Path(__file__).resolve().parents[1] / "deploy" / "examples" / "door_controller.py"
SECRET = "door-controller-secret-0123456789abcdef"
LINE_TIMEOUT_SECONDS = 10.0


def _forward_lines(stream: IO[str], lines: queue.Queue[str]) -> None:
    for line in stream:
        lines.put(line.strip())


@pytest.fixture
def controller() -> Iterator[tuple[str, queue.Queue[str]]]:
    """The example controller on 127.0.0.1 and the lines it prints (one per door opened)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLE), "--port", str(port)],
        env={**os.environ, "FACESTREAM_WEBHOOK_SECRET": SECRET},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=_forward_lines, args=(process.stdout, lines), daemon=True)
    reader.start()
    try:
        assert lines.get(timeout=LINE_TIMEOUT_SECONDS).startswith("listening on")
        yield f"http://127.0.0.1:{port}/facestream", lines
    finally:
        process.terminate()
        process.wait(timeout=10)
        reader.join(timeout=10)


def _grant(name: str, *, decided_seconds_ago: float = 0.0) -> Event:
    payload = {"door_id": "front", "outcome": "granted", "name": name}
    return Event.create(
        "decision", "front-door", payload, created=time.time() - decided_seconds_ago
    )


def _next_line(lines: queue.Queue[str]) -> str:
    """The controller's next line on stdout (waits up to LINE_TIMEOUT_SECONDS for it)."""
    try:
        return lines.get(timeout=LINE_TIMEOUT_SECONDS)
    except queue.Empty:
        raise AssertionError(
            f"the controller printed nothing in {LINE_TIMEOUT_SECONDS} s"
        ) from None


def _signed(body: bytes, timestamp: str, event_id: str, secret: str = SECRET) -> dict[str, str]:
    signature = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return {
        "X-Facestream-Timestamp": timestamp,
        "X-Facestream-Signature": signature.hexdigest(),
        "X-Facestream-Event-Id": event_id,
        "Content-Type": "application/json",
    }


def test_granted_decision_opens_the_door_once(
    controller: tuple[str, queue.Queue[str]], clients: Callable[[], redis.Redis]
) -> None:
    url, lines = controller
    config = EventsConfig(webhook_urls=(url,), webhook_secret=SECRET, poll_interval_seconds=0.05)
    metrics = PipelineMetrics.create()
    bus = EventBus(clients(), config, metrics)
    event = Event.create(
        "decision", "front-door", {"door_id": "front", "outcome": "granted", "name": "Ada"}
    )
    with WebhookDeliverer(clients(), config, metrics):
        bus.publish(event)
        assert _next_line(lines) == "OPEN front for Ada"
        deadline = time.monotonic() + 10
        while metrics.registry.get_sample_value("facestream_events_delivered_total") != 1:
            assert time.monotonic() < deadline, "the delivery was not acknowledged"
            time.sleep(0.05)
    # at-least-once delivery may repeat an event: acknowledged, not acted on again
    body = event.to_json()
    again = httpx.post(url, content=body, headers=_signed(body, str(time.time()), event.event_id))
    assert again.status_code == 204
    assert again.reason_phrase == "duplicate"


@pytest.mark.parametrize(
    ("secret", "age_seconds", "reason"),
    [
        ("wrong-secret-0123456789abcdefghijkl", 0, "bad signature"),
        (SECRET, 3600, "timestamp outside the replay window"),
    ],
    ids=["forged", "replayed"],
)
def test_forged_or_replayed_requests_open_nothing(
    controller: tuple[str, queue.Queue[str]], secret: str, age_seconds: float, reason: str
) -> None:
    url, _ = controller
    payload = {"door_id": "front", "outcome": "granted", "name": "Mallory"}
    body = json.dumps({"kind": "decision", "payload": payload}).encode()
    headers = _signed(body, str(time.time() - age_seconds), "f" * 32, secret)
    reply = httpx.post(url, content=body, headers=headers)
    assert reply.status_code == 401
    assert reply.reason_phrase == reason
    tampered = httpx.post(
        url,
        content=body.replace(b"Mallory", b"Ada"),
        headers=_signed(body, str(time.time()), "e" * 32),
    )
    assert tampered.status_code == 401


def test_a_captured_grant_sent_under_another_event_id_opens_nothing(
    controller: tuple[str, queue.Queue[str]],
) -> None:
    """The event id header is not signed: deduplication uses the signed body's id, and a
    header that names another event is refused. Only the grant sent afterwards opens."""
    url, lines = controller
    body = _grant("Ada").to_json()
    captured = _signed(body, str(int(time.time())), json.loads(body)["event_id"])
    first = httpx.post(url, content=body, headers=captured)
    assert (first.status_code, first.reason_phrase) == (204, "ok")
    assert _next_line(lines) == "OPEN front for Ada"
    for header_event_id in ("replayed-1", "f" * 32):
        replayed = httpx.post(
            url, content=body, headers={**captured, "X-Facestream-Event-Id": header_event_id}
        )
        assert replayed.status_code == 400
        assert replayed.reason_phrase == "event id header disagrees with the signed body"
    without_header = {k: v for k, v in captured.items() if k != "X-Facestream-Event-Id"}
    again = httpx.post(url, content=body, headers=without_header)
    assert (again.status_code, again.reason_phrase) == (204, "duplicate")
    fresh = _grant("Bob").to_json()
    fresh_id = json.loads(fresh)["event_id"]
    reply = httpx.post(url, content=fresh, headers=_signed(fresh, str(time.time()), fresh_id))
    assert (reply.status_code, reply.reason_phrase) == (204, "ok")
    assert _next_line(lines) == "OPEN front for Bob"  # not Ada a second time


def test_a_grant_delivered_late_is_acknowledged_but_opens_nothing(
    controller: tuple[str, queue.Queue[str]],
) -> None:
    """A genuine, freshly signed delivery of a grant decided an hour ago (an outbox retried
    after an outage) is acknowledged, so it is not retried, and the door stays shut."""
    url, lines = controller
    late = _grant("Mallory", decided_seconds_ago=3600).to_json()
    event_id = json.loads(late)["event_id"]
    reply = httpx.post(url, content=late, headers=_signed(late, str(time.time()), event_id))
    assert (reply.status_code, reply.reason_phrase) == (204, "grant expired")
    fresh = _grant("Ada").to_json()
    fresh_id = json.loads(fresh)["event_id"]
    reply = httpx.post(url, content=fresh, headers=_signed(fresh, str(time.time()), fresh_id))
    assert (reply.status_code, reply.reason_phrase) == (204, "ok")
    assert _next_line(lines) == "OPEN front for Ada"  # Mallory's grant printed nothing
