"""Unknown faces grouped by person: real faces through the service's own detect, track, align
and encode path (the shared Hamilton clip, and pan-and-zoom videos of ../shared/data photos),
kept and clustered in a real Redis (the service's embedded launcher).

Checked: the unknown tracks of one person from two different videos land in one cluster and
other people in clusters of their own; a track bridging two clusters merges them; enrolling a
cluster makes the person recognised afterwards; a cluster seen again after
recurring_after_seconds recurs; retention (short, with an injected clock) deletes the cluster,
its encodings and its thumbnail file; bad input is refused with the right error and writes
nothing."""

from __future__ import annotations

import shutil
import stat
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import redis
from cluster_support import RedisClusterGroup
from redis.crc import key_slot

from calibration.unknowns import LabelledTrack, cluster_figures, photo_video, video_unknown_tracks
from engines.store import ModelStore
from pipeline.config.service import FaceStreamConfig, GalleryConfig, load_config
from pipeline.config.unknowns import UnknownsConfig
from pipeline.errors import (
    ClusterEnrolledError,
    ConfigFileError,
    GalleryRequestError,
    UnknownClusterNotFoundError,
    UnknownsDisabledError,
)
from pipeline.gallery.store import Gallery, connect
from pipeline.gallery.unknowns import UnknownsStore, nearest_clusters, usable_faces
from pipeline.images import decode_image
from pipeline.metrics import PipelineMetrics
from pipeline.recognition.analyzer import FaceAnalyzer
from pipeline.recognition.offline import RecognitionConfig, RecordingProcessor
from pipeline.redis.server import EmbeddedRedis
from pipeline.service.app import open_analyzer
from pipeline.types import Embeddings, TrackFaces

TAU = 0.6  # the encoder's published operating point (recognition.match.max_distance default)
# every other frame: the tracks and encodings are the service's, at half the CPU
RECOGNITION = RecognitionConfig(detect_every_frames=2)
PHOTOS = {
    "lin_manuel_miranda": "faces/face_recognition/examples/lin-manuel-miranda.png",
    "barack_obama": "faces/face_recognition/examples/knn_examples/train/obama/obama.jpg",
    "joe_biden": "faces/face_recognition/examples/knn_examples/train/biden/biden2.jpg",
}
HAMILTON = "video/faces/short_hamilton_clip.mp4"  # Lin-Manuel Miranda on stage
DAY = 86_400.0


class Clock:
    """Unix seconds the tests set by hand (the store's injected clock)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    with EmbeddedRedis(tmp_path_factory.mktemp("redis")) as server:
        server.wait_ready(timeout_seconds=10.0)
        yield server.url


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    made = redis.Redis.from_url(redis_url, socket_timeout=5.0)
    made.flushall()
    yield made
    made.close()


@pytest.fixture(scope="module")
def analyzer(session_store: ModelStore) -> Iterator[FaceAnalyzer]:
    with open_analyzer(FaceStreamConfig(data_dir=session_store.data_dir)) as built:
        yield built


def _gallery(client: redis.Redis, model_id: str) -> Gallery:
    return Gallery(client, PipelineMetrics.create(), model_id=model_id)


@pytest.fixture(scope="module")
def photo_videos(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A pan-and-zoom video of one photo of each person."""
    folder = tmp_path_factory.mktemp("videos")
    videos = {}
    for number, (person, relative) in enumerate(sorted(PHOTOS.items())):
        photo = decode_image((shared_data / relative).read_bytes(), name=relative)
        videos[person] = folder / f"{person}.mp4"
        photo_video(photo, videos[person], seconds=2.0, seed=number)
    return videos


@pytest.fixture(scope="module")
def tracks(
    analyzer: FaceAnalyzer, redis_url: str, photo_videos: dict[str, Path], shared_data: Path
) -> dict[str, list[TrackFaces]]:
    """Every unknown track of each video, by camera id (an empty gallery: all are unknown)."""
    client = redis.Redis.from_url(redis_url, socket_timeout=5.0)
    try:
        gallery = Gallery(
            client,
            PipelineMetrics.create(),
            model_id=analyzer.model_id,
            config=GalleryConfig(namespace="unknown-videos"),
        )
        found = {
            "hamilton": video_unknown_tracks(
                analyzer, gallery, shared_data / HAMILTON, RECOGNITION
            ),
            **{
                person: video_unknown_tracks(analyzer, gallery, video, RECOGNITION)
                for person, video in photo_videos.items()
            },
        }
    finally:
        client.close()
    for camera_id, faces in found.items():
        assert faces, f"no unknown track in the {camera_id} video"
    return found


