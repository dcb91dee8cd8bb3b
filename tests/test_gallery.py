"""The Redis gallery against a real redis-server started by the service's own launcher."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import redis

from engines.errors import FaceStreamError
from pipeline.config.service import GalleryConfig
from pipeline.errors import (
    GalleryRequestError,
    GalleryStoreError,
    GalleryUnavailableError,
    IdentityExistsError,
    IdentityNotFoundError,
    ModelMismatchError,
)
from pipeline.gallery.model import Enrollment
from pipeline.gallery.store import Gallery, connect
from pipeline.metrics import PipelineMetrics
from pipeline.redis.server import EmbeddedRedis
from pipeline.types import Embeddings

MODEL_ID = "dlib-resnet-v1-test"
READY_SECONDS = 10.0
SYNC_SECONDS = 10.0
CONFIG = GalleryConfig(socket_timeout_seconds=2.0, resync_interval_seconds=0.05)


def _unit_vectors(rng: np.random.Generator, count: int) -> npt.NDArray[np.float32]:
    vectors = rng.normal(size=(count, 128)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def _embeddings(vectors: npt.NDArray[np.float32], model_id: str = MODEL_ID) -> Embeddings:
    return Embeddings(vectors=np.ascontiguousarray(vectors, dtype=np.float32), model_id=model_id)


def _eventually(condition: Callable[[], bool], timeout_seconds: float = SYNC_SECONDS) -> bool:
    """Poll ``condition`` until it holds or the deadline passes."""
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def _best_id(gallery: Gallery, probe: npt.NDArray[np.float32]) -> str | None:
    best = gallery.identify(_embeddings(probe[np.newaxis]), max_distance=0.5).best()[0]
    return None if best is None else best.identity_id


@pytest.fixture
def gallery(clients: Callable[[], redis.Redis]) -> Gallery:
    """An empty gallery for MODEL_ID on a fresh metrics registry."""
    return Gallery(clients(), PipelineMetrics.create(), model_id=MODEL_ID, config=CONFIG)


def test_enroll_identify_remove_round_trip(gallery: Gallery) -> None:
    """An enrolled person is identified by a nearby probe, is listed, and is gone once removed."""
    rng = np.random.default_rng(1)
    faces = _unit_vectors(rng, 3)
    alice = gallery.enroll(
        Enrollment(
            name="Alice", embeddings=_embeddings(faces[:2]), metadata={"badge": 17}, identity_id="a"
        )
    )
    gallery.enroll(Enrollment(name="Bob", embeddings=_embeddings(faces[2:]), identity_id="b"))
    assert alice.template_counts == {MODEL_ID: 2}
    assert gallery.get("a").metadata == {"badge": 17}
    assert [identity.identity_id for identity in gallery.list_identities()] == ["a", "b"]

    matches = gallery.identify(_embeddings(faces[1:2] + 0.01), top_k=2, max_distance=None)
    assert [match.identity_id for match in matches[0]] == ["a", "b"]
    assert matches[0][0].name == "Alice"
    assert matches[0][0].distance == pytest.approx(0.01 * np.sqrt(128), rel=1e-4)

    gallery.remove("a")
    assert _best_id(gallery, faces[1]) is None
    assert [identity.identity_id for identity in gallery.list_identities()] == ["b"]
    with pytest.raises(IdentityNotFoundError):
        gallery.get("a")
    with pytest.raises(IdentityNotFoundError):
        gallery.remove("a")


def test_top_k_and_distances_equal_brute_force(gallery: Gallery) -> None:
    """Top-k identities and distances equal numpy brute force (best template per identity)."""
    rng = np.random.default_rng(2)
    templates = {f"person-{index}": _unit_vectors(rng, 1 + index % 3) for index in range(60)}
    gallery.enroll_many(
        [
            Enrollment(
                name=identity_id.upper(), embeddings=_embeddings(vectors), identity_id=identity_id
            )
            for identity_id, vectors in templates.items()
        ]
    )
    probes = np.vstack([templates["person-7"][0] + 0.05, _unit_vectors(rng, 5)]).astype(np.float32)
    result = gallery.identify(_embeddings(probes), top_k=5, max_distance=None)
    assert len(result) == len(probes)
    for probe, matches in zip(probes, result.per_probe, strict=True):
        expected = sorted(
            (float(np.linalg.norm(vectors - probe, axis=1).min()), identity_id)
            for identity_id, vectors in templates.items()
        )[:5]
        assert [match.identity_id for match in matches] == [name for _, name in expected]
        np.testing.assert_allclose(
            [match.distance for match in matches], [distance for distance, _ in expected], rtol=1e-5
        )
    best = result.best()[0]
    assert best is not None
    assert best.identity_id == "person-7"

    threshold = result[0][1].distance  # keeps exactly the two nearest of probe 0
    within = gallery.identify(_embeddings(probes[:1]), top_k=5, max_distance=threshold)
    assert [match.identity_id for match in within[0]] == [m.identity_id for m in result[0][:2]]


def test_embeddings_of_another_model_are_refused(gallery: Gallery) -> None:
    """Identify, enroll and add_templates refuse embeddings whose model id is not the gallery's."""
    rng = np.random.default_rng(3)
    gallery.enroll(
        Enrollment(name="Carol", embeddings=_embeddings(_unit_vectors(rng, 1)), identity_id="c")
    )
    other = _embeddings(_unit_vectors(rng, 1), model_id="another-encoder")
    with pytest.raises(ModelMismatchError, match="another-encoder"):
        gallery.identify(other, max_distance=None)
    with pytest.raises(ModelMismatchError):
        gallery.enroll(Enrollment(name="Dan", embeddings=other))
    with pytest.raises(ModelMismatchError):
        gallery.add_templates("c", other)
    assert gallery.get("c").template_counts == {MODEL_ID: 1}


