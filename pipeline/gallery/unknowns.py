"""Unknown faces, grouped by person across cameras and days (``[unknowns]``, opt-in).

A track that ends with no identity decided leaves its best encodings (``TrackFaces``: best
quality first, ``unknowns.encodings_per_track`` of them) here, never a face image unless
``unknowns.keep_thumbnails``. Clustering is incremental and deterministic (``nearest_clusters``):
the new track's encodings are compared with every cluster's by average linkage (the mean of
all pairwise Euclidean distances); it joins the cluster within ``cluster_distance`` (default:
the recognition tau), starts a new one when none is, and merges every cluster within it when
it bridges several (they were one person seen apart). The merged cluster keeps the id of the
oldest (first seen; ties by id). Joining a cluster last seen ``recurring_after_seconds`` ago or
more makes ``UnknownTrackAdded.recurring`` true (the service publishes ``unknown_recurring``).

Keys, beside the gallery's (same ``{namespace}`` hash tag: a merge rewrites several clusters
and an enrolment writes the gallery in the same transaction, so everything shares one Redis
Cluster slot)::

    fs:{gallery}:unknowns:version             integer, +1 on every change (WATCHed)
    fs:{gallery}:unknowns:clusters            hash cluster id -> JSON {first_seen, last_seen,
                                              count, cameras, model, thumbnail_rank, enrolled}
    fs:{gallery}:unknowns:vectors:<cluster>   hash "<track key>/<n>" -> 128 float32 LE

Each clustering compares the new track with every cluster's encodings: the store keeps the
state its last write left (by version) and reads everything again only when another process
wrote since (``benchmarks/unknowns.py --clusters 1000``: 11.5 ms per track, 44.4 ms when
everything is read again, embedded Redis with AOF fsync always, one run on a shared 2-core
machine; it runs on the service's own thread, never the recognition worker's).

Every change is one MULTI/EXEC under WATCH of the version, so nothing is half-written; an
enrolment writes the identity (``Gallery.write``) and marks the cluster enrolled in the same
transaction. An enrolled cluster keeps its record (a second enrolment is refused) without
encodings or thumbnail. The thumbnail, when kept, is the best face of the cluster: a JPEG of
its aligned chip at ``<thumbnails dir>/<cluster id>.jpg``, mode 600, written after Redis took
the change and deleted with the cluster (deletion, enrolment, merge, retention); ``purge``
also deletes any thumbnail whose cluster is gone (a crash between the two).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final, TypeAlias

import cv2
import numpy as np
import numpy.typing as npt
import redis
from redis.client import Pipeline
from redis.cluster import ClusterPipeline, RedisCluster
from redis.typing import EncodableT

from pipeline.config.unknowns import UnknownsConfig
from pipeline.errors import (
    ClusterEnrolledError,
    GalleryStoreError,
    GalleryUnavailableError,
    IdentityExistsError,
    UnknownClusterNotFoundError,
)
from pipeline.gallery.model import Enrollment, Identity
from pipeline.gallery.store import Gallery, reply_bytes, reply_text
from pipeline.recognition.quality import encoding_rank
from pipeline.redis.errors import translated_redis_errors
from pipeline.redis.ha import redis_location
from pipeline.types import DESCRIPTOR_SIZE, Embeddings, JsonValue, TrackFaces

__all__ = [
    "UnknownCluster",
    "UnknownTrackAdded",
    "UnknownsPurger",
    "UnknownsStore",
    "check_cluster_id",
    "nearest_clusters",
    "usable_faces",
]

LOGGER = logging.getLogger(__name__)
# a Redis Cluster's client and pipeline too: every key here shares the gallery's one slot
_Client: TypeAlias = redis.Redis | RedisCluster
_Pipe: TypeAlias = Pipeline | ClusterPipeline
_VECTOR_DTYPE: Final = np.dtype("<f4")
_CLUSTER_ID_LENGTH: Final = 32
_SECONDS_PER_DAY: Final = 86_400.0


@dataclass(frozen=True, slots=True)
class UnknownCluster:
    """One person the cameras saw and nobody enrolled: ``count`` unknown tracks, first and last
    seen (unix seconds), the cameras that saw it, the encoder model of its encodings;
    ``thumbnail_rank``: the rank of the face kept as its thumbnail (None: none kept);
    ``enrolled``: the identity it became (its encodings are then in the gallery, not here)."""

    cluster_id: str
    count: int
    first_seen: float
    last_seen: float
    cameras: tuple[str, ...]
    model_id: str
    thumbnail_rank: float | None = None
    enrolled: str | None = None

    def record(self) -> bytes:
        """The JSON kept in the clusters hash."""
        return json.dumps(
            {
                "count": self.count,
                "first_seen": self.first_seen,
                "last_seen": self.last_seen,
                "cameras": list(self.cameras),
                "model": self.model_id,
                "thumbnail_rank": self.thumbnail_rank,
                "enrolled": self.enrolled,
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def from_record(cls, cluster_id: str, record: bytes | str) -> UnknownCluster:
        """Parse a stored record; GalleryStoreError when it is malformed."""
        try:
            fields = json.loads(record)
            rank = fields["thumbnail_rank"]
            enrolled = fields["enrolled"]
            return cls(
                cluster_id=cluster_id,
                count=int(fields["count"]),
                first_seen=float(fields["first_seen"]),
                last_seen=float(fields["last_seen"]),
                cameras=tuple(str(camera) for camera in fields["cameras"]),
                model_id=str(fields["model"]),
                thumbnail_rank=None if rank is None else float(rank),
                enrolled=None if enrolled is None else str(enrolled),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise GalleryStoreError(
                f"unknown cluster {cluster_id!r}: stored record is malformed: {exc}"
            ) from exc


@dataclass(frozen=True, slots=True)
class UnknownTrackAdded:
    """Where one unknown track went: its cluster after the change, the clusters merged into it
    (their ids are gone), whether it was new, and whether it recurred (seen again at least
    ``recurring_after_seconds`` after ``previous_last_seen``)."""

    cluster: UnknownCluster
    merged: tuple[str, ...]
    created: bool
    recurring: bool
    previous_last_seen: float | None

    def event_payload(self, camera_id: str) -> dict[str, JsonValue]:
        """The ``unknown_recurring`` event's payload: ids, times and cameras, never a face."""
        cluster = self.cluster
        return {
            "cluster_id": cluster.cluster_id,
            "camera_id": camera_id,
            "count": cluster.count,
            "first_seen": cluster.first_seen,
            "last_seen": cluster.last_seen,
            "previous_last_seen": self.previous_last_seen,
            "cameras": list(cluster.cameras),
        }