def _store(
    client: redis.Redis, model_id: str, tmp_path: Path, clock: Clock, **settings: object
) -> UnknownsStore:
    config = UnknownsConfig.model_validate({"enabled": True, **settings})
    return UnknownsStore(
        _gallery(client, model_id),
        client,
        config,
        cluster_distance=config.cluster_distance or TAU,
        thumbnails_dir=tmp_path / "unknowns",
        clock=clock,
    )


def _everything(client: redis.Redis) -> dict[bytes | str, object]:
    """Every key of the Redis and its serialised value: equal before and after means nothing
    was written."""
    return {key: client.dump(key) for key in sorted(client.keys("*"))}


def test_unknown_tracks_of_one_person_in_two_videos_share_a_cluster_and_enrol(
    client: redis.Redis,
    analyzer: FaceAnalyzer,
    *,
    tracks: dict[str, list[TrackFaces]],
    photo_videos: dict[str, Path],
    shared_data: Path,
    tmp_path: Path,
) -> None:
    """Lin-Manuel Miranda on stage (the Hamilton clip) and in a photo's video land in one
    cluster; Obama and Biden each in one of their own. Enrolling Lin's cluster makes his
    photo's video recognised as him, and the cluster leaves the list."""
    clock = Clock(1_000_000.0)
    store = _store(client, analyzer.model_id, tmp_path, clock)
    for camera_id in ("hamilton", *sorted(PHOTOS)):
        for faces in tracks[camera_id]:
            usable = usable_faces(faces, store.config)  # as the service keeps them
            if usable is not None:
                clock.now += 1.0
                store.add(camera_id, usable)
    clusters = store.clusters()
    by_camera = {
        person: [cluster for cluster in clusters if person in cluster.cameras] for person in PHOTOS
    }
    assert all(len(found) == 1 for found in by_camera.values()), by_camera
    lin = by_camera["lin_manuel_miranda"][0]
    obama = by_camera["barack_obama"][0]
    biden = by_camera["joe_biden"][0]
    assert "hamilton" in lin.cameras  # the same person, seen by two "cameras"
    assert len({lin.cluster_id, obama.cluster_id, biden.cluster_id}) == 3
    assert obama.cameras == ("barack_obama",)
    assert biden.cameras == ("joe_biden",)
    assert [cluster.last_seen for cluster in clusters] == sorted(
        (cluster.last_seen for cluster in clusters), reverse=True
    )

    encodings = len(store.encodings(lin.cluster_id))
    identity = store.enroll(lin.cluster_id, "Lin-Manuel", galleries=["default"])
    # the cluster's encodings moved into the gallery: none left in the cluster
    assert identity.template_counts[analyzer.model_id] == encodings
    assert len(store.encodings(lin.cluster_id)) == 0
    assert lin.cluster_id not in {cluster.cluster_id for cluster in store.clusters()}
    gallery = _gallery(client, analyzer.model_id)  # a fresh index, loaded from Redis
    photo = decode_image((shared_data / PHOTOS["lin_manuel_miranda"]).read_bytes())
    probe = analyzer.analyze(photo).embeddings
    best = gallery.identify(probe, max_distance=TAU).best()[0]
    assert best is not None
    assert best.identity_id == identity.identity_id
    seen = RecordingProcessor(analyzer, gallery, RECOGNITION).run(
        photo_videos["lin_manuel_miranda"]
    )
    assert [track.identity for track in seen.tracks] == ["Lin-Manuel"]
    before = _everything(client)
    with pytest.raises(ClusterEnrolledError, match="enrolled already"):
        store.enroll(lin.cluster_id, "Lin-Manuel again", galleries=["default"])
    assert _everything(client) == before


