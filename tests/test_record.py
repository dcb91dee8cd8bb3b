"""Decisions reach the audit log and the event stream; while Redis is down they wait and are
published afterwards, once each."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import cast

from pipeline.access.audit import AuditHead, AuditLog, checkpoint_mac, verify_audit_log
from pipeline.access.recorder import DecisionRecorder
from pipeline.config.service import GalleryConfig
from pipeline.events.bus import EventBus
from pipeline.events.config import EventsConfig
from pipeline.gallery.store import connect
from pipeline.metrics import PipelineMetrics
from pipeline.redis.server import EmbeddedRedis
from pipeline.types import Decision, Event

CLIENT_CONFIG = GalleryConfig(socket_timeout_seconds=1.0)


def _decision(track_id: int, outcome: str = "granted") -> Decision:
    return Decision(
        door_id="front",
        camera_id="cam",
        track_id=track_id,
        outcome=outcome,  # type: ignore[arg-type]
        identity_id="ann" if outcome != "unknown" else None,
        name="Ann",
        distance=0.41,
        votes=3,
        at=1_700_000_000.0 + track_id,
    )


def _stream(server: EmbeddedRedis, bus: EventBus) -> list[Event]:
    client = connect(server.url, CLIENT_CONFIG)
    try:
        entries = cast(list[tuple[bytes, dict[bytes, bytes]]], client.xrange(bus.stream_key))
        return [Event.from_stream_fields(fields) for _, fields in entries]
    finally:
        client.close()


def test_decisions_are_audited_and_published(server: EmbeddedRedis, tmp_path: Path) -> None:
    """Each decision is one audit line and one stream event of the matching kind, with the
    same event id in both."""
    client = connect(server.url, CLIENT_CONFIG)
    bus = EventBus(client, EventsConfig(), PipelineMetrics.create())
    with AuditLog(tmp_path / "audit.jsonl") as audit:
        recorder = DecisionRecorder(audit, bus)
        recorder.record(_decision(1))
        recorder.record(_decision(2, "unknown"))
    events = _stream(server, bus)
    assert [event.kind for event in events] == ["decision", "unknown_face"]
    report = verify_audit_log(tmp_path / "audit.jsonl")
    assert (report.ok, report.lines_checked) == (True, 2)
    audited = (tmp_path / "audit.jsonl").read_text()
    assert all(event.event_id in audited for event in events)
    client.close()


def test_decisions_wait_while_redis_is_down(server: EmbeddedRedis, tmp_path: Path) -> None:
    """With Redis stopped, a decision is audited and kept; after a restart the next decision
    publishes both, in order, and nothing twice."""
    client = connect(server.url, CLIENT_CONFIG)
    bus = EventBus(client, EventsConfig(), PipelineMetrics.create())
    with AuditLog(tmp_path / "audit.jsonl") as audit:
        recorder = DecisionRecorder(audit, bus)
        recorder.record(_decision(1))
        server.stop()
        recorder.record(_decision(2))
        assert recorder.unpublished == 1
        server.start()
        server.wait_ready(timeout_seconds=10)
        recorder.record(_decision(3))
        assert recorder.unpublished == 0
    tracks = [event.payload["track_id"] for event in _stream(server, bus)]
    assert tracks == [1, 2, 3]
    assert verify_audit_log(tmp_path / "audit.jsonl").lines_checked == 3
    client.close()


def _dropped(metrics: PipelineMetrics, reason: str) -> float:
    value = metrics.registry.get_sample_value(
        "facestream_events_unpublished_dropped_total", {"reason": reason}
    )
    return 0.0 if value is None else value


def test_events_lost_to_the_stream_are_counted(server: EmbeddedRedis, tmp_path: Path) -> None:
    """With Redis stopped, a third decision pushes the oldest out of a two-event retry queue,
    and stopping the recorder drops the other two: all three are counted by reason, and all
    three decisions are in the audit log."""
    client = connect(server.url, CLIENT_CONFIG)
    metrics = PipelineMetrics.create()
    bus = EventBus(client, EventsConfig(), metrics)
    with AuditLog(tmp_path / "audit.jsonl") as audit:
        recorder = DecisionRecorder(audit, bus, max_unpublished=2, metrics=metrics)
        server.stop()
        for track_id in (1, 2, 3):
            recorder.record(_decision(track_id))
        assert recorder.unpublished == 2
        assert _dropped(metrics, "queue_full") == 1
        recorder.stop(timeout_seconds=5)
    assert _dropped(metrics, "shutdown") == 2
    assert recorder.unpublished == 0
    assert metrics.registry.get_sample_value("facestream_events_unpublished") == 0
    assert verify_audit_log(tmp_path / "audit.jsonl").lines_checked == 3
    client.close()


def test_events_anchor_the_audit_head_and_lines_hold_no_names(
    server: EmbeddedRedis, tmp_path: Path
) -> None:
    """Each decision event carries the seq and SHA-256 of its audit line, so the published
    head is a copy outside the machine (verify --expect-head uses it); a checkpoint event
    states the head with a MAC under the audit key; the audit line keeps the identity id but
    not the person's name."""
    key = b"record-test-audit-key-0123456789"
    client = connect(server.url, CLIENT_CONFIG)
    bus = EventBus(client, EventsConfig(), PipelineMetrics.create())
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, key=key) as audit:
        recorder = DecisionRecorder(audit, bus)
        first = recorder.record(_decision(1))
        second = recorder.record(_decision(2))
        checkpoint = recorder.publish_checkpoint()
    assert (first.payload["audit_seq"], second.payload["audit_seq"]) == (1, 2)
    lines = path.read_bytes().splitlines()
    assert second.payload["audit_head"] == hashlib.sha256(lines[1]).hexdigest()
    head = AuditHead(seq=2, digest=str(second.payload["audit_head"]))
    assert verify_audit_log(path, key=key, expected_head=head).ok
    assert b"Ann" not in path.read_bytes()
    assert json.loads(lines[0])["event"]["identity_id"] == "ann"
    assert first.payload["name"] == "Ann"  # the event names the person; the log does not

    published = _stream(server, bus)
    assert [event.kind for event in published] == ["decision", "decision", "audit_checkpoint"]
    assert published[-1] == checkpoint
    assert checkpoint.payload["mac"] == checkpoint_mac(key, 2, head.digest)
    client.close()
