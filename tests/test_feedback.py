"""Operators' corrections (issue 26): a wrong match quarantines the template it matched, keeps
the probe as a negative and gives that identity its own tighter tau; bad feedback writes
nothing. Real faces (../shared/data/faces through the real encoder) in a real Redis."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest
import redis

from engines.runtime.onnxrt import OrtEngine
from pipeline.config.service import FeedbackConfig, GalleryConfig
from pipeline.errors import (
    DecisionNotFoundError,
    FeedbackGivenError,
    GalleryRequestError,
    IdentityNotFoundError,
)
from pipeline.gallery.feedback import FeedbackStore
from pipeline.gallery.model import Enrollment
from pipeline.gallery.store import Gallery
from pipeline.metrics import PipelineMetrics
from pipeline.recognition.encode import FaceEncoder
from pipeline.types import Decision, Embeddings, FaceChips

CONFIG = GalleryConfig(namespace="feedback-test", socket_timeout_seconds=2.0)
FEEDBACK = FeedbackConfig(negative_margin=0.02)
TAU = 10.0  # wide on purpose: the identity's own ceiling, not the global tau, must refuse


@pytest.fixture
def encodings(face_chips: list[npt.NDArray[np.uint8]], ort_engine: OrtEngine) -> Embeddings:
    """float32 (6, 128) encodings of six real faces."""
    chips = FaceChips(np.stack(face_chips[:6]))
    return FaceEncoder(ort_engine, PipelineMetrics.create()).encode(chips)


def _rows(encodings: Embeddings, *rows: int) -> Embeddings:
    return Embeddings(np.ascontiguousarray(encodings.vectors[list(rows)]), encodings.model_id)


def _setup(
    clients: Callable[[], redis.Redis], encodings: Embeddings
) -> tuple[Gallery, FeedbackStore, redis.Redis]:
    client = clients()
    gallery = Gallery(client, PipelineMetrics.create(), model_id=encodings.model_id, config=CONFIG)
    gallery.enroll_many(
        [
            Enrollment("Ann", _rows(encodings, 0, 1), identity_id="ann"),
            Enrollment("Bob", _rows(encodings, 2), identity_id="bob"),
            Enrollment("Cy", _rows(encodings, 3), identity_id="cy"),
        ]
    )
    return gallery, FeedbackStore(gallery, client, FEEDBACK), client


def _decision(gallery: Gallery, probe: Embeddings) -> Decision:
    """The decision a door would make on ``probe``: its best match, template and encoding."""
    best = gallery.identify(probe, max_distance=TAU).best()[0]
    assert best is not None
    return Decision(
        door_id="lab",
        camera_id="front",
        track_id=1,
        outcome="granted",
        identity_id=best.identity_id,
        name=best.name,
        distance=best.distance,
        votes=3,
        at=1.0,
        template_id=best.template_id,
        probe=probe.vectors[0],
    )


def test_feedback_wrong_match_no_longer_matches_and_tightens_only_that_tau(
    clients: Callable[[], redis.Redis], encodings: Embeddings
) -> None:
    """A corrected match no longer matches the same probe; the corrected identity has its own
    tau ceiling, the others keep the global tau and still match their own faces."""
    gallery, store, _ = _setup(clients, encodings)
    probe = _rows(encodings, 0)  # Ann's first template's face: distance 0 to it
    decision = _decision(gallery, probe)
    assert decision.identity_id == "ann"
    assert store.remember(decision)
    result = store.give(decision.event_id, correct=False)
    assert result.quarantined_template == decision.template_id
    ann = gallery.get("ann")
    assert ann.negatives == 1
    assert ann.tau_ceiling is not None
    assert ann.tau_ceiling < TAU
    assert ann.template_counts[gallery.model_id] == 1
    after = gallery.identify(probe, max_distance=TAU)[0]
    assert all(match.identity_id != "ann" for match in after), after
    # Ann's other face still within her own, tighter tau
    own = gallery.identify(_rows(encodings, 1), max_distance=TAU).best()[0]
    assert own is not None
    assert own.identity_id == "ann"
    for other, row in (("bob", 2), ("cy", 3)):
        assert gallery.get(other).tau_ceiling is None
        assert gallery.get(other).negatives == 0
        match = gallery.identify(_rows(encodings, row), max_distance=TAU).best()[0]
        assert match is not None
        assert match.identity_id == other
    # listed, and restorable: the template is searched again (the negative stays)
    (quarantined,) = store.quarantined("ann")
    assert quarantined.template_id == decision.template_id
    restored = store.restore("ann", quarantined.template_id)
    assert restored.template_counts[gallery.model_id] == 2
    assert store.quarantined("ann") == []
    assert gallery.get("ann").negatives == 1


def test_feedback_right_match_changes_nothing_but_is_answered_once(
    clients: Callable[[], redis.Redis], encodings: Embeddings
) -> None:
    gallery, store, _ = _setup(clients, encodings)
    decision = _decision(gallery, _rows(encodings, 2))
    store.remember(decision)
    result = store.give(decision.event_id, correct=True)
    assert result.quarantined_template is None
    assert gallery.get("bob").tau_ceiling is None
    with pytest.raises(FeedbackGivenError, match="already had its feedback"):
        store.give(decision.event_id, correct=False)


def test_feedback_bad_input_is_refused_and_writes_nothing(
    clients: Callable[[], redis.Redis], encodings: Embeddings
) -> None:
    """Unknown event id, an identity that does not exist, a malformed id: refused, and the
    gallery (its version) and the kept probe are as they were."""
    gallery, store, client = _setup(clients, encodings)
    decision = _decision(gallery, _rows(encodings, 0))
    store.remember(decision)
    version = gallery.version
    with pytest.raises(DecisionNotFoundError, match="awaits feedback"):
        store.give("0" * 32, correct=False)
    with pytest.raises(IdentityNotFoundError, match="nobody"):
        store.give(decision.event_id, correct=False, correct_identity_id="nobody")
    with pytest.raises(GalleryRequestError, match="32 lowercase hex"):
        store.give("not-an-event", correct=False)
    with pytest.raises(GalleryRequestError, match="right match cannot name"):
        store.give(decision.event_id, correct=True, correct_identity_id="bob")
    assert gallery.version == version
    assert gallery.get("ann").negatives == 0
    assert client.exists(f"fs:{{{CONFIG.namespace}}}:probe:{decision.event_id}")
    # the probe still waits: a valid answer goes through afterwards
    assert store.give(decision.event_id, correct=False, correct_identity_id="bob").correct is False


def test_feedback_removal_deletes_negatives_quarantine_and_probes(
    clients: Callable[[], redis.Redis], encodings: Embeddings
) -> None:
    """Deleting a corrected identity leaves no key or field naming it."""
    gallery, store, client = _setup(clients, encodings)
    corrected = _decision(gallery, _rows(encodings, 0))
    store.remember(corrected)
    store.give(corrected.event_id, correct=False)
    pending = _decision(gallery, _rows(encodings, 1))
    store.remember(pending)
    gallery.remove("ann")
    assert store.forget_identity("ann") == 1
    for key in client.scan_iter(match="fs:*"):
        assert b"ann" not in key, key
        if client.type(key) == b"hash":
            assert not any(str(field).startswith("b'ann") for field in client.hkeys(key)), key