def test_a_track_bridging_two_clusters_merges_them(
    client: redis.Redis, analyzer: FaceAnalyzer, tracks: dict[str, list[TrackFaces]], tmp_path: Path
) -> None:
    """Obama's and Biden's tracks make two clusters; a track with one encoding of each sits
    within the cluster distance of both, so the two become one (the older one's id), with
    every track and encoding, and the other id is gone from Redis."""
    clock = Clock(5_000.0)
    store = _store(client, analyzer.model_id, tmp_path, clock, cluster_distance=0.5)
    obama, biden = tracks["barack_obama"][0], tracks["joe_biden"][0]
    first = store.add("cam-a", obama).cluster
    clock.now += 10.0
    second = store.add("cam-b", biden).cluster
    assert first.cluster_id != second.cluster_id
    both = np.stack([obama.embeddings.vectors[0], biden.embeddings.vectors[0]])
    distances = dict(
        nearest_clusters(
            both,
            {"obama": obama.embeddings.vectors[:3], "biden": biden.embeddings.vectors[:3]},
            0.5,
        )
    )
    assert set(distances) == {"obama", "biden"}  # the bridge is within reach of both
    bridge = replace(
        obama,
        embeddings=Embeddings(both, obama.embeddings.model_id),
        qualities=(obama.qualities[0], biden.qualities[0]),
    )
    clock.now += 10.0
    added = store.add("cam-c", bridge)
    assert added.cluster.cluster_id == first.cluster_id
    assert added.merged == (second.cluster_id,)
    assert added.cluster.count == 3
    assert added.cluster.cameras == ("cam-a", "cam-b", "cam-c")
    assert [cluster.cluster_id for cluster in store.clusters()] == [first.cluster_id]
    kept = min(3, len(obama.embeddings)) + min(3, len(biden.embeddings)) + 2
    assert len(store.encodings(first.cluster_id)) == kept
    with pytest.raises(UnknownClusterNotFoundError):
        store.cluster(second.cluster_id)
    assert not client.exists(f"fs:{{gallery}}:unknowns:vectors:{second.cluster_id}")


def test_unknown_cluster_recurs_after_recurring_after_seconds(
    client: redis.Redis, analyzer: FaceAnalyzer, tracks: dict[str, list[TrackFaces]], tmp_path: Path
) -> None:
    """Seen again sooner than recurring_after_seconds: no recurrence; later: it recurs, and the
    event payload names the cluster, the camera and the previous sighting (no face)."""
    clock = Clock(10_000.0)
    store = _store(client, analyzer.model_id, tmp_path, clock, recurring_after_seconds=600)
    obama = tracks["barack_obama"][0]
    first = store.add("door-1", obama)
    assert first.created
    assert not first.recurring
    clock.now += 599.0
    again = store.add("door-1", obama)
    assert not again.created
    assert not again.recurring
    clock.now += 600.0
    later = store.add("door-2", obama)
    assert later.recurring
    payload = later.event_payload("door-2")
    assert payload["cluster_id"] == first.cluster.cluster_id
    assert payload["previous_last_seen"] == 10_599.0
    assert payload["cameras"] == ["door-1", "door-2"]
    assert payload["count"] == 3


def test_retention_deletes_old_clusters_their_encodings_and_thumbnails(
    client: redis.Redis, analyzer: FaceAnalyzer, tracks: dict[str, list[TrackFaces]], tmp_path: Path
) -> None:
    """retention_days = 1 and an injected clock: a cluster last seen two days ago is deleted
    with its encodings and its thumbnail file (mode 600 while it lived); one seen an hour ago
    stays, thumbnail included."""
    clock = Clock(100 * DAY)
    store = _store(
        client, analyzer.model_id, tmp_path, clock, retention_days=1, keep_thumbnails=True
    )
    old = store.add("gate", tracks["barack_obama"][0]).cluster
    old_file = tmp_path / "unknowns" / f"{old.cluster_id}.jpg"
    assert stat.S_IMODE(old_file.stat().st_mode) == 0o600
    assert store.thumbnail(old.cluster_id)[:2] == b"\xff\xd8"  # a JPEG
    clock.now += 2 * DAY - 3600
    recent = store.add("gate", tracks["joe_biden"][0]).cluster
    clock.now += 3600
    assert store.purge() == [old.cluster_id]
    assert not old_file.exists()
    with pytest.raises(UnknownClusterNotFoundError):
        store.cluster(old.cluster_id)
    assert not client.exists(f"fs:{{gallery}}:unknowns:vectors:{old.cluster_id}")
    assert [cluster.cluster_id for cluster in store.clusters()] == [recent.cluster_id]
    assert (tmp_path / "unknowns" / f"{recent.cluster_id}.jpg").is_file()
    assert len(store.encodings(recent.cluster_id)) > 0


def test_without_keep_thumbnails_no_face_image_is_written(
    client: redis.Redis, analyzer: FaceAnalyzer, tracks: dict[str, list[TrackFaces]], tmp_path: Path
) -> None:
    """keep_thumbnails false (the default): the cluster has encodings, and no file exists."""
    store = _store(client, analyzer.model_id, tmp_path, Clock(1.0))
    added = store.add("gate", tracks["barack_obama"][0]).cluster
    assert len(store.encodings(added.cluster_id)) == 3  # encodings_per_track's default
    assert not (tmp_path / "unknowns").exists()
    with pytest.raises(UnknownClusterNotFoundError, match="keeps no thumbnail"):
        store.thumbnail(added.cluster_id)