def nearest_clusters(
    track: npt.NDArray[np.float32],
    clusters: Mapping[str, npt.NDArray[np.float32]],
    max_distance: float,
) -> list[tuple[str, float]]:
    """The clusters a track joins: (cluster id, average-linkage distance) of every cluster whose
    mean pairwise Euclidean distance to the track's encodings is at most ``max_distance``,
    nearest first (ties by id: the same input always gives the same answer).

    track: float32 (K, 128); clusters: id -> float32 (M, 128), M >= 1.
    """
    found = []
    for cluster_id in sorted(clusters):
        members = clusters[cluster_id]
        differences = track[:, np.newaxis, :] - members[np.newaxis, :, :]
        distance = float(np.sqrt(np.einsum("ijk,ijk->ij", differences, differences)).mean())
        if distance <= max_distance:
            found.append((cluster_id, distance))
    found.sort(key=lambda pair: (pair[1], pair[0]))
    return found


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """Every cluster and its encodings (raw fields, and parsed for the active model) at one
    version of the unknowns."""

    version: int
    clusters: dict[str, UnknownCluster]
    fields: dict[str, dict[str, bytes]]
    vectors: dict[str, npt.NDArray[np.float32]]


@dataclass(frozen=True, slots=True)
class _Thumbnails:
    """What to do with thumbnail files once Redis took a change: move a merged cluster's
    better face to the survivor, delete the others, write the new track's face."""

    moved_from: str | None = None
    deleted: tuple[str, ...] = ()
    written: npt.NDArray[np.uint8] | None = None


