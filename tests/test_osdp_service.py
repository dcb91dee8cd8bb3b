"""The whole chain on one machine: the service recognises the enrolled face on a camera, its
door grants, and the door's OSDP reader (TCP to an RS-485-over-IP adapter, here a libosdp
panel listening on 127.0.0.1) reports the identity's card number to the panel over the secure
channel. The card number is set through the HTTP API; a number that does not fit the door's
format is refused naming ``card_number``; an identity without one gives an event instead."""

from __future__ import annotations

import queue
import shutil
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import pytest
from live_support import enrol_sample
from osdp_support import KEY, ListeningChannel
from waiting import wait_until

from pipeline.access.credentials import (
    CredentialFormat,
    OsdpPanel,
    PanelCardRead,
    PanelPeer,
    decode_card,
)
from pipeline.access.policy import DoorConfig
from pipeline.capture import CameraConfig
from pipeline.config.service import FaceStreamConfig
from pipeline.liveness.config import LivenessConfig
from pipeline.service.sample import make_sample
from pipeline.service.service import FaceStreamService, run_service
from pipeline.types import Decision

ServeApi = Callable[[FaceStreamService, str], AbstractContextManager[str]]
TOKEN = "osdp-service-test-token-0123456789"
CARD_FORMAT = CredentialFormat(kind="wiegand26", facility_code=42)


@pytest.mark.timeout(180)
def test_a_recognised_face_reaches_the_panel_as_its_card_number(
    tmp_path: Path, serve_api: ServeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    monkeypatch.setenv("FACESTREAM_DOOR_SCBK", KEY.hex())
    panel_end = ListeningChannel()
    reads: queue.Queue[tuple[float, PanelCardRead]] = queue.Queue()
    panel = OsdpPanel(
        [PanelPeer(7, panel_end, KEY)],
        on_card=lambda read: reads.put((time.time(), read)),
        reconnect_seconds=0.5,
    )
    panel.start()
    sample = make_sample(tmp_path / "sample", seconds=4.0)
    door = DoorConfig.model_validate(
        {
            "id": "lab",
            "cameras": ["front"],
            "required_matches": 2,
            "window_encodings": 3,
            "require_liveness": False,  # not about liveness: the sample is a moving photo
            "osdp": {
                "channel": {"tcp": f"127.0.0.1:{panel_end.port}"},
                "address": 7,
                "scbk_env": "FACESTREAM_DOOR_SCBK",
                "format": CARD_FORMAT.model_dump(),
            },
        }
    )
    config = FaceStreamConfig(
        data_dir=tmp_path / "data", liveness=LivenessConfig(enabled=False), doors=[door]
    )
    try:
        with run_service(config) as service:
            reader = service.access.readers["lab"]
            wait_until(lambda: reader.link_up, 20.0, "the door's OSDP link up")
            identity = enrol_sample(service.services, sample)
            with (
                serve_api(service, TOKEN) as url,
                httpx.Client(
                    base_url=url, timeout=30.0, headers={"Authorization": f"Bearer {TOKEN}"}
                ) as http,
            ):
                path = f"/v1/identities/{identity.identity_id}/credential"
                too_large = http.put(path, json={"card_number": 70000})
                assert too_large.status_code == 422
                assert "card_number: 70000 does not fit wiegand26" in too_large.text
                assert http.put(path, json={"card_number": 4242}).status_code == 200
                assert http.get(path).json()["card_number"] == 4242
            service.add_camera(
                CameraConfig(id="front", url=str(sample.video), loop=True, realtime=True)
            )
            arrived_at, read = reads.get(timeout=90.0)
            granted = [
                event
                for event in service.bus.recent(100, kind="decision")
                if event.payload["outcome"] == "granted"
            ]
            # an identity holding no card: not sent, announced instead
            service.access.decided(
                Decision("lab", "front", 99, "granted", "nobody", None, 0.3, 2, time.time())
            )
            # published by the recorder's thread: wait for it to reach the stream
            wait_until(
                lambda: bool(service.bus.recent(100, kind="osdp_card_not_sent")),
                10.0,
                "the osdp_card_not_sent event in the stream",
            )
            not_sent = service.bus.recent(100, kind="osdp_card_not_sent")
    finally:
        panel.stop()
    assert decode_card(read.bits, CARD_FORMAT).card_number == 4242
    assert granted, "the card read must come from a granted decision"
    latency = arrived_at - float(granted[-1].payload["at"])  # type: ignore[arg-type]
    assert latency >= 0, "the card read cannot precede the deciding frame"
    print(f"deciding frame -> card read at the panel: {latency * 1000:.1f} ms")
    assert [event.payload["reason"] for event in not_sent] == ["no_credential"]