def test_bad_input_is_refused_and_writes_nothing(
    client: redis.Redis, analyzer: FaceAnalyzer, tracks: dict[str, list[TrackFaces]], tmp_path: Path
) -> None:
    """An unknown or malformed cluster id, a blank name, a bad gallery name: each its own error
    (404, 404, 422 at the API), and Redis is byte for byte as before."""
    store = _store(client, analyzer.model_id, tmp_path, Clock(1.0))
    cluster = store.add("gate", tracks["joe_biden"][0]).cluster
    before = _everything(client)
    with pytest.raises(UnknownClusterNotFoundError, match="no unknown cluster"):
        store.enroll("0" * 32, "Nobody", galleries=["default"])
    with pytest.raises(UnknownClusterNotFoundError, match="32 lowercase hex"):
        store.delete("../../etc/passwd")
    with pytest.raises(UnknownClusterNotFoundError):
        store.delete("f" * 32)
    with pytest.raises(GalleryRequestError, match="non-empty name"):
        store.enroll(cluster.cluster_id, "   ", galleries=["default"])
    with pytest.raises(GalleryRequestError, match="gallery"):
        store.enroll(cluster.cluster_id, "Joe", galleries=["no spaces allowed"])
    assert _everything(client) == before
    assert issubclass(UnknownClusterNotFoundError, LookupError)
    assert issubclass(UnknownsDisabledError, LookupError)
    assert issubclass(ClusterEnrolledError, ValueError)


def test_nearest_clusters_is_average_linkage_and_deterministic() -> None:
    """The mean of all pairwise distances decides, ties go by id, and the order of the
    mapping does not matter."""
    track = np.zeros((2, 128), np.float32)
    near = np.zeros((2, 128), np.float32)
    near[1, 0] = 0.4  # pairwise distances 0, 0.4, 0, 0.4: mean 0.2
    far = np.zeros((1, 128), np.float32)
    far[0, 0] = 0.7
    twin = near.copy()
    found = nearest_clusters(track, {"b": twin, "far": far, "a": near}, 0.5)
    assert [cluster_id for cluster_id, _ in found] == ["a", "b"]
    assert [distance for _, distance in found] == pytest.approx([0.2, 0.2])
    assert nearest_clusters(track, {"far": far}, 0.5) == []


def test_bad_unknowns_settings_are_config_errors_naming_the_key(tmp_path: Path) -> None:
    """A bad value or a typo in [unknowns] stops the config with the key named."""
    path = tmp_path / "facestream.toml"
    for text, key in (
        ("retention_days = 0", "unknowns.retention_days"),
        ("encodings_per_track = 9", "unknowns.encodings_per_track"),
        ("cluster_distance = -1.0", "unknowns.cluster_distance"),
        ("keep_thumbnail = true", "unknowns.keep_thumbnail"),
    ):
        path.write_text(f"[unknowns]\n{text}\n", encoding="utf-8")
        with pytest.raises(ConfigFileError, match=key.replace(".", r"\.")):
            load_config(path)
    assert not load_config(None).unknowns.enabled  # opt-in


def test_only_encodings_passing_the_quality_minimums_are_kept(
    tracks: dict[str, list[TrackFaces]],
) -> None:
    """The Hamilton clip's stage-lit tracks hold blurred faces (sharpness below the doors'
    default 10): none of their encodings is kept, so blurred strangers cannot merge clusters;
    a sharp photo track keeps its encodings, best first; a minimum nothing passes keeps none."""
    defaults = UnknownsConfig(enabled=True)
    hamilton = tracks["hamilton"]
    blurred = [faces for faces in hamilton if faces.qualities[0].sharpness < defaults.min_sharpness]
    assert blurred, "expected blurred stage-lit tracks in the Hamilton clip"
    assert all(usable_faces(faces, defaults) is None for faces in blurred)
    sharp = tracks["barack_obama"][0]
    assert usable_faces(sharp, defaults) is sharp
    strict = UnknownsConfig(enabled=True, min_sharpness=100_000.0)
    assert usable_faces(sharp, strict) is None


