"""A track speaks as one: the mean of a track's descriptors names an identity when single
frames fall just outside tau, and never overrules what single frames say (real Redis gallery,
synthetic descriptors so the geometry is known)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest
import redis

from pipeline.config.service import GalleryConfig
from pipeline.gallery.model import Enrollment
from pipeline.gallery.store import Gallery
from pipeline.metrics import PipelineMetrics
from pipeline.recognition.offline import MatchConfig, track_consensus, track_result
from pipeline.recognition.track import Track
from pipeline.types import Embeddings, Match, Matches

MODEL_ID = "dlib-resnet-v1-test"
TAU = 0.6
FRAME_DISTANCE = 0.65  # each frame just outside tau, as measured over RTSP (issue 22)


def _unit(rng: np.random.Generator, count: int) -> npt.NDArray[np.float32]:
    vectors = rng.normal(size=(count, 128))
    unit: npt.NDArray[np.float32] = (
        vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    ).astype(np.float32)
    return unit


def _around(
    rng: np.random.Generator, centre: npt.NDArray[np.float32], count: int
) -> npt.NDArray[np.float32]:
    """``count`` descriptors each FRAME_DISTANCE from ``centre``, in independent directions."""
    return (centre + FRAME_DISTANCE * _unit(rng, count)).astype(np.float32)


@pytest.fixture
def people(clients: Callable[[], redis.Redis]) -> tuple[Gallery, npt.NDArray[np.float32]]:
    """A gallery of Alice (row 0) and Bob (row 1), one template each, far apart."""
    gallery = Gallery(
        clients(),
        PipelineMetrics.create(),
        model_id=MODEL_ID,
        config=GalleryConfig(socket_timeout_seconds=2.0),
    )
    templates = _unit(np.random.default_rng(3), 2)
    for name, template in zip(("Alice", "Bob"), templates, strict=True):
        gallery.enroll(
            Enrollment(
                name=name,
                embeddings=Embeddings(template[np.newaxis], MODEL_ID),
                identity_id=name.lower(),
            )
        )
    return gallery, templates


def _track(
    gallery: Gallery, vectors: npt.NDArray[np.float32], *, extra: Match | None = None
) -> Track:
    """A track whose encodings are ``vectors``, each recorded as the gallery answers it at
    tau; ``extra``: one more within-tau vote (a frame that named someone)."""
    track = Track(track_id=1, box=np.zeros(4, np.float32), first_frame=0, last_frame=40)
    answers = gallery.identify(Embeddings(vectors, MODEL_ID), max_distance=TAU)
    for vector, within, nearest in zip(
        vectors, answers.best(), answers.nearest_distances, strict=True
    ):
        assert nearest is not None
        track.embeddings.append(vector)
        track.distances.append(nearest)
        track.matches.append(within)
    if extra is not None:
        track.matches.append(extra)
        track.distances.append(extra.distance)
    return track


def test_frames_just_outside_tau_are_named_by_the_track_mean(
    people: tuple[Gallery, npt.NDArray[np.float32]],
) -> None:
    gallery, templates = people
    track = _track(gallery, _around(np.random.default_rng(5), templates[0], 5))
    assert all(vote is None for vote in track.matches)  # no single frame is within tau
    named = track_consensus(track, gallery, MatchConfig(max_distance=TAU))
    assert named is not None
    assert named.identity_id == "alice"
    assert named.distance < TAU
    track.consensus = named
    result = track_result(track)
    assert (result.identity, result.identity_id) == ("Alice", "alice")


def test_a_stranger_is_named_by_nobody(people: tuple[Gallery, npt.NDArray[np.float32]]) -> None:
    gallery, _ = people
    stranger = _unit(np.random.default_rng(9), 1)[0]
    track = _track(gallery, _around(np.random.default_rng(11), stranger, 8))
    assert track_consensus(track, gallery, MatchConfig(max_distance=TAU)) is None
    assert track_result(track).identity is None


def test_a_frame_that_named_someone_else_wins_over_the_mean(
    people: tuple[Gallery, npt.NDArray[np.float32]],
) -> None:
    gallery, templates = people
    bob = Match(identity_id="bob", name="Bob", distance=0.55)
    track = _track(gallery, _around(np.random.default_rng(5), templates[0], 5), extra=bob)
    assert track_consensus(track, gallery, MatchConfig(max_distance=TAU)) is None


def test_too_few_encodings_or_the_vote_off_name_nobody(
    people: tuple[Gallery, npt.NDArray[np.float32]],
) -> None:
    gallery, templates = people
    track = _track(gallery, _around(np.random.default_rng(5), templates[0], 5))
    off = MatchConfig(max_distance=TAU, track_vote_min_encodings=0)
    assert track_consensus(track, gallery, off) is None
    six = MatchConfig(max_distance=TAU, track_vote_min_encodings=6)
    assert track_consensus(track, gallery, six) is None


def test_matches_rows_keep_their_probes() -> None:
    vectors = _unit(np.random.default_rng(1), 3)
    matches = Matches(((), (), ()), (0.7, 0.8, 0.9), MODEL_ID, 1, Embeddings(vectors, MODEL_ID))
    rows = matches.rows(1, 3)
    assert rows.probes is not None
    np.testing.assert_array_equal(rows.probes.vectors, vectors[1:3])