def test_bad_requests_are_refused_without_writing(gallery: Gallery) -> None:
    """Duplicate ids, empty names, bad ids, NaN templates and top_k < 1 are clear errors."""
    rng = np.random.default_rng(4)
    face = _embeddings(_unit_vectors(rng, 1))
    gallery.enroll(Enrollment(name="Erin", embeddings=face, identity_id="e"))
    version = gallery.version
    with pytest.raises(IdentityExistsError):
        gallery.enroll(Enrollment(name="Erin again", embeddings=face, identity_id="e"))
    with pytest.raises(GalleryRequestError, match="name"):
        Enrollment(name="  ", embeddings=face)
    with pytest.raises(GalleryRequestError, match="identity id"):
        Enrollment(name="Frank", embeddings=face, identity_id="has space")
    with pytest.raises(GalleryRequestError, match="NaN"):
        Enrollment(name="Gina", embeddings=_embeddings(np.full((1, 128), np.nan, np.float32)))
    with pytest.raises(GalleryRequestError, match="top_k"):
        gallery.identify(face, top_k=0, max_distance=None)
    assert gallery.version == version
    assert [identity.name for identity in gallery.list_identities()] == ["Erin"]


def test_remove_deletes_every_key_and_field(
    gallery: Gallery, clients: Callable[[], redis.Redis]
) -> None:
    """After remove, no key or hash field mentions the identity; the other one is untouched."""
    rng = np.random.default_rng(5)
    gallery.enroll(
        Enrollment(name="Hal", embeddings=_embeddings(_unit_vectors(rng, 3)), identity_id="hal")
    )
    gallery.enroll(
        Enrollment(name="Ivy", embeddings=_embeddings(_unit_vectors(rng, 1)), identity_id="ivy")
    )
    gallery.add_templates("hal", _embeddings(_unit_vectors(rng, 2)))
    assert gallery.get("hal").template_counts == {MODEL_ID: 5}
    gallery.remove("hal")
    client = clients()
    keys = [key.decode() for key in client.scan_iter(match="*")]
    assert all(key.startswith("fs:{gallery}:") for key in keys)
    assert not [key for key in keys if "hal" in key]
    for key in keys:
        if client.type(key) == b"hash":
            assert not [name for name in client.hkeys(key) if b"hal" in name]
    assert gallery.get("ivy").template_counts == {MODEL_ID: 1}


def test_metrics_follow_the_index(clients: Callable[[], redis.Redis]) -> None:
    """gallery_identities/templates gauges track the index; a full load counts as a reload."""
    metrics = PipelineMetrics.create()
    gallery = Gallery(clients(), metrics, model_id=MODEL_ID, config=CONFIG)
    rng = np.random.default_rng(6)
    gallery.enroll(Enrollment(name="Jo", embeddings=_embeddings(_unit_vectors(rng, 2))))
    registry = metrics.registry
    assert registry.get_sample_value("facestream_gallery_identities") == 1
    assert registry.get_sample_value("facestream_gallery_templates") == 2
    reloads = registry.get_sample_value("facestream_gallery_reloads_total") or 0.0
    gallery.reload()
    assert registry.get_sample_value("facestream_gallery_reloads_total") == reloads + 1


def test_changes_in_one_process_reach_the_others_index(
    clients: Callable[[], redis.Redis],
) -> None:
    """Two gallery objects on separate clients: an enrolment and a removal made through one
    appear in the other's in-memory index via pub/sub, and both end at the same version."""
    writer = Gallery(clients(), PipelineMetrics.create(), model_id=MODEL_ID, config=CONFIG)
    rng = np.random.default_rng(7)
    faces = _unit_vectors(rng, 2)
    with Gallery(clients(), PipelineMetrics.create(), model_id=MODEL_ID, config=CONFIG) as reader:
        writer.enroll(Enrollment(name="Kim", embeddings=_embeddings(faces[:1]), identity_id="kim"))
        writer.enroll(Enrollment(name="Lee", embeddings=_embeddings(faces[1:]), identity_id="lee"))
        assert _eventually(lambda: _best_id(reader, faces[0]) == "kim")
        assert _eventually(lambda: _best_id(reader, faces[1]) == "lee")
        writer.remove("kim")
        assert _eventually(lambda: _best_id(reader, faces[0]) is None)
        assert _eventually(lambda: reader.version == writer.version)
        assert _best_id(reader, faces[1]) == "lee"