def _vector(value: bytes) -> npt.NDArray[np.float32]:
    if len(value) != DESCRIPTOR_SIZE * _VECTOR_DTYPE.itemsize:
        raise GalleryStoreError(f"a stored unknown encoding is {len(value)} bytes, not 128 float32")
    return np.frombuffer(value, _VECTOR_DTYPE).astype(np.float32)


def _hash_fields(fields: Mapping[str, bytes]) -> dict[EncodableT, EncodableT]:
    """``fields`` typed as HSET's mapping takes them."""
    mapping: dict[EncodableT, EncodableT] = {}
    for key, value in fields.items():
        mapping[key] = value
    return mapping


def usable_faces(faces: TrackFaces, config: UnknownsConfig) -> TrackFaces | None:
    """The track's encodings that pass ``config``'s quality minimums (inter-ocular distance,
    sharpness), best first; None when none does (the track is not kept: a blurred or tiny face
    says little of who it is, and such faces of different people sit close together)."""
    rows = [
        row
        for row, quality in enumerate(faces.qualities)
        if quality.interocular_px >= config.min_interocular_px
        and quality.sharpness >= config.min_sharpness
    ]
    if not rows:
        return None
    if len(rows) == len(faces.qualities):
        return faces
    return TrackFaces(
        embeddings=Embeddings(
            np.ascontiguousarray(faces.embeddings.vectors[rows]), faces.embeddings.model_id
        ),
        qualities=tuple(faces.qualities[row] for row in rows),
        chip=faces.chip,
    )


def check_cluster_id(cluster_id: str) -> None:
    """UnknownClusterNotFoundError unless ``cluster_id`` could be one (32 lowercase hex)."""
    if len(cluster_id) != _CLUSTER_ID_LENGTH or any(
        c not in "0123456789abcdef" for c in cluster_id
    ):
        raise UnknownClusterNotFoundError(
            f"no unknown cluster {cluster_id[:80]!r} (ids are 32 lowercase hex)"
        )


