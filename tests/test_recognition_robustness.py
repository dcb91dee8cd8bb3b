"""The service's decision handler when the audit log refuses a decision: the decision is not
announced (no door acts on it), the failure is logged and counted, and recognition goes on.

Real parts: the service as ``run_service`` builds it (embedded Redis, real engines), the
public-domain sample video as a camera, and an audit log whose last line is really torn.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from live_support import enrol_sample
from waiting import wait_until

from pipeline.access.audit import AuditLog
from pipeline.access.policy import DoorConfig
from pipeline.access.recorder import DecisionRecorder
from pipeline.capture import CameraConfig
from pipeline.config.service import FaceStreamConfig
from pipeline.liveness.config import LivenessConfig
from pipeline.service.sample import make_sample
from pipeline.service.service import run_service

DEADLINE_SECONDS = 60.0
NAME = "eileen_collins"
DECISION_KINDS = ("decision", "unknown_face", "spoof_suspected")


def _torn_audit_log(path: Path) -> AuditLog:
    """An audit log with one good line and a torn last one: it opens, but refuses appends
    (AuditLogCorruptError), as after a write that failed half-way."""
    with AuditLog(path) as log:
        log.append({"note": "the last good line"})
    with path.open("ab") as raw:
        raw.write(b'{"event": {"note": "torn')
    damaged = AuditLog(path)
    assert damaged.damage is not None
    return damaged


def test_a_decision_the_audit_log_refuses_is_not_announced(tmp_path: Path) -> None:
    """With a damaged audit log, the granted decision for the sample face raises
    AuditLogCorruptError inside the handler: it is counted under
    facestream_events_store_errors_total{operation="audit"}, never published (the door stays
    shut), the log is left as it was, and recognition keeps running. The handler used to
    catch only AuditLogError and let this one escape into the recognition worker."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    sample = make_sample(tmp_path / "sample", seconds=4.0)
    config = FaceStreamConfig(
        data_dir=tmp_path / "data",
        liveness=LivenessConfig(enabled=False),  # not about liveness: the sample is a photo
        doors=[
            DoorConfig(
                id="lab",
                cameras=["front"],
                required_matches=2,
                window_encodings=3,
                require_liveness=False,
            )
        ],
    )
    torn_path = tmp_path / "damaged" / "decisions.jsonl"
    torn_path.parent.mkdir()
    damaged = _torn_audit_log(torn_path)
    torn_bytes = torn_path.read_bytes()
    with run_service(config) as service:
        enrol_sample(service.services, sample)
        service.recorder = DecisionRecorder(damaged, service.bus)  # read at each decision
        registry = service.services.metrics.registry

        def audit_errors() -> float:
            labels = {"operation": "audit"}
            return registry.get_sample_value("facestream_events_store_errors_total", labels) or 0

        service.add_camera(
            CameraConfig(id="front", url=str(sample.video), loop=True, realtime=True)
        )
        wait_until(
            lambda: audit_errors() >= 1, DEADLINE_SECONDS, "a decision refused by the audit log"
        )
        assert service.recognition.running
        announced = [event for event in service.bus.recent(1000) if event.kind in DECISION_KINDS]
        assert announced == []
        refused = service.services.metrics.registry.get_sample_value(
            "facestream_decisions_total", {"door": "lab", "outcome": "granted"}
        )
        assert refused is not None  # a grant was made, then held back
        assert refused >= 1
    damaged.close()
    assert torn_path.read_bytes() == torn_bytes
    first_line = json.loads(torn_bytes.split(b"\n", 1)[0])
    assert first_line["event"] == {"note": "the last good line"}
