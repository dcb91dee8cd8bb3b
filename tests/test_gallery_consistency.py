"""The gallery's in-memory index stays consistent with Redis when changes race: a slow reload
against a removal, and a write that Redis committed but the index could not follow at once.
Real redis-server (the service's own launcher); a real ACL makes Redis refuse the read that
follows a commit."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest
import redis

from pipeline.config.service import GalleryConfig
from pipeline.errors import GalleryRequestError
from pipeline.gallery.model import Enrollment
from pipeline.gallery.store import Gallery
from pipeline.metrics import PipelineMetrics
from pipeline.redis.server import EmbeddedRedis
from pipeline.types import Embeddings

MODEL_ID = "dlib-resnet-v1-test"
SYNC_SECONDS = 10.0
CONFIG = GalleryConfig(socket_timeout_seconds=2.0, resync_interval_seconds=0.05)
RELOAD_PAUSE_SECONDS = 0.5


def _probe(seed: int) -> npt.NDArray[np.float32]:
    vector = np.random.default_rng(seed).normal(size=128).astype(np.float32)
    return vector / np.linalg.norm(vector)


def _embeddings(vector: npt.NDArray[np.float32]) -> Embeddings:
    return Embeddings(vectors=vector[np.newaxis].copy(), model_id=MODEL_ID)


def _best_id(gallery: Gallery, probe: npt.NDArray[np.float32]) -> str | None:
    best = gallery.identify(_embeddings(probe), max_distance=0.5).best()[0]
    return None if best is None else best.identity_id


class _PausingGallery(Gallery):
    """A gallery whose full reloads, while ``pause`` is set, stop for RELOAD_PAUSE_SECONDS
    between reading Redis and building the index: the window in which a concurrent change
    used to be undone by the older snapshot."""

    def __init__(self, client: redis.Redis, metrics: PipelineMetrics) -> None:
        self.pause = False
        self.reading = threading.Event()
        super().__init__(client, metrics, model_id=MODEL_ID, config=CONFIG)

    def _parse_vectors(self, identity_id: str, values: object) -> npt.NDArray[np.float32]:
        if self.pause and identity_id == "(all)":  # reload parses every template as "(all)"
            self.reading.set()
            time.sleep(RELOAD_PAUSE_SECONDS)
        return super()._parse_vectors(identity_id, values)  # type: ignore[arg-type]  # passed on


def test_a_slow_reload_does_not_bring_back_a_removed_identity(
    clients: Callable[[], redis.Redis],
) -> None:
    """A reload reads Redis at version 1, then a removal commits version 2 and is applied
    while the reload is still building its index: the index ends at version 2, without the
    removed identity (the reload's older snapshot used to be swapped in over it)."""
    probe = _probe(1)
    gallery = _PausingGallery(clients(), PipelineMetrics.create())
    gallery.enroll(Enrollment(name="Alice", embeddings=_embeddings(probe), identity_id="alice"))
    assert _best_id(gallery, probe) == "alice"
    gallery.pause = True
    reloading = threading.Thread(target=gallery.reload)
    reloading.start()
    try:
        assert gallery.reading.wait(SYNC_SECONDS), "the reload never read Redis"
        gallery.pause = False
        gallery.remove("alice")
    finally:
        reloading.join(SYNC_SECONDS)
    assert not reloading.is_alive()
    stored = int(clients().get("fs:{gallery}:version") or 0)
    assert (gallery.version, stored) == (2, 2)
    assert _best_id(gallery, probe) is None


def test_a_committed_removal_is_not_reported_as_failed_and_the_index_catches_up(
    server: EmbeddedRedis, clients: Callable[[], redis.Redis]
) -> None:
    """Redis commits a removal, then refuses reads (an ACL without HMGET stands in for Redis
    going away right after EXEC): remove() returns normally, since the change is stored, and
    the identity is gone from this process's index at once (a removal needs no read back;
    it used to wait for a resync, matching meanwhile)."""
    probe = _probe(2)
    admin = clients()
    Gallery(admin, PipelineMetrics.create(), model_id=MODEL_ID, config=CONFIG).enroll(
        Enrollment(name="Bob", embeddings=_embeddings(probe), identity_id="bob")
    )
    admin.acl_setuser(
        "no-hmget",
        enabled=True,
        nopass=True,
        categories=["+@all"],
        commands=["-hmget"],
        keys=["*"],
        channels=["*"],
    )
    limited = redis.Redis(
        unix_socket_path=str(server.socket_path),
        username="no-hmget",
        password="unused",  # nopass: any password is accepted
        socket_timeout=CONFIG.socket_timeout_seconds,
    )
    try:
        with Gallery(
            limited, PipelineMetrics.create(), model_id=MODEL_ID, config=CONFIG
        ) as gallery:
            assert _best_id(gallery, probe) == "bob"
            gallery.remove("bob")  # committed; any read after it is refused
            assert admin.hget("fs:{gallery}:identities", "bob") is None
            assert _best_id(gallery, probe) is None
            assert gallery.version == int(admin.get("fs:{gallery}:version") or 0)
    finally:
        limited.close()


def test_an_identity_id_with_a_trailing_newline_is_refused(
    clients: Callable[[], redis.Redis],
) -> None:
    """An id must be wholly 1-128 of A-Z a-z 0-9 _ . - : "alice\\n" is refused at enrolment
    and in lookups (``$`` in the old check matched before a final newline)."""
    identity_id = "alice\n"
    gallery = Gallery(clients(), PipelineMetrics.create(), model_id=MODEL_ID, config=CONFIG)
    with pytest.raises(GalleryRequestError, match="identity id"):
        Enrollment(name="Alice", embeddings=_embeddings(_probe(3)), identity_id=identity_id)
    with pytest.raises(GalleryRequestError, match="identity id"):
        gallery.get(identity_id)
    assert gallery.list_identities() == []