def test_enrolments_survive_a_killed_redis_and_the_index_resyncs(
    tmp_path: Path, server: EmbeddedRedis, clients: Callable[[], redis.Redis]
) -> None:
    """SIGKILL Redis, restart it on the same data dir: acknowledged enrolments are still there
    (AOF), the running gallery keeps answering meanwhile, and it picks up later changes."""
    rng = np.random.default_rng(8)
    faces = _unit_vectors(rng, 4)
    writer = Gallery(clients(), PipelineMetrics.create(), model_id=MODEL_ID, config=CONFIG)
    with Gallery(clients(), PipelineMetrics.create(), model_id=MODEL_ID, config=CONFIG) as reader:
        for index in range(3):
            writer.enroll(
                Enrollment(
                    name=f"P{index}",
                    embeddings=_embeddings(faces[index : index + 1]),
                    identity_id=f"p{index}",
                )
            )
        assert _eventually(lambda: reader.version == writer.version)

        os.kill(server.process_id, signal.SIGKILL)
        server.stop()
        assert _best_id(reader, faces[0]) == "p0"  # served from memory while Redis is down
        with pytest.raises(GalleryUnavailableError):
            writer.enroll(Enrollment(name="Lost", embeddings=_embeddings(faces[3:])))

        with EmbeddedRedis(server.data_dir) as restarted:
            restarted.wait_ready(timeout_seconds=READY_SECONDS)
            fresh = Gallery(clients(), PipelineMetrics.create(), model_id=MODEL_ID, config=CONFIG)
            assert sorted(identity.identity_id for identity in fresh.list_identities()) == [
                "p0",
                "p1",
                "p2",
            ]
            assert fresh.version == writer.version
            fresh.remove("p0")
            fresh.enroll(Enrollment(name="P3", embeddings=_embeddings(faces[3:]), identity_id="p3"))
            assert _eventually(lambda: _best_id(reader, faces[3]) == "p3")
            assert _eventually(lambda: _best_id(reader, faces[0]) is None)
            assert reader.version == fresh.version


def test_unreachable_redis_is_a_project_error(
    tmp_path: Path, server: EmbeddedRedis, clients: Callable[[], redis.Redis]
) -> None:
    """No server at the URL, or a server that went away, raises GalleryUnavailableError."""
    missing = connect(f"unix://{tmp_path / 'nobody.sock'}", CONFIG)
    try:
        with pytest.raises(GalleryUnavailableError, match="unreachable") as caught:
            Gallery(missing, PipelineMetrics.create(), model_id=MODEL_ID, config=CONFIG)
    finally:
        missing.close()
    assert isinstance(caught.value, FaceStreamError)
    assert isinstance(caught.value, ConnectionError)
    assert isinstance(caught.value.__cause__, redis.ConnectionError)

    gallery = Gallery(clients(), PipelineMetrics.create(), model_id=MODEL_ID, config=CONFIG)
    server.stop()
    with pytest.raises(GalleryUnavailableError):
        gallery.list_identities()
    with pytest.raises(GalleryUnavailableError):
        gallery.refresh()


@pytest.mark.parametrize(
    ("error", "builtin"),
    [
        (GalleryUnavailableError, ConnectionError),
        (GalleryStoreError, RuntimeError),
        (GalleryRequestError, ValueError),
        (ModelMismatchError, ValueError),
        (IdentityExistsError, ValueError),
        (IdentityNotFoundError, LookupError),
    ],
)
def test_gallery_errors_have_project_root_and_builtin(
    error: type[Exception], builtin: type[Exception]
) -> None:
    """Every gallery error derives from FaceStreamError and the builtin a caller would catch."""
    assert issubclass(error, FaceStreamError)
    assert issubclass(error, builtin)


def test_distance_to_is_the_nearest_template(gallery: Gallery) -> None:
    """1:1 distance_to equals the brute-force distance to the identity's nearest template."""
    rng = np.random.default_rng(9)
    templates = _unit_vectors(rng, 3)
    gallery.enroll(Enrollment(name="Max", embeddings=_embeddings(templates), identity_id="max"))
    probes = _unit_vectors(rng, 2)
    expected = float(np.linalg.norm(templates - probes[1], axis=1).min())
    assert gallery.distance_to(_embeddings(probes), "max", probe_index=1) == pytest.approx(
        expected, rel=1e-5
    )
    with pytest.raises(IdentityNotFoundError):
        gallery.distance_to(_embeddings(probes), "nobody")
    with pytest.raises(GalleryRequestError, match="probe_index"):
        gallery.distance_to(_embeddings(probes), "max", probe_index=2)