class UnknownsStore:
    """Unknown tracks kept and clustered in Redis, beside one ``Gallery``.

    client: the gallery's Redis client (bytes responses); cluster_distance: average-linkage
    distance to join a cluster (the resolved ``unknowns.cluster_distance`` or tau);
    thumbnails_dir: where face crops go when ``config.keep_thumbnails`` (created mode 700);
    clock: unix seconds now (tests inject their own). Thread-safe within a process (one lock);
    across processes the transactions serialise writers.
    """

    def __init__(
        self,
        gallery: Gallery,
        client: _Client,
        config: UnknownsConfig,
        *,
        cluster_distance: float,
        thumbnails_dir: Path,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Keys under the gallery's prefix; nothing is read until a call."""
        self._gallery = gallery
        self._client = client
        self._config = config
        self._distance = cluster_distance
        self._thumbnails_dir = thumbnails_dir
        self._clock = clock
        self._where = redis_location(client)
        prefix = gallery.key_prefix
        self._gallery_prefix = prefix
        self._version_key = prefix + "unknowns:version"
        self._clusters_key = prefix + "unknowns:clusters"
        self._vectors_prefix = prefix + "unknowns:vectors:"
        self._lock = threading.Lock()
        self._snapshot: _Snapshot | None = None  # what the last read or write left, by version

    @property
    def config(self) -> UnknownsConfig:
        """``[unknowns]``."""
        return self._config

    # -- adding tracks --------------------------------------------------------------------

    def add(self, camera_id: str, faces: TrackFaces) -> UnknownTrackAdded:
        """Keep an unknown track's best ``config.encodings_per_track`` encodings and put it in
        its cluster (joined, new, or several merged). Raises GalleryUnavailableError when
        Redis is away, writing nothing."""
        if faces.embeddings.model_id != self._gallery.model_id:
            raise GalleryStoreError(
                f"unknown track of model {faces.embeddings.model_id!r}, the gallery's is "
                f"{self._gallery.model_id!r}"
            )
        kept = self._config.encodings_per_track
        vectors = np.ascontiguousarray(faces.embeddings.vectors[:kept], dtype=np.float32)
        rank = encoding_rank(faces.qualities[0])
        track_key = uuid.uuid4().hex
        fields = {
            f"{track_key}/{number}": vector.astype(_VECTOR_DTYPE).tobytes()
            for number, vector in enumerate(vectors)
        }
        outcome: list[tuple[UnknownTrackAdded, _Thumbnails]] = []

        def write(pipe: _Pipe) -> _Snapshot:
            snapshot = self._current(pipe)
            now = self._clock()
            joined = nearest_clusters(vectors, snapshot.vectors, self._distance)
            if not joined:
                cluster = UnknownCluster(
                    cluster_id=uuid.uuid4().hex,
                    count=1,
                    first_seen=now,
                    last_seen=now,
                    cameras=(camera_id,),
                    model_id=self._gallery.model_id,
                    thumbnail_rank=rank if self._config.keep_thumbnails else None,
                )
                pipe.multi()
                self._queue_cluster(pipe, cluster, fields)
                thumbnails = _Thumbnails(
                    written=faces.chip if self._config.keep_thumbnails else None
                )
                outcome[:] = [(UnknownTrackAdded(cluster, (), True, False, None), thumbnails)]
                return self._after(snapshot, (), {cluster.cluster_id: (cluster, dict(fields))})
            members = sorted(
                (snapshot.clusters[cluster_id] for cluster_id, _ in joined),
                key=lambda cluster: (cluster.first_seen, cluster.cluster_id),
            )
            survivor, merged = members[0], members[1:]
            previous = max(cluster.last_seen for cluster in members)
            best = max(members, key=lambda cluster: cluster.thumbnail_rank or -1.0)
            cluster = replace(
                survivor,
                count=sum(cluster.count for cluster in members) + 1,
                first_seen=min(cluster.first_seen for cluster in members),
                last_seen=max(now, previous),
                cameras=tuple(
                    sorted({camera_id, *(c for cluster in members for c in cluster.cameras)})
                ),
                thumbnail_rank=best.thumbnail_rank,
            )
            written = None
            if self._config.keep_thumbnails and rank > (cluster.thumbnail_rank or -1.0):
                cluster = replace(cluster, thumbnail_rank=rank)
                written = faces.chip
            pipe.multi()
            for gone in merged:
                pipe.hset(
                    self._vectors_prefix + survivor.cluster_id,
                    mapping=_hash_fields(snapshot.fields[gone.cluster_id]),
                )
                pipe.delete(self._vectors_prefix + gone.cluster_id)
                pipe.hdel(self._clusters_key, gone.cluster_id)
            self._queue_cluster(pipe, cluster, fields)
            moved = (
                best.cluster_id
                if best is not survivor and best.thumbnail_rank is not None
                else None
            )
            thumbnails = _Thumbnails(
                moved_from=None if written is not None else moved,
                deleted=tuple(gone.cluster_id for gone in merged),
                written=written,
            )
            recurring = now - previous >= self._config.recurring_after_seconds
            added = UnknownTrackAdded(
                cluster, tuple(gone.cluster_id for gone in merged), False, recurring, previous
            )
            outcome[:] = [(added, thumbnails)]
            joined_fields = dict(snapshot.fields.get(survivor.cluster_id, {}))
            for gone in merged:
                joined_fields.update(snapshot.fields[gone.cluster_id])
            joined_fields.update(fields)
            return self._after(
                snapshot,
                [gone.cluster_id for gone in merged],
                {cluster.cluster_id: (cluster, joined_fields)},
            )

        with self._lock:
            self._transaction(write, "keep an unknown track")
        added, thumbnails = outcome[0]
        self._apply_thumbnails(added.cluster.cluster_id, thumbnails)
        LOGGER.info(
            "unknown track of camera %s -> cluster %s (%s, %d tracks)",
            camera_id,
            added.cluster.cluster_id,
            "new" if added.created else f"merged {len(added.merged)}" if added.merged else "joined",
            added.cluster.count,
        )
        return added

    def _queue_cluster(
        self, pipe: _Pipe, cluster: UnknownCluster, fields: Mapping[str, bytes]
    ) -> None:
        pipe.hset(self._clusters_key, cluster.cluster_id, cluster.record())
        pipe.hset(self._vectors_prefix + cluster.cluster_id, mapping=_hash_fields(fields))

    # -- reads ----------------------------------------------------------------------------

    def clusters(self) -> list[UnknownCluster]:
        """The clusters not enrolled, the most recently seen first (ties by id)."""
        with self._talking_to_redis("list unknown clusters"):
            records = self._client.hgetall(self._clusters_key)
        found = [
            UnknownCluster.from_record(reply_text(key), reply_bytes(value))
            for key, value in records.items()
        ]
        found = [cluster for cluster in found if cluster.enrolled is None]
        found.sort(key=lambda cluster: (-cluster.last_seen, cluster.cluster_id))
        return found

    def cluster(self, cluster_id: str) -> UnknownCluster:
        """One cluster (enrolled ones too); UnknownClusterNotFoundError when absent."""
        check_cluster_id(cluster_id)
        with self._talking_to_redis("read an unknown cluster"):
            record = self._client.hget(self._clusters_key, cluster_id)
        if record is None:
            raise UnknownClusterNotFoundError(f"no unknown cluster {cluster_id!r}")
        return UnknownCluster.from_record(cluster_id, reply_bytes(record))

    def encodings(self, cluster_id: str) -> Embeddings:
        """A cluster's encodings of the gallery's model, float32 (N, 128) (N = 0 once
        enrolled); UnknownClusterNotFoundError when absent."""
        self.cluster(cluster_id)
        with self._talking_to_redis("read an unknown cluster's encodings"):
            stored = self._client.hgetall(self._vectors_prefix + cluster_id)
        return self._embeddings(
            {reply_text(key): reply_bytes(value) for key, value in stored.items()}
        )

    def thumbnail(self, cluster_id: str) -> bytes:
        """The cluster's face crop (JPEG); UnknownClusterNotFoundError when the cluster is
        absent or keeps none."""
        cluster = self.cluster(cluster_id)
        try:
            if cluster.thumbnail_rank is not None:
                return self._thumbnail_file(cluster_id).read_bytes()
        except OSError:
            pass  # deleted meanwhile (merged, purged), or never written: none kept
        raise UnknownClusterNotFoundError(
            f"unknown cluster {cluster_id!r} keeps no thumbnail (unknowns.keep_thumbnails is "
            "false, or it was enrolled)"
        )

    # -- operator's actions ---------------------------------------------------------------

    def enroll(
        self,
        cluster_id: str,
        name: str,
        *,
        galleries: Sequence[str],
        identity_id: str | None = None,
    ) -> Identity:
        """Make an identity of the cluster's encodings (its templates) in the named
        ``galleries``, and mark the cluster enrolled, in one transaction.

        UnknownClusterNotFoundError: no such cluster; ClusterEnrolledError: enrolled already,
        or no encoding of the gallery's model; GalleryRequestError: a bad name or gallery.
        Any of them writes nothing.
        """
        check_cluster_id(cluster_id)
        model_id = self._gallery.model_id
        # name, id and galleries checked before Redis is touched (the vector is a placeholder)
        Enrollment(
            name,
            Embeddings(np.zeros((1, DESCRIPTOR_SIZE), np.float32), model_id),
            identity_id=identity_id,
            galleries=tuple(galleries),
        )
        new_id = identity_id or uuid.uuid4().hex
        made: list[Identity] = []

        def write(pipe: _Pipe) -> None:
            pipe.watch(self._version_key)  # type: ignore[no-untyped-call]  # unannotated
            version = int(pipe.get(self._version_key) or 0)
            record = pipe.hget(self._clusters_key, cluster_id)
            if record is None:
                raise UnknownClusterNotFoundError(f"no unknown cluster {cluster_id!r}")
            cluster = UnknownCluster.from_record(cluster_id, reply_bytes(record))
            if cluster.enrolled is not None:
                raise ClusterEnrolledError(
                    f"unknown cluster {cluster_id!r} was enrolled already, as identity "
                    f"{cluster.enrolled!r}"
                )
            stored = pipe.hgetall(self._vectors_prefix + cluster_id)
            embeddings = self._embeddings(
                {reply_text(key): reply_bytes(value) for key, value in stored.items()}
            )
            if not len(embeddings) or cluster.model_id != model_id:
                raise ClusterEnrolledError(
                    f"unknown cluster {cluster_id!r} holds no encoding of model {model_id!r} "
                    "to enrol (empty)"
                )
            if pipe.hexists(self._gallery_prefix + "identities", new_id):
                raise IdentityExistsError(f"identity id already enrolled: {new_id!r}")
            now = self._clock()
            identity = Identity(
                identity_id=new_id,
                name=name,
                metadata={"unknown_cluster": cluster_id},
                created=now,
                updated=now,
                template_counts={model_id: len(embeddings)},
                galleries=tuple(galleries),
            )
            template_ids = [uuid.uuid4().hex for _ in range(len(embeddings))]
            pipe.multi()
            pipe.hset(self._gallery_prefix + "identities", new_id, identity.record())
            pipe.hset(
                self._gallery_prefix + "templates:" + new_id,
                mapping=dict.fromkeys(template_ids, model_id),
            )
            pipe.hset(
                self._gallery_prefix + "vectors:" + model_id,
                mapping={
                    f"{new_id}/{template_id}": vector.astype(_VECTOR_DTYPE).tobytes()
                    for template_id, vector in zip(template_ids, embeddings.vectors, strict=True)
                },
            )
            enrolled = replace(cluster, enrolled=new_id, thumbnail_rank=None)
            pipe.hset(self._clusters_key, cluster_id, enrolled.record())
            pipe.delete(self._vectors_prefix + cluster_id)
            pipe.set(self._version_key, version + 1)
            made[:] = [identity]

        with self._lock:
            self._gallery.write(write, [new_id], "enrol an unknown cluster")
            self._snapshot = None
        self._delete_thumbnail(cluster_id)
        LOGGER.info("unknown cluster %s enrolled as identity %s", cluster_id, new_id)
        return made[0]

    def delete(self, cluster_id: str) -> None:
        """Forget a cluster: its record, encodings and thumbnail; UnknownClusterNotFoundError
        when absent."""
        check_cluster_id(cluster_id)

        def write(pipe: _Pipe) -> _Snapshot:
            snapshot = self._current(pipe)
            if cluster_id not in snapshot.clusters:
                raise UnknownClusterNotFoundError(f"no unknown cluster {cluster_id!r}")
            pipe.multi()
            pipe.hdel(self._clusters_key, cluster_id)
            pipe.delete(self._vectors_prefix + cluster_id)
            return self._after(snapshot, [cluster_id], {})

        with self._lock:
            self._transaction(write, "delete an unknown cluster")
        self._delete_thumbnail(cluster_id)
        LOGGER.info("unknown cluster %s deleted", cluster_id)

    def purge(self) -> list[str]:
        """Delete every cluster last seen more than ``retention_days`` ago (enrolled markers
        too), with its encodings and thumbnail, and any thumbnail left without a cluster;
        returns the ids deleted."""
        deadline = self._clock() - self._config.retention_days * _SECONDS_PER_DAY
        expired: list[str] = []
        kept: set[str] = set()

        def write(pipe: _Pipe) -> _Snapshot:
            snapshot = self._current(pipe)
            expired[:] = sorted(
                cluster_id
                for cluster_id, cluster in snapshot.clusters.items()
                if cluster.last_seen < deadline
            )
            kept.clear()
            kept.update(set(snapshot.clusters) - set(expired))
            pipe.multi()
            for cluster_id in expired:
                pipe.hdel(self._clusters_key, cluster_id)
                pipe.delete(self._vectors_prefix + cluster_id)
            return self._after(snapshot, expired, {})

        with self._lock:
            self._transaction(write, "purge expired unknown clusters")
        for cluster_id in expired:
            self._delete_thumbnail(cluster_id)
        self._delete_orphan_thumbnails(kept)
        if expired:
            LOGGER.info("purged %d unknown clusters past retention", len(expired))
        return expired

    # -- internals ------------------------------------------------------------------------

    def _embeddings(self, fields: Mapping[str, bytes]) -> Embeddings:
        rows = [_vector(fields[key]) for key in sorted(fields)]
        vectors = np.stack(rows) if rows else np.zeros((0, DESCRIPTOR_SIZE), np.float32)
        return Embeddings(vectors.astype(np.float32), self._gallery.model_id)

    def _current(self, pipe: _Pipe) -> _Snapshot:
        """The snapshot at the WATCHed version: the one this store's last write left when no
        other process wrote since (the version is the same), else read again. The bulk read
        runs on another connection: if the version moves meanwhile, this transaction's EXEC
        fails and it runs again."""
        version = int(pipe.get(self._version_key) or 0)
        snapshot = self._snapshot
        if snapshot is None or snapshot.version != version:
            snapshot = self._read_snapshot()
            if snapshot.version != version:
                raise redis.WatchError("unknowns changed while being read")
            self._snapshot = snapshot
        return snapshot

    def _read_snapshot(self) -> _Snapshot:
        read = self._client.pipeline(transaction=True)
        read.get(self._version_key)
        read.hgetall(self._clusters_key)
        version_value, records = read.execute()
        clusters = {
            reply_text(key): UnknownCluster.from_record(reply_text(key), reply_bytes(value))
            for key, value in records.items()
        }
        ids = sorted(clusters)
        read = self._client.pipeline(transaction=True)
        read.get(self._version_key)
        for cluster_id in ids:
            read.hgetall(self._vectors_prefix + cluster_id)
        again, *stored = read.execute()
        if int(again or 0) != int(version_value or 0):
            raise redis.WatchError("unknowns changed while being read")
        fields = {
            cluster_id: {reply_text(key): reply_bytes(value) for key, value in values.items()}
            for cluster_id, values in zip(ids, stored, strict=True)
        }
        vectors = {}
        for cluster_id in ids:
            cluster = clusters[cluster_id]
            if cluster.enrolled is None and cluster.model_id == self._gallery.model_id:
                embeddings = self._embeddings(fields[cluster_id])
                if len(embeddings):
                    vectors[cluster_id] = embeddings.vectors
        return _Snapshot(int(version_value or 0), clusters, fields, vectors)

    def _transaction(self, write: Callable[[_Pipe], _Snapshot], action: str) -> None:
        """Run ``write`` (reads through ``_current``, then ``pipe.multi()`` and queued writes;
        returns the state after them) under WATCH of the version, which it then bumps; that
        state becomes the cached snapshot at the new version (dropped on any failure). The
        caller holds ``_lock``."""
        after: list[_Snapshot] = []

        def transaction(pipe: _Pipe) -> None:
            after[:] = [write(pipe)]
            pipe.incr(self._version_key)

        try:
            with self._talking_to_redis(action):
                replies = self._client.transaction(transaction, self._version_key)
        except BaseException:
            self._snapshot = None  # whatever Redis holds now is read again
            raise
        version = replies[-1] if isinstance(replies, list) and replies else None
        self._snapshot = None
        if isinstance(version, int) and after:  # committed: the state the write left
            self._snapshot = replace(after[0], version=version)

    def _after(
        self,
        snapshot: _Snapshot,
        removed: Iterable[str],
        updated: Mapping[str, tuple[UnknownCluster, dict[str, bytes]]],
    ) -> _Snapshot:
        """``snapshot`` with the ``removed`` clusters gone and the ``updated`` ones (record and
        every encoding field) replaced: what a write leaves (its version set once committed)."""
        clusters = dict(snapshot.clusters)
        fields = dict(snapshot.fields)
        vectors = dict(snapshot.vectors)
        for cluster_id in removed:
            clusters.pop(cluster_id, None)
            fields.pop(cluster_id, None)
            vectors.pop(cluster_id, None)
        for cluster_id, (cluster, cluster_fields) in updated.items():
            clusters[cluster_id] = cluster
            fields[cluster_id] = cluster_fields
            vectors[cluster_id] = self._embeddings(cluster_fields).vectors
        return _Snapshot(snapshot.version, clusters, fields, vectors)

    def _thumbnail_file(self, cluster_id: str) -> Path:
        return self._thumbnails_dir / f"{cluster_id}.jpg"

    def _apply_thumbnails(self, cluster_id: str, thumbnails: _Thumbnails) -> None:
        target = self._thumbnail_file(cluster_id)
        try:
            if thumbnails.moved_from is not None:
                source = self._thumbnail_file(thumbnails.moved_from)
                if source.is_file():
                    os.replace(source, target)
            for gone in thumbnails.deleted:
                self._delete_thumbnail(gone)
            if thumbnails.written is not None:
                self._write_thumbnail(target, thumbnails.written)
        except OSError as exc:  # Redis has the cluster; a missing crop is a 404, not a failure
            LOGGER.warning("thumbnail of unknown cluster %s not kept: %s", cluster_id, exc)

    def _write_thumbnail(self, target: Path, chip_rgb: npt.NDArray[np.uint8]) -> None:
        """The chip as JPEG, mode 600, replaced atomically (same-directory temporary file)."""
        self._thumbnails_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        ok, encoded = cv2.imencode(".jpg", np.ascontiguousarray(chip_rgb[:, :, ::-1]))
        if not ok:
            raise OSError("OpenCV could not encode the face crop as JPEG")
        partial = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(encoded.tobytes())
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(partial, target)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise

    def _delete_thumbnail(self, cluster_id: str) -> None:
        try:
            self._thumbnail_file(cluster_id).unlink(missing_ok=True)
        except OSError as exc:
            LOGGER.warning("thumbnail of unknown cluster %s not deleted: %s", cluster_id, exc)

    def _delete_orphan_thumbnails(self, kept: set[str]) -> None:
        if not self._thumbnails_dir.is_dir():
            return
        for path in self._thumbnails_dir.iterdir():
            if path.suffix == ".jpg" and path.stem not in kept:
                path.unlink(missing_ok=True)

    @contextmanager
    def _talking_to_redis(self, action: str) -> Iterator[None]:
        with translated_redis_errors(
            f"unknowns: cannot {action}",
            self._where,
            unavailable=GalleryUnavailableError,
            refused=GalleryStoreError,
        ):
            yield


class UnknownsPurger:
    """The service's thread that runs ``UnknownsStore.purge`` every
    ``unknowns.purge_interval_seconds`` (first at start); a failed purge is logged and tried
    again at the next interval."""

    def __init__(self, store: UnknownsStore) -> None:
        self._store = store
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="unknowns-purge", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the thread and join it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10.0)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._store.purge()
            except (GalleryUnavailableError, GalleryStoreError, OSError) as exc:
                LOGGER.warning("unknown clusters not purged this time: %s", exc)
            self._stop.wait(self._store.config.purge_interval_seconds)
