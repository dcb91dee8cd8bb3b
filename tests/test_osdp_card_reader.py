"""A card + face door's card reader, polled by facestream as an OSDP panel (TCP to the reader,
secure channel): a card the reader reports selects its holder (the door waits for the face),
an unknown card is refused at once, and the reader's link is announced."""

from __future__ import annotations

import queue
import shutil
from pathlib import Path

import numpy as np
import pytest
import redis
from osdp_support import KEY, ListeningChannel
from prometheus_client import CollectorRegistry
from waiting import wait_until

from pipeline.access.credentials import (
    CredentialFormat,
    CredentialStore,
    OsdpMetrics,
    OsdpReader,
    OsdpReaderConfig,
)
from pipeline.access.doors import AccessWiring, DoorAccess
from pipeline.access.policy import DoorConfig, DoorPolicy
from pipeline.gallery.model import Enrollment
from pipeline.gallery.store import Gallery
from pipeline.metrics import PipelineMetrics
from pipeline.redis.server import EmbeddedRedis
from pipeline.types import Decision, Embeddings, Event

CARD_FORMAT = CredentialFormat(kind="wiegand26", facility_code=7)


@pytest.mark.timeout(60)
def test_cards_from_a_polled_osdp_reader_select_the_holder_or_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    monkeypatch.setenv("CARD_READER_SCBK", KEY.hex())
    reader_end = ListeningChannel()  # the card reader: an RS-485-over-IP adapter's port
    card_reader = OsdpReader(
        "reader",
        OsdpReaderConfig.model_validate(
            {
                "channel": {"tcp": "127.0.0.1:1"},
                "address": 5,
                "scbk_env": "CARD_READER_SCBK",
                "format": CARD_FORMAT.model_dump(),
            }
        ),
        reader_end,
        scbk=KEY,
        metrics=OsdpMetrics.create(CollectorRegistry()),
        on_notice=lambda notice: None,
    )
    door = DoorConfig.model_validate(
        {
            "id": "vault",
            "cameras": ["cam"],
            "mode": "card_and_face",
            "require_liveness": True,
            "card_reader": {
                "channel": {"tcp": f"127.0.0.1:{reader_end.port}"},
                "address": 5,
                "scbk_env": "CARD_READER_SCBK",
                "format": CARD_FORMAT.model_dump(),
                "reconnect_seconds": 0.5,
            },
        }
    )
    decisions: queue.Queue[Decision] = queue.Queue()
    events: queue.Queue[Event] = queue.Queue()
    policy = DoorPolicy([door])
    with EmbeddedRedis(tmp_path / "redis") as server:
        server.wait_ready()
        client = redis.Redis.from_url(server.url)
        gallery = Gallery(client, PipelineMetrics.create(), model_id="test")
        vectors = np.ones((1, 128), np.float32)
        holder = gallery.enroll(Enrollment("holder", Embeddings(vectors, model_id="test")))
        store = CredentialStore(client)
        store.set(holder.identity_id, 1234)
        registry = CollectorRegistry()
        access = DoorAccess(
            [door],
            AccessWiring(policy, store, OsdpMetrics.create(registry), events.put, decisions.put),
        )
        card_reader.start()
        access.start()
        try:
            wait_until(lambda: card_reader.link_up, 20.0, "facestream polling the card reader")
            link = events.get(timeout=5.0)
            assert (link.kind, link.payload["role"]) == ("osdp_link_up", "card_reader")
            assert card_reader.send_card(999) == "queued"  # nobody's card
            refusal = decisions.get(timeout=5.0)
            assert (refusal.outcome, refusal.reason, refusal.card_number) == (
                "denied",
                "unknown_card",
                999,
            )
            assert card_reader.send_card(1234) == "queued"
            wait_until(
                lambda: (
                    registry.get_sample_value(
                        "facestream_credentials_presented_total",
                        {"door": "vault", "source": "osdp", "result": "waiting_for_face"},
                    )
                    == 1
                ),
                5.0,
                "the holder's card waiting for a face",
            )
            # the window runs out without a face: refused by the door's clock
            expired = policy.expire(1e12)
            assert [(d.reason, d.identity_id) for d in expired] == [
                ("no_face_in_time", holder.identity_id)
            ]
        finally:
            access.stop()
            card_reader.stop()
            gallery.close()
            client.close()
