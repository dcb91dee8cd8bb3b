"""Named galleries: a door searching gallery A never grants a person only in gallery B, the
search of some galleries sees only their identities, and a bad gallery name is refused with
the key named. Real faces (../shared/data/faces through the real encoder) in a real Redis,
through the real door policy."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import numpy.typing as npt
import pydantic
import pytest
import redis

from engines.runtime.onnxrt import OrtEngine
from engines.store import ModelStore
from pipeline.access.policy import DoorConfig, DoorPolicy
from pipeline.config.service import FaceStreamConfig, GalleryConfig
from pipeline.errors import GalleryRequestError, IdentityNotFoundError
from pipeline.gallery.model import Enrollment
from pipeline.gallery.store import Gallery
from pipeline.metrics import PipelineMetrics
from pipeline.recognition.analyzer import FaceAnalyzer
from pipeline.recognition.encode import FaceEncoder
from pipeline.recognition.offline import MatchConfig, identify_batch
from pipeline.service.app import open_analyzer
from pipeline.types import Embeddings, FaceChips, PendingFaces, TrackObservation

CONFIG = GalleryConfig(namespace="galleries-test", socket_timeout_seconds=2.0)
TAU = 10.0  # wide on purpose: only the gallery a door searches may keep a person out
LIVE_TAU = 0.6  # the encoder's operating point: the live path's test uses a real tau


@pytest.fixture
def encodings(face_chips: list[npt.NDArray[np.uint8]], ort_engine: OrtEngine) -> Embeddings:
    """float32 (4, 128) encodings of four real faces."""
    chips = FaceChips(np.stack(face_chips[:4]))
    return FaceEncoder(ort_engine, PipelineMetrics.create()).encode(chips)


def _rows(encodings: Embeddings, *rows: int) -> Embeddings:
    return Embeddings(np.ascontiguousarray(encodings.vectors[list(rows)]), encodings.model_id)


def _gallery(clients: Callable[[], redis.Redis], encodings: Embeddings) -> Gallery:
    """ann only in gallery a, bob only in b, cy in both."""
    gallery = Gallery(
        clients(), PipelineMetrics.create(), model_id=encodings.model_id, config=CONFIG
    )
    gallery.enroll_many(
        [
            Enrollment("Ann", _rows(encodings, 0), identity_id="ann", galleries=("a",)),
            Enrollment("Bob", _rows(encodings, 1), identity_id="bob", galleries=("b",)),
            Enrollment("Cy", _rows(encodings, 2), identity_id="cy", galleries=("a", "b")),
        ]
    )
    return gallery


def _observations(
    gallery: Gallery, probe: Embeddings, galleries: set[str]
) -> list[TrackObservation]:
    """Three encodings of one live track on camera cam-1, searched in ``galleries``."""
    best = gallery.identify(probe, max_distance=TAU, galleries=galleries).best()[0]
    assert best is not None
    return [
        TrackObservation(
            camera_id="cam-1",
            track_id=7,
            identity_id=best.identity_id,
            name=best.name,
            distance=best.distance,
            live=True,
            at=1000.0 + step,
            galleries=best.galleries,
        )
        for step in range(3)
    ]


def test_galleries_a_door_of_gallery_a_never_grants_a_person_only_in_gallery_b(
    clients: Callable[[], redis.Redis], encodings: Embeddings
) -> None:
    """One camera watched by door-a (gallery a) and door-b (gallery b) searches the union:
    Bob (only in b) is granted at door-b and never at door-a, where his track is unknown;
    Cy (in both) is granted at both."""
    gallery = _gallery(clients, encodings)
    doors = [
        DoorConfig(id="door-a", cameras=["cam-1"], galleries=["a"], required_matches=3),
        DoorConfig(id="door-b", cameras=["cam-1"], galleries=["b"], required_matches=3),
    ]
    policy = DoorPolicy(doors)
    decisions = []
    for observation in _observations(gallery, _rows(encodings, 1), {"a", "b"}):
        decisions.extend(policy.observe(observation))
    outcomes = {
        decision.door_id: (decision.outcome, decision.identity_id) for decision in decisions
    }
    assert outcomes == {"door-a": ("unknown", None), "door-b": ("granted", "bob")}

    policy = DoorPolicy(doors)
    decisions = []
    for observation in _observations(gallery, _rows(encodings, 2), {"a", "b"}):
        decisions.extend(policy.observe(observation))
    assert sorted((d.door_id, d.outcome, d.identity_id) for d in decisions) == [
        ("door-a", "granted", "cy"),
        ("door-b", "granted", "cy"),
    ]


def test_galleries_a_search_sees_only_the_named_galleries_identities(
    clients: Callable[[], redis.Redis], encodings: Embeddings
) -> None:
    """Bob's own face, searched in gallery a, finds nobody named Bob (the nearest is someone
    of gallery a); searched in b or in every gallery, it is Bob. Membership survives a reload
    from Redis, and a gallery nobody is in finds nobody."""
    gallery = _gallery(clients, encodings)
    probe = _rows(encodings, 1)
    in_a = gallery.identify(probe, top_k=3, max_distance=TAU, galleries={"a"}).per_probe[0]
    assert {match.identity_id for match in in_a} == {"ann", "cy"}
    for galleries in ({"b"}, None):
        best = gallery.identify(probe, max_distance=TAU, galleries=galleries).best()[0]
        assert best is not None
        assert best.identity_id == "bob"
    fresh = Gallery(clients(), PipelineMetrics.create(), model_id=probe.model_id, config=CONFIG)
    in_b = fresh.identify(probe, top_k=3, max_distance=TAU, galleries={"b"}).per_probe[0]
    assert [match.identity_id for match in in_b] == ["bob", "cy"]
    assert fresh.get("cy").galleries == ("a", "b")
    empty = fresh.identify(probe, max_distance=TAU, galleries={"nobody"})
    assert empty.per_probe == ((),)
    assert empty.nearest_distances == (None,)


def test_galleries_a_bad_gallery_name_is_refused_naming_it(encodings: Embeddings) -> None:
    """A bad name in a door's galleries is a config error naming the key; at enrolment, a
    GalleryRequestError (the API's 422) naming the name."""
    with pytest.raises(pydantic.ValidationError, match=r"galleries\.0"):
        DoorConfig(id="door", cameras=["cam"], galleries=["no spaces"])
    with pytest.raises(pydantic.ValidationError, match="galleries"):
        DoorConfig(id="door", cameras=["cam"], galleries=[])
    with pytest.raises(GalleryRequestError, match="'a/b'"):
        Enrollment("Ann", _rows(encodings, 0), galleries=("a/b",))


@pytest.fixture(scope="module")
def analyzer(session_store: ModelStore) -> Iterator[FaceAnalyzer]:
    """The service's detect + align + encode."""
    with open_analyzer(FaceStreamConfig(data_dir=session_store.data_dir)) as built:
        yield built


def test_galleries_a_camera_searches_only_its_doors_galleries(
    clients: Callable[[], redis.Redis],
    analyzer: FaceAnalyzer,
    face_chips: list[npt.NDArray[np.uint8]],
) -> None:
    """Ann (gallery a) is enrolled from her mirrored face; a look-alike only in gallery b sits
    nearer her live face than her own template. Searched everywhere (as before), the
    look-alike hides Ann at door-a, which then sees nobody; cam-a, watched only by door-a,
    searches gallery a alone, so door-a grants Ann, while cam-b (door-b, gallery b) still
    finds the look-alike in the same batch. A camera no door watches searches everything."""
    live_chip = face_chips[0]
    own = analyzer.encoder.encode(FaceChips(np.stack([live_chip[:, ::-1].copy()])))
    probe = analyzer.encoder.encode(FaceChips(np.stack([live_chip])))
    between = (own.vectors + probe.vectors) / 2  # nearer the live face than her template
    gallery = Gallery(clients(), PipelineMetrics.create(), model_id=own.model_id, config=CONFIG)
    gallery.enroll_many(
        [
            Enrollment("Ann", own, identity_id="ann", galleries=("a",)),
            Enrollment(
                "Lookalike",
                Embeddings(between.astype(np.float32), own.model_id),
                identity_id="lookalike",
                galleries=("b",),
            ),
        ]
    )
    policy = DoorPolicy(
        [
            DoorConfig(id="door-a", cameras=["cam-a"], galleries=["a"], required_matches=3),
            DoorConfig(id="door-b", cameras=["cam-b"], galleries=["b"], required_matches=3),
        ]
    )
    assert policy.galleries_for("cam-a") == frozenset({"a"})
    assert policy.galleries_for("cam-unwatched") is None
    match = MatchConfig(max_distance=LIVE_TAU)
    pending = PendingFaces(FaceChips(np.stack([live_chip])), track_ids=(7,))

    (everywhere,) = identify_batch(analyzer, gallery, [pending], match)
    hidden = everywhere.best()[0]
    assert hidden is not None
    assert hidden.identity_id == "lookalike"

    at_a, at_b, unwatched = identify_batch(
        analyzer,
        gallery,
        [pending, pending, pending],
        match,
        galleries=[policy.galleries_for(camera) for camera in ("cam-a", "cam-b", "cam-c")],
    )
    found = at_a.best()[0]
    assert found is not None
    assert found.identity_id == "ann"
    assert found.distance <= LIVE_TAU
    assert at_a.probes is not None  # the track's mean descriptor still gets its encodings
    assert [m.identity_id for m in at_b.best() if m] == ["lookalike"]
    assert [m.identity_id for m in unwatched.best() if m] == ["lookalike"]

    decisions = []
    for step in range(3):
        decisions.extend(
            policy.observe(
                TrackObservation(
                    camera_id="cam-a",
                    track_id=7,
                    identity_id=found.identity_id,
                    name=found.name,
                    distance=found.distance,
                    live=True,
                    at=1000.0 + step,
                    galleries=found.galleries,
                )
            )
        )
    assert [(d.door_id, d.outcome, d.identity_id) for d in decisions] == [
        ("door-a", "granted", "ann")
    ]


def test_galleries_a_door_of_gallery_a_grants_a_person_only_after_they_join_it(
    clients: Callable[[], redis.Redis], encodings: Embeddings
) -> None:
    """Bob (gallery b) is unknown at door-a; ``set_galleries`` puts him in a and b in one
    transaction, after which door-a grants him, from this index and from a fresh one loaded
    from Redis. A bad name or an unknown id is refused and writes nothing (same version)."""
    gallery = _gallery(clients, encodings)
    door_a = [DoorConfig(id="door-a", cameras=["cam-1"], galleries=["a"], required_matches=3)]
    probe = _rows(encodings, 1)

    def outcomes_at_door_a(searched: Gallery) -> list[tuple[str, str | None]]:
        policy = DoorPolicy(door_a)
        decisions = []
        # the camera searches both galleries (door-b watches it too): only the door's own count
        for observation in _observations(searched, probe, {"a", "b"}):
            decisions.extend(policy.observe(observation))
        return [(decision.outcome, decision.identity_id) for decision in decisions]

    assert outcomes_at_door_a(gallery) == [("unknown", None)]
    version = gallery.version
    with pytest.raises(GalleryRequestError, match="'a b'"):
        gallery.set_galleries("bob", ["a", "a b"])
    with pytest.raises(GalleryRequestError, match="at least one"):
        gallery.set_galleries("bob", [])
    with pytest.raises(IdentityNotFoundError):
        gallery.set_galleries("nobody", ["a"])
    assert gallery.version == version
    assert gallery.get("bob").galleries == ("b",)
    assert outcomes_at_door_a(gallery) == [("unknown", None)]

    moved = gallery.set_galleries("bob", ["b", "a"])
    assert moved.galleries == ("a", "b")
    assert gallery.version == version + 1
    assert outcomes_at_door_a(gallery) == [("granted", "bob")]
    fresh = Gallery(clients(), PipelineMetrics.create(), model_id=probe.model_id, config=CONFIG)
    assert fresh.get("bob").galleries == ("a", "b")
    assert outcomes_at_door_a(fresh) == [("granted", "bob")]
