"""deploy/examples/door_controller.py, the documented webhook receiver, against facestream's
real webhook delivery: a granted decision opens the door once (a redelivered event is
acknowledged without acting again), a forged or stale request opens nothing."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis

from pipeline.events import Event, EventBus, EventsConfig, WebhookDeliverer
from pipeline.metrics import PipelineMetrics

EXAMPLE = Path(__file__).resolve().parents[1] / "deploy" / "examples" / "door_controller.py"
SECRET = "door-controller-secret-0123456789abcdef"


@pytest.fixture
def controller() -> Iterator[tuple[str, subprocess.Popen[str]]]:
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
    assert process.stdout.readline().startswith("listening on")
    yield f"http://127.0.0.1:{port}/facestream", process
    process.terminate()
    process.wait(timeout=10)


def _signed(body: bytes, timestamp: str, event_id: str, secret: str = SECRET) -> dict[str, str]:
    signature = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return {
        "X-Facestream-Timestamp": timestamp,
        "X-Facestream-Signature": signature.hexdigest(),
        "X-Facestream-Event-Id": event_id,
        "Content-Type": "application/json",
    }


def test_granted_decision_opens_the_door_once(
    controller: tuple[str, subprocess.Popen[str]], clients: Callable[[], redis.Redis]
) -> None:
    url, process = controller
    config = EventsConfig(webhook_urls=(url,), webhook_secret=SECRET, poll_interval_seconds=0.05)
    metrics = PipelineMetrics.create()
    bus = EventBus(clients(), config, metrics)
    event = Event.create(
        "decision", "front-door", {"door_id": "front", "outcome": "granted", "name": "Ada"}
    )
    with WebhookDeliverer(clients(), config, metrics):
        bus.publish(event)
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "OPEN front for Ada"
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
    controller: tuple[str, subprocess.Popen[str]], secret: str, age_seconds: float, reason: str
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
