"""Time from a door decision (made at the deciding frame) to the card read at the panel, over
OSDP with the secure channel, against a webhook delivery of the same grant to a local receiver.

Both paths start where the service is when the deciding frame has been matched: the decision
is appended to the (fsynced) audit log, then

* ours: ``DoorAccess.decided`` looks up the identity's card number in Redis (an embedded
  redis-server) and facestream's OSDP reader reports it; the time ends when a libosdp panel,
  joined by a socket pair, gets the card read;
* baseline: the grant's event JSON, HMAC-signed, is POSTed with httpx to an HTTP receiver on
  127.0.0.1; the time ends when the receiver has the body. This is the last hop of a webhook
  delivery only: the service's outbox (Redis stream, claim loop, retries) comes on top, so the
  real webhook path is slower than this baseline.

Grants alternate between the two paths (the machines are noisy). Prints one JSON object on its
last line; p50 is ``ours``/``baseline``, p95 beside them. Needs redis-server.

    python -m benchmarks.osdp_latency [--grants 40]
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import queue
import socket
import statistics
import tempfile
import threading
import time
from dataclasses import asdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import redis

from benchmarks.common import log, machine_name
from pipeline.access.audit import AuditLog
from pipeline.access.credentials import (
    CredentialFormat,
    CredentialStore,
    OsdpMetrics,
    OsdpPanel,
    OsdpReader,
    OsdpReaderConfig,
    PanelCardRead,
    PanelPeer,
    SocketChannel,
)
from pipeline.access.doors import AccessWiring, DoorAccess
from pipeline.access.policy import DoorConfig, DoorPolicy
from pipeline.gallery.model import Enrollment
from pipeline.gallery.store import Gallery
from pipeline.metrics import PipelineMetrics
from pipeline.redis.server import EmbeddedRedis
from pipeline.types import Decision, Embeddings

KEY = bytes(range(16))
SECRET = b"benchmark-webhook-secret-0123456789"
CARD = 4242


class _Receiver(BaseHTTPRequestHandler):
    arrivals: queue.Queue[float] = queue.Queue()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.arrivals.put(time.time())
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--grants", type=int, default=40, help="grants per path")
    grants = parser.parse_args().grants
    with tempfile.TemporaryDirectory() as folder, EmbeddedRedis(Path(folder) / "redis") as server:
        server.wait_ready()
        client = redis.Redis.from_url(server.url)
        gallery = Gallery(client, PipelineMetrics.create(), model_id="bench")
        vectors = np.random.default_rng(0).standard_normal((1, 128)).astype(np.float32)
        identity = gallery.enroll(Enrollment("bench", Embeddings(vectors, model_id="bench")))
        store = CredentialStore(client)
        store.set(identity.identity_id, CARD)
        audit = AuditLog(Path(folder) / "decisions.jsonl")
        ours, baseline = _measure(grants, identity.identity_id, store, audit)
        audit.close()
        gallery.close()
        client.close()
    result = {
        "name": "osdp_grant_latency",
        "machine": machine_name(),
        "backend": "libosdp-3.2.9 secure channel over a socket pair vs httpx POST to 127.0.0.1",
        "ours": round(statistics.median(ours) * 1000, 2),
        "baseline": round(statistics.median(baseline) * 1000, 2),
        "ratio": round(statistics.median(ours) / statistics.median(baseline), 3),
        "unit": "ms (p50, deciding frame to card read at the panel / webhook body received)",
        "ours_p95": round(_percentile(ours, 0.95) * 1000, 2),
        "baseline_p95": round(_percentile(baseline, 0.95) * 1000, 2),
        "grants": grants,
    }
    print(json.dumps(result))


def _measure(
    grants: int, identity_id: str, store: CredentialStore, audit: AuditLog
) -> tuple[list[float], list[float]]:
    reader_end, panel_end = socket.socketpair()
    door = DoorConfig.model_validate(
        {
            "id": "front",
            "cameras": ["cam"],
            "osdp": OsdpReaderConfig.model_validate(
                {
                    "channel": {"tcp": "127.0.0.1:1"},  # replaced by the socket pair below
                    "address": 1,
                    "scbk_env": "UNUSED",
                    "format": CredentialFormat(kind="wiegand26", facility_code=42).model_dump(),
                }
            ).model_dump(),
        }
    )
    assert door.osdp is not None
    metrics = OsdpMetrics.create(PipelineMetrics.create().registry)
    access = DoorAccess(
        [door],
        AccessWiring(DoorPolicy([door]), store, metrics, lambda event: None, lambda d: None),
    )
    # the door's reader on the socket pair (DoorAccess.start would open the TCP channel)
    reader = OsdpReader(
        "front",
        door.osdp,
        SocketChannel(reader_end),
        scbk=KEY,
        metrics=metrics,
        on_notice=lambda notice: None,
    )
    access.readers["front"] = reader
    reads: queue.Queue[tuple[float, PanelCardRead]] = queue.Queue()
    panel = OsdpPanel(
        [PanelPeer(1, SocketChannel(panel_end), KEY)],
        on_card=lambda read: reads.put((time.time(), read)),
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    reader.start()
    panel.start()
    ours: list[float] = []
    baseline: list[float] = []
    try:
        deadline = time.monotonic() + 20
        while not (reader.link_up and panel.secure(1)):
            if time.monotonic() > deadline:
                raise SystemExit("the OSDP link did not come up")
            time.sleep(0.02)
        with httpx.Client(timeout=10.0) as http:
            for index in range(grants):
                ours.append(_osdp_grant(access, audit, identity_id, reads))
                baseline.append(_webhook_grant(http, url, audit, identity_id))
                if index % 10 == 9:
                    log(
                        f"{index + 1} grants: OSDP p50 {statistics.median(ours) * 1000:.1f} ms, "
                        f"webhook p50 {statistics.median(baseline) * 1000:.1f} ms"
                    )
                time.sleep(0.05)
    finally:
        panel.stop()
        reader.stop()
        server.shutdown()
    return ours, baseline


def _grant(identity_id: str) -> Decision:
    return Decision("front", "cam", 1, "granted", identity_id, "bench", 0.3, 3, time.time())


def _osdp_grant(
    access: DoorAccess,
    audit: AuditLog,
    identity_id: str,
    reads: queue.Queue[tuple[float, PanelCardRead]],
) -> float:
    decision = _grant(identity_id)
    audit.append(asdict(decision))
    access.decided(decision)
    arrived, _ = reads.get(timeout=10.0)
    return arrived - decision.at


def _webhook_grant(http: httpx.Client, url: str, audit: AuditLog, identity_id: str) -> float:
    decision = _grant(identity_id)
    audit.append(asdict(decision))
    body = json.dumps({"kind": "decision", "payload": asdict(decision)}).encode()
    stamp = str(int(time.time()))
    signature = hmac.new(SECRET, stamp.encode() + b"\n" + body, hashlib.sha256).hexdigest()
    http.post(
        url,
        content=body,
        headers={"X-Facestream-Timestamp": stamp, "X-Facestream-Signature": f"v2={signature}"},
    )
    arrived = _Receiver.arrivals.get(timeout=10.0)
    return arrived - decision.at


if __name__ == "__main__":
    main()