def test_cluster_figures_count_purity_splits_and_merges(
    client: redis.Redis, analyzer: FaceAnalyzer, tracks: dict[str, list[TrackFaces]], tmp_path: Path
) -> None:
    """The figures of ``facestream eval unknowns``: two tracks of Obama and one of Biden in
    their own clusters is purity 1 and one cluster per person; a cluster distance that joins
    everything is one cluster holding both (purity 2/3, one merge)."""
    obama, biden = tracks["barack_obama"][0], tracks["joe_biden"][0]
    labelled = [
        LabelledTrack(obama, "photo-0", "barack_obama"),
        LabelledTrack(biden, "photo-1", "joe_biden"),
        LabelledTrack(obama, "photo-2", "barack_obama"),
    ]
    figures = cluster_figures(_store(client, analyzer.model_id, tmp_path, Clock(1.0)), labelled)
    assert (figures.purity, figures.clusters_per_person, figures.clusters) == (1.0, 1.0, 2)
    assert figures.merged_clusters == 0
    client.flushall()
    joined = _store(client, analyzer.model_id, tmp_path, Clock(1.0), cluster_distance=2.0)
    figures = cluster_figures(joined, labelled)
    assert figures.clusters == 1
    assert figures.purity == pytest.approx(2 / 3)
    assert figures.merged_persons == (("barack_obama", "joe_biden"),)


def test_unknowns_work_on_a_redis_cluster_in_the_gallerys_slot(
    analyzer: FaceAnalyzer, tracks: dict[str, list[TrackFaces]], tmp_path: Path
) -> None:
    """On a real 3-master Redis Cluster every unknowns transaction (a new cluster, a join, a
    merge, an enrolment writing the gallery too, a delete, a purge) runs, and every key lives in
    the gallery's one slot (the hash tag), so none of them is ever cross-slot."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    with RedisClusterGroup(tmp_path / "cluster") as cluster:
        client = connect(cluster.url, GalleryConfig(socket_timeout_seconds=5.0))
        try:
            gallery = Gallery(client, PipelineMetrics.create(), model_id=analyzer.model_id)
            config = UnknownsConfig(enabled=True, cluster_distance=0.5, retention_days=1)
            clock = Clock(10 * DAY)
            store = UnknownsStore(
                gallery,
                client,
                config,
                cluster_distance=0.5,
                thumbnails_dir=tmp_path / "unknowns",
                clock=clock,
            )
            obama, biden = tracks["barack_obama"][0], tracks["joe_biden"][0]
            first = store.add("cam-a", obama).cluster
            clock.now += 10.0
            store.add("cam-a", obama)  # joins
            clock.now += 10.0
            second = store.add("cam-b", biden).cluster
            clock.now += 10.0
            bridge = replace(
                obama,
                embeddings=Embeddings(
                    np.stack([obama.embeddings.vectors[0], biden.embeddings.vectors[0]]),
                    obama.embeddings.model_id,
                ),
                qualities=(obama.qualities[0], biden.qualities[0]),
            )
            assert store.add("cam-c", bridge).merged == (second.cluster_id,)
            identity = store.enroll(first.cluster_id, "Merged", galleries=["default"])
            assert gallery.get(identity.identity_id).name == "Merged"
            third = store.add("cam-d", biden).cluster
            store.delete(third.cluster_id)
            clock.now += 2 * DAY
            assert store.purge() == [first.cluster_id]
            slot = key_slot(b"fs:{gallery}:version")
            keys = list(client.scan_iter(match="fs:{gallery}:unknowns:*"))
            assert keys  # the version counter at least
            assert {key_slot(key) for key in keys} == {slot}
        finally:
            client.close()


def test_two_processes_cluster_into_the_same_state(
    redis_url: str, analyzer: FaceAnalyzer, tracks: dict[str, list[TrackFaces]], tmp_path: Path
) -> None:
    """Two stores on their own connections (two service processes) add tracks in turn: each
    sees the other's clusters (its state is read again whenever the other wrote), so one
    person stays one cluster, and a third store reading Redis afresh finds the same."""
    clients = [redis.Redis.from_url(redis_url, socket_timeout=5.0) for _ in range(3)]
    try:
        clients[0].flushall()
        clock = Clock(1_000.0)
        first, second, fresh = (
            _store(client, analyzer.model_id, tmp_path, clock) for client in clients
        )
        obama, biden = tracks["barack_obama"][0], tracks["joe_biden"][0]
        for store, faces in ((first, obama), (second, obama), (first, obama), (second, biden)):
            clock.now += 1.0
            store.add("cam", faces)
        counts = sorted(cluster.count for cluster in fresh.clusters())
        assert counts == [1, 3]
        assert sorted(c.count for c in first.clusters()) == counts
        clock.now += 1.0
        assert first.add("cam", biden).cluster.count == 2  # joins the cluster second made
    finally:
        for client in clients:
            client.close()
