"""Redis chaos: redis-server SIGKILLed three times while enrolments and events stream in.

Every enrolment Redis acknowledged is there afterwards (AOF with ``appendfsync always``, the
embedded server's default: written and fsynced before the reply; with ``everysec`` this test
once lost an acknowledged enrolment on a loaded machine, see pipeline/redis/server.py), the
reading index resyncs, and every event reaches the stream's consumer group exactly once (a
retried publish is deduplicated by event id)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

import numpy as np
import pytest
import redis

from pipeline.access.audit import AuditLog
from pipeline.access.recorder import DecisionRecorder
from pipeline.config.service import GalleryConfig
from pipeline.errors import GalleryUnavailableError
from pipeline.events.bus import EventBus
from pipeline.events.config import EventsConfig
from pipeline.gallery.model import Enrollment
from pipeline.gallery.store import Gallery
from pipeline.metrics import PipelineMetrics
from pipeline.redis.server import EmbeddedRedis
from pipeline.types import Decision, Embeddings

# a background thread that dies (the gallery's sync, the event publisher) fails the test
pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
MODEL_ID = "chaos-model"
KILLS = 3
CONFIG = GalleryConfig(socket_timeout_seconds=1.0, resync_interval_seconds=0.05)


def _decision(number: int) -> Decision:
    return Decision(
        door_id="front", camera_id="door", track_id=number, outcome="granted",
        identity_id=f"p{number}", name=f"P{number}", distance=0.3, votes=3, at=time.time(),
    )  # fmt: skip


def test_kill_9_during_enrolments_and_events_loses_nothing_acknowledged(
    server: EmbeddedRedis, clients: Callable[[], redis.Redis], tmp_path: Path
) -> None:
    rng = np.random.default_rng(9)
    acknowledged: list[str] = []
    refused = 0
    stop = threading.Event()
    writer = Gallery(clients(), PipelineMetrics.create(), model_id=MODEL_ID, config=CONFIG)
    reader = Gallery(clients(), PipelineMetrics.create(), model_id=MODEL_ID, config=CONFIG)
    reader.start()
    metrics = PipelineMetrics.create()
    bus = EventBus(clients(), EventsConfig(), metrics)
    audit = AuditLog(tmp_path / "audit.jsonl")
    recorder = DecisionRecorder(audit, bus, metrics=metrics, retry_seconds=0.1)
    recorder.start()

    def enrol_forever() -> None:
        nonlocal refused
        number = 0
        while not stop.is_set():
            vector = rng.normal(size=(1, 128)).astype(np.float32)
            vector /= np.linalg.norm(vector)
            identity_id = f"id{number}"
            try:
                writer.enroll(
                    Enrollment(
                        name=identity_id,
                        embeddings=Embeddings(vector, model_id=MODEL_ID),
                        identity_id=identity_id,
                    )
                )
            except GalleryUnavailableError:
                refused += 1  # not acknowledged: the caller knows it must retry
            else:
                acknowledged.append(identity_id)
            number += 1
            time.sleep(0.005)

    enroller = threading.Thread(target=enrol_forever)
    enroller.start()
    decisions = 0
    try:
        for _ in range(KILLS):
            for _ in range(10):
                recorder.record(_decision(decisions))
                decisions += 1
                time.sleep(0.02)
            os.kill(server.process_id, signal.SIGKILL)
            server.stop()
            for _ in range(5):  # decisions while Redis is away: audited, waiting
                recorder.record(_decision(decisions))
                decisions += 1
            time.sleep(0.3)
            server.start()
            server.wait_ready(timeout_seconds=10.0)
            time.sleep(0.3)
    finally:
        stop.set()
        enroller.join(30)
        recorder.stop()
        audit.close()
    assert refused > 0, "the kills never hit an enrolment: the test proved nothing"
    assert len(acknowledged) > 50

    stored = {identity.identity_id for identity in writer.list_identities()}
    lost = [identity_id for identity_id in acknowledged if identity_id not in stored]
    assert lost == []
    deadline = time.monotonic() + 10
    while len(reader.list_identities()) != len(stored) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert reader.version == writer.version  # the index resynced after every restart

    consumer = clients()
    consumer.xgroup_create(bus.stream_key, "doors", id="0", mkstream=True)
    reply = consumer.xreadgroup("doors", "c1", {bus.stream_key: ">"}, count=10_000)
    entries = cast(list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]], reply)[0][1]
    tracks = [json.loads(fields[b"event"])["payload"]["track_id"] for _, fields in entries]
    assert sorted(tracks) == list(range(decisions))  # every decision, exactly once
