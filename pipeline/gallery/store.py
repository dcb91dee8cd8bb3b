"""The face gallery: identities and their face templates in Redis, searched in memory.

Redis is the source of truth; every process keeps an in-memory index of the templates of the
gallery's active model id (``pipeline.gallery.index``) and searches it exactly.

Keys (all share the hash tag ``{namespace}``, so the gallery lives in one Redis Cluster slot
and multi-key transactions work there unchanged)::

    fs:{gallery}:version              integer, +1 on every change
    fs:{gallery}:identities           hash  identity id -> JSON {name, metadata, created,
                                      updated, templates: {model id: count}}
    fs:{gallery}:templates:<id>       hash  template id -> model id (one identity's templates)
    fs:{gallery}:vectors:<model id>   hash  "<identity id>/<template id>" -> 128 float32 LE
    fs:{gallery}:changes              pub/sub channel: JSON {version, identities} (sharded
                                      pub/sub, SPUBLISH, on a Redis Cluster)

Every write is one MULTI/EXEC transaction that also increments the version and publishes the
new version with the identities it touched, under WATCH of the version key, so concurrent
writers from several processes are serialised. Each gallery object applies its own writes to
its index (``pipeline.gallery.index``) at once; ``start()`` runs the thread that applies other
processes' changes from the channel (``pipeline.gallery.sync``), and on any gap in versions,
lost connection or Redis restart it reloads everything (once Redis answers again) if the stored
version differs from its own. Deltas and reloads change the index one at a time, under one
lock, so a slow reload never swaps in a snapshot older than a delta applied meanwhile. A write
Redis committed is never reported as failed: when the index cannot take it at once (Redis gone
right after EXEC), that thread reloads at its next resync.
With ``gallery.min_replicas_acked`` = N > 0 a write is acknowledged only after N replicas
confirmed it (WAIT on the EXEC's connection, ``pipeline.redis.ha``); fewer in time raises
GalleryNotReplicatedError (the API's 503), so an acknowledged enrolment survives a failover.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import redis

from pipeline.config.service import GalleryConfig
from pipeline.errors import (
    GalleryNotReplicatedError,
    GalleryRequestError,
    GalleryStoreError,
    GalleryUnavailableError,
    IdentityExistsError,
    IdentityNotFoundError,
    ModelMismatchError,
)
from pipeline.gallery.index import VECTOR_DTYPE, IndexEntry, TemplateIndex, parse_vectors
from pipeline.gallery.model import (
    Enrollment,
    Identity,
    check_gallery_names,
    check_identity_id,
    check_vectors,
)
from pipeline.gallery.sync import GallerySync
from pipeline.metrics import PipelineMetrics
from pipeline.redis.client import redis_password
from pipeline.redis.cluster import (
    RedisClient,
    RedisPipeline,
    cluster_client,
    is_cluster_url,
    parse_cluster_url,
    publish_command,
)
from pipeline.redis.errors import translated_redis_errors
from pipeline.redis.ha import (
    acknowledged_transaction,
    is_sentinel_url,
    parse_sentinel_url,
    redis_location,
    sentinel_client,
)
from pipeline.types import Embeddings, Matches

__all__ = ["Gallery", "connect", "reply_bytes", "reply_text"]

LOGGER = logging.getLogger(__name__)

_STAGE: Final = "gallery"
_BACKEND: Final = "numpy"
# above this many identities in one change, a full reload is cheaper than a delta
_MAX_DELTA_IDENTITIES: Final = 1000


def connect(url: str, config: GalleryConfig | None = None) -> RedisClient:
    """A Redis client for the gallery from a redis://, rediss://, unix://, redis+sentinel://
    URL (``pipeline.redis.ha``: the master found through Sentinel, again after a failover) or
    redis+cluster:// URL (``pipeline.redis.cluster``: a ``RedisCluster``).

    Connect and command timeouts come from ``config.socket_timeout_seconds`` (seconds);
    responses stay bytes, as the gallery needs. A network Redis without a password is
    refused (ConfigError) unless ``config.allow_insecure_redis`` (``pipeline.redis.client``).
    A Sentinel URL naming a master no sentinel monitors is a ConfigError, and so is a Cluster
    URL whose nodes are not a Cluster.
    """
    config = config if config is not None else GalleryConfig()
    password = redis_password(url, config)  # refuses a network Redis without one
    if is_cluster_url(url):
        return cluster_client(
            parse_cluster_url(url),
            password=None if password is None else password.get_secret_value(),
            timeout_seconds=config.socket_timeout_seconds,
        )
    if is_sentinel_url(url):
        return sentinel_client(
            parse_sentinel_url(url),
            password=None if password is None else password.get_secret_value(),
            timeout_seconds=config.socket_timeout_seconds,
        )
    return redis.Redis.from_url(
        url,
        password=None if password is None else password.get_secret_value(),
        socket_timeout=config.socket_timeout_seconds,
        socket_connect_timeout=config.socket_timeout_seconds,
        decode_responses=False,
    )


def reply_text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def reply_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    raise GalleryStoreError(f"unexpected Redis reply of type {type(value).__name__}")


class Gallery:
    """Identities and face templates in Redis, with an in-memory index for one model id.

    client: a Redis or Redis Cluster client whose responses are bytes (see ``connect``);
    model_id: the encoder's model id, the only one whose templates are searched and accepted.
    Building a gallery loads the index from Redis (GalleryUnavailableError when Redis is down).
    ``start()``/``close()`` (or ``with``) run the thread that follows other processes' changes.
    ``identify`` never touches Redis, so it keeps answering while Redis restarts.
    """

    def __init__(
        self,
        client: RedisClient,
        metrics: PipelineMetrics,
        *,
        model_id: str,
        config: GalleryConfig | None = None,
    ) -> None:
        """Connect the gallery to ``client`` and load its index for ``model_id``."""
        if not model_id:
            raise GalleryRequestError("the gallery needs the encoder's model id")
        connection = client.get_connection_kwargs()
        if connection.get("decode_responses"):
            raise GalleryRequestError(
                "the gallery's Redis client must return bytes (decode_responses=False)"
            )
        self._client = client
        self._metrics = metrics
        self._model_id = model_id
        self._config = config if config is not None else GalleryConfig()
        self._where = redis_location(client)
        prefix = f"fs:{{{self._config.namespace}}}:"
        self._version_key = prefix + "version"
        self._identities_key = prefix + "identities"
        self._templates_prefix = prefix + "templates:"
        self._vectors_prefix = prefix + "vectors:"
        self._vectors_key = self._vectors_prefix + model_id
        self._channel = prefix + "changes"
        self._publish = publish_command(client)
        self._update_lock = threading.Lock()  # one index change at a time: delta or reload
        self._sync = GallerySync(self, client, self._channel, self._config, self._where)
        self._index = TemplateIndex.build(0, [])
        self.reload()

    @property
    def model_id(self) -> str:
        """The encoder model id whose embeddings this gallery searches and accepts."""
        return self._model_id

    @property
    def identity_count(self) -> int:
        """Identities in the in-memory index (no Redis round trip)."""
        return len(self._index.identity_ids)

    @property
    def version(self) -> int:
        """The gallery version the in-memory index reflects (the Redis counter)."""
        return self._index.version

    @property
    def key_prefix(self) -> str:
        """``fs:{namespace}:``, the start of every key of this gallery (one Cluster slot)."""
        return self._version_key.removesuffix("version")

    def write(
        self, write: Callable[[RedisPipeline], None], identity_ids: Sequence[str], action: str
    ) -> None:
        """Run ``write`` as one gallery transaction, for the room's other modules (feedback):
        reads under WATCH, then ``pipe.multi()`` and queued writes; the version is bumped, the
        change published and this index updated, as for every write of this class."""
        self._transaction(write, identity_ids, action)

    def threshold_for(self, identity_id: str, max_distance: float) -> float:
        """The tau of one identity: ``max_distance``, or its own tighter ceiling when an
        operator's corrections gave it one (for callers that rank without a threshold)."""
        index = self._index
        slot = index.slots.get(identity_id)
        return max_distance if slot is None else index.threshold(slot, max_distance)

    # -- search ---------------------------------------------------------------------------

    def identify(
        self,
        embeddings: Embeddings,
        *,
        top_k: int = 1,
        max_distance: float | None,
        galleries: Collection[str] | None = None,
    ) -> Matches:
        """The top_k nearest identities of each embeddings row, nearest first, among the
        identities of the named ``galleries`` (None: every identity).

        embeddings: float32 (N, 128) of the gallery's model id (else ModelMismatchError);
        max_distance: Euclidean distance, from calibration or config, beyond which an identity
        is not a match (None keeps the top_k whatever their distance). Uses the in-memory
        index only.
        """
        self._require_model(embeddings)
        if top_k < 1:
            raise GalleryRequestError(f"top_k must be >= 1, got {top_k}")
        if max_distance is not None and not max_distance >= 0:
            raise GalleryRequestError(f"max_distance must be >= 0, got {max_distance}")
        index = self._index
        start = time.perf_counter()
        per_probe, nearest = index.search(embeddings.vectors, top_k, max_distance, galleries)
        self._metrics.stage_seconds.labels(stage=_STAGE, backend=_BACKEND).observe(
            time.perf_counter() - start
        )
        return Matches(
            per_probe=per_probe,
            nearest_distances=nearest,
            model_id=self._model_id,
            version=index.version,
        )

    def distance_to(
        self, embeddings: Embeddings, identity_id: str, *, probe_index: int = 0
    ) -> float:
        """1:1: Euclidean distance from one embeddings row to an identity's nearest template.

        embeddings: float32 (N, 128) of the gallery's model id; probe_index picks the row (put
        the face being verified first). Uses the in-memory index only; IdentityNotFoundError
        when the index holds no template of the active model for ``identity_id``.
        """
        self._require_model(embeddings)
        if not 0 <= probe_index < len(embeddings):
            raise GalleryRequestError(
                f"probe_index {probe_index} is outside the {len(embeddings)} embeddings rows"
            )
        index = self._index
        slot = index.slots.get(identity_id)
        if slot is None:
            raise IdentityNotFoundError(
                f"no templates of model {self._model_id!r} for identity {identity_id!r}"
            )
        return index.distance(embeddings.vectors[probe_index], slot)

    # -- reads ----------------------------------------------------------------------------

    def get(self, identity_id: str) -> Identity:
        """One identity from Redis; IdentityNotFoundError when there is none."""
        check_identity_id(identity_id)
        with self._talking_to_redis("read an identity"):
            record = self._client.hget(self._identities_key, identity_id)
        if record is None:
            raise IdentityNotFoundError(f"no identity {identity_id!r} in the gallery")
        return Identity.from_record(identity_id, reply_bytes(record))

    def list_identities(self) -> list[Identity]:
        """Every identity in Redis, oldest first (ties by id)."""
        with self._talking_to_redis("list identities"):
            records = self._client.hgetall(self._identities_key)
        identities = [
            Identity.from_record(reply_text(key), reply_bytes(value))
            for key, value in records.items()
        ]
        identities.sort(key=lambda identity: (identity.created, identity.identity_id))
        return identities

    def templates_of_model(self, model_id: str) -> dict[str, dict[str, bytes]]:
        """Every stored template of ``model_id`` in Redis: identity id -> template id -> its
        128 float32 LE (what re-encoding reads, ``pipeline.gallery.reencode``)."""
        with self._talking_to_redis("read the templates to re-encode"):
            stored = self._client.hgetall(self._vectors_prefix + model_id)
        by_identity: dict[str, dict[str, bytes]] = {}
        for field_name, value in stored.items():
            identity_id, template_id = reply_text(field_name).split("/", 1)
            by_identity.setdefault(identity_id, {})[template_id] = reply_bytes(value)
        return by_identity

    # -- writes ---------------------------------------------------------------------------

    def enroll(self, enrollment: Enrollment) -> Identity:
        """Add one identity with its templates; IdentityExistsError if its id is taken."""
        return self.enroll_many([enrollment])[0]

    def enroll_many(self, enrollments: Sequence[Enrollment]) -> list[Identity]:
        """Add identities in one transaction: all are stored, or none (on any error)."""
        if not enrollments:
            return []
        for enrollment in enrollments:
            self._require_model(enrollment.embeddings)
        now = time.time()
        identities = [
            Identity(
                identity_id=enrollment.identity_id or uuid.uuid4().hex,
                name=enrollment.name,
                metadata=enrollment.metadata,
                created=now,
                updated=now,
                template_counts={self._model_id: len(enrollment.embeddings)},
                galleries=enrollment.galleries,
            )
            for enrollment in enrollments
        ]
        identity_ids = [identity.identity_id for identity in identities]
        if len(set(identity_ids)) != len(identity_ids):
            raise GalleryRequestError("the same identity id is enrolled twice in one call")
        template_ids = {
            identity.identity_id: tuple(uuid.uuid4().hex for _ in range(len(enrollment.embeddings)))
            for identity, enrollment in zip(identities, enrollments, strict=True)
        }

        def write(pipe: RedisPipeline) -> None:
            existing = pipe.hmget(self._identities_key, identity_ids)
            taken = [key for key, record in zip(identity_ids, existing, strict=True) if record]
            if taken:
                raise IdentityExistsError(f"identity id(s) already enrolled: {taken[:5]}")
            pipe.multi()
            for identity, enrollment in zip(identities, enrollments, strict=True):
                pipe.hset(self._identities_key, identity.identity_id, identity.record())
                self._queue_templates(
                    pipe,
                    identity.identity_id,
                    enrollment.embeddings,
                    template_ids[identity.identity_id],
                )

        entries = [
            IndexEntry(
                identity.identity_id,
                identity.name,
                enrollment.embeddings.vectors,
                template_ids[identity.identity_id],
                galleries=identity.galleries,
            )
            for identity, enrollment in zip(identities, enrollments, strict=True)
        ]
        self._transaction(write, identity_ids, "enroll", entries=entries)
        LOGGER.info("enrolled %d identities", len(identities))
        return identities

    def add_templates(self, identity_id: str, embeddings: Embeddings) -> Identity:
        """Store more face templates (embeddings rows) for an existing identity."""
        check_identity_id(identity_id)
        self._require_model(embeddings)
        check_vectors(embeddings)
        updated: list[Identity] = []

        def write(pipe: RedisPipeline) -> None:
            current = self._current(pipe, identity_id)
            counts = dict(current.template_counts)
            counts[self._model_id] = counts.get(self._model_id, 0) + len(embeddings)
            identity = current.with_counts(counts)
            pipe.multi()
            pipe.hset(self._identities_key, identity_id, identity.record())
            self._queue_templates(
                pipe, identity_id, embeddings, [uuid.uuid4().hex for _ in range(len(embeddings))]
            )
            updated[:] = [identity]

        self._transaction(write, [identity_id], "add templates")
        return updated[0]

    def set_galleries(self, identity_id: str, galleries: Collection[str]) -> Identity:
        """Make ``galleries`` the named galleries the identity belongs to (replacing its
        current ones), in one transaction; the index reads the new membership back, so a door
        of a gallery it joins finds it from the next search. GalleryRequestError for a bad
        name or an empty list, IdentityNotFoundError when absent; neither writes anything."""
        check_identity_id(identity_id)
        names = check_gallery_names(galleries)
        updated: list[Identity] = []

        def write(pipe: RedisPipeline) -> None:
            current = self._current(pipe, identity_id)
            identity = dataclasses.replace(current, updated=time.time(), galleries=names)
            pipe.multi()
            pipe.hset(self._identities_key, identity_id, identity.record())
            updated[:] = [identity]

        self._transaction(write, [identity_id], "change an identity's galleries")
        LOGGER.info("identity %s now in galleries %s", identity_id, ", ".join(names))
        return updated[0]

    def remove(self, identity_id: str) -> None:
        """Delete an identity and its templates of every model; IdentityNotFoundError if absent."""
        check_identity_id(identity_id)
        templates_key = self._templates_prefix + identity_id

        def write(pipe: RedisPipeline) -> None:
            self._current(pipe, identity_id)
            template_models = pipe.hgetall(templates_key)
            pipe.multi()
            pipe.hdel(self._identities_key, identity_id)
            for template_id, model_id in template_models.items():
                pipe.hdel(
                    self._vectors_prefix + reply_text(model_id),
                    f"{identity_id}/{reply_text(template_id)}",
                )
            pipe.delete(templates_key)

        # no entries: the index drops the identity without reading Redis again, so a removal
        # that Redis took is in force here even if Redis goes away right after
        self._transaction(write, [identity_id], "remove an identity", entries=[])
        LOGGER.info("removed identity %s", identity_id)

    # -- synchronisation ------------------------------------------------------------------

    def reload(self) -> None:
        """Rebuild the whole index from Redis (one MULTI/EXEC read)."""
        # read and swap under the lock that deltas take: a change committed and applied while
        # an unlocked read was in flight would be undone by swapping in the older snapshot.
        # Whatever this read returns is newer than anything applied before it (or Redis was
        # wiped, and its lower version is the truth), so no version check is needed.
        with self._update_lock:
            self._reload_locked()

    def _reload_locked(self) -> None:
        """``reload``'s body; the caller holds ``_update_lock``."""
        with self._talking_to_redis("load the gallery"):
            pipe = self._client.pipeline(transaction=True)
            pipe.get(self._version_key)
            pipe.hgetall(self._identities_key)
            pipe.hgetall(self._vectors_key)
            version_value, records, vector_fields = pipe.execute()
        grouped: dict[str, list[bytes]] = {}
        templates: dict[str, list[str]] = {}
        for field_name, value in vector_fields.items():
            identity_id, template_id = reply_text(field_name).split("/", 1)
            grouped.setdefault(identity_id, []).append(reply_bytes(value))
            templates.setdefault(identity_id, []).append(template_id)
        records_by_id = {reply_text(key): value for key, value in records.items()}
        # a half-removed identity cannot exist (transactions); the check is cheap insurance
        identity_ids = tuple(identity for identity in grouped if identity in records_by_id)
        stored = [
            Identity.from_record(identity, reply_bytes(records_by_id[identity]))
            for identity in identity_ids
        ]
        values = [value for identity in identity_ids for value in grouped[identity]]
        index = TemplateIndex.from_arrays(
            int(version_value or 0),
            identity_ids=identity_ids,
            names=tuple(identity.name for identity in stored),
            vectors=self._parse_vectors("(all)", values),
            counts=np.array([len(grouped[identity]) for identity in identity_ids], np.int64),
            template_ids=tuple(
                template for identity in identity_ids for template in templates[identity]
            ),
            ceilings=np.array(
                [np.inf if i.tau_ceiling is None else i.tau_ceiling for i in stored], np.float32
            ),
            galleries=tuple(identity.galleries for identity in stored),
        )
        self._swap(index)
        self._metrics.gallery_reloads.inc()
        LOGGER.info(
            "gallery index loaded: version %d, %d identities, %d templates of model %s",
            self._index.version,
            len(self._index.identity_ids),
            self._index.template_count,
            self._model_id,
        )

    def refresh(self) -> bool:
        """Reload the index if the version in Redis differs from the index's; True if it did."""
        with self._talking_to_redis("read the gallery version"):
            stored = int(self._client.get(self._version_key) or 0)
        if stored == self._index.version:
            return False
        LOGGER.info("gallery version %d in Redis, %d in memory: reloading", stored, self.version)
        self.reload()
        return True

    def start(self) -> None:
        """Start following changes from other processes (a daemon thread; idempotent)."""
        self._sync.start()

    def close(self) -> None:
        """Stop following changes and join the thread. The client stays the caller's."""
        self._sync.close()

    def __enter__(self) -> Gallery:
        """Start following changes."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop following changes."""
        self.close()

    # -- internals ------------------------------------------------------------------------

    def _require_model(self, embeddings: Embeddings) -> None:
        if embeddings.model_id != self._model_id:
            raise ModelMismatchError(
                f"embeddings are from model {embeddings.model_id!r}, the gallery's active model "
                f"is {self._model_id!r}: re-encode or re-enrol with the active model"
            )

    def _queue_templates(
        self,
        pipe: RedisPipeline,
        identity_id: str,
        embeddings: Embeddings,
        template_ids: Sequence[str],
    ) -> None:
        vectors = embeddings.vectors.astype(VECTOR_DTYPE, copy=False)
        pipe.hset(
            self._templates_prefix + identity_id,
            mapping=dict.fromkeys(template_ids, self._model_id),
        )
        pipe.hset(
            self._vectors_key,
            mapping={
                f"{identity_id}/{template_id}": vector.tobytes()
                for template_id, vector in zip(template_ids, vectors, strict=True)
            },
        )

    def _current(self, pipe: RedisPipeline, identity_id: str) -> Identity:
        record = pipe.hget(self._identities_key, identity_id)
        if record is None:
            raise IdentityNotFoundError(f"no identity {identity_id!r} in the gallery")
        return Identity.from_record(identity_id, reply_bytes(record))

    def _transaction(
        self,
        write: Callable[[RedisPipeline], None],
        identity_ids: Sequence[str],
        action: str,
        *,
        entries: Sequence[IndexEntry] | None = None,
    ) -> None:
        """Run ``write`` under WATCH of the version, then bump the version and publish.

        entries: the changed identities' new index entries when the caller knows them
        (enrolment), so the index is updated without reading them back.
        """
        versions: list[int] = []

        def transaction(pipe: RedisPipeline) -> None:
            version = int(pipe.get(self._version_key) or 0) + 1
            write(pipe)  # reads (immediate under WATCH), then pipe.multi() and queued writes
            pipe.set(self._version_key, version)
            # PUBLISH, or SPUBLISH on a Cluster (same slot); redis-py leaves it unannotated
            pipe.execute_command(  # type: ignore[no-untyped-call]
                self._publish,
                self._channel,
                json.dumps({"version": version, "identities": list(identity_ids)}),
            )
            versions[:] = [version]

        with self._talking_to_redis(action):
            replicas_acked = acknowledged_transaction(
                self._client,
                transaction,
                self._version_key,
                replicas=self._config.min_replicas_acked,
                timeout_seconds=self._config.replica_ack_timeout_seconds,
            )
        try:
            self.apply_change(versions[0], identity_ids, entries)
        except (GalleryUnavailableError, GalleryStoreError) as exc:
            # the write is committed: raising would report a stored change as failed (and
            # invite a retry that doubles it); the index catches up on the next resync instead
            if entries is not None:  # what changed is known: in force here at once (a removal)
                with self._update_lock:
                    index = self._index
                    self._swap(index.replaced(index.version, set(identity_ids), entries))
            LOGGER.warning(
                "gallery version %d is stored, but this index could not take it yet (%s); "
                "reloading at the next resync",
                versions[0],
                exc,
            )
            self._sync.resync_soon()
        if replicas_acked is not None and replicas_acked < self._config.min_replicas_acked:
            # the index above mirrors the master, which has the write; the caller must not
            # be told it is safe: it is lost if the master dies before a replica copies it
            raise GalleryNotReplicatedError(
                f"gallery {self._config.namespace!r}: cannot {action}: the Redis master at "
                f"{self._where} took version {versions[0]}, but {replicas_acked} replica(s) "
                f"confirmed it within {self._config.replica_ack_timeout_seconds} s, fewer than "
                f"gallery.min_replicas_acked = {self._config.min_replicas_acked}; it is not "
                "acknowledged and may be lost in a failover (check the replicas; a retry of an "
                "enrolment with the same id answers that it exists if the master kept it)"
            )

    def apply_change(
        self, version: int, identity_ids: Sequence[str], entries: Sequence[IndexEntry] | None = None
    ) -> None:
        """Bring the index to ``version``, which changed only ``identity_ids`` (entries: their
        new index entries when known; else read from Redis, or a reload on a version gap)."""
        with self._update_lock:
            current = self._index.version
            if version <= current:
                return
            if version == current + 1 and (
                entries is not None or len(identity_ids) <= _MAX_DELTA_IDENTITIES
            ):
                if entries is None:
                    entries = self._fetch_entries(identity_ids)
                self._swap(self._index.replaced(version, set(identity_ids), entries))
                return
            LOGGER.info("gallery version jumped from %d to %d: reloading", current, version)
            self._reload_locked()

    def _fetch_entries(self, identity_ids: Sequence[str]) -> list[IndexEntry]:
        """Current name and active-model templates of each identity (absent ones skipped)."""
        with self._talking_to_redis("read changed identities"):
            pipe = self._client.pipeline(transaction=True)
            pipe.hmget(self._identities_key, list(identity_ids))
            for identity_id in identity_ids:
                pipe.hgetall(self._templates_prefix + identity_id)
            records, *template_maps = pipe.execute()
            fields = [
                [
                    f"{identity_id}/{reply_text(template_id)}"
                    for template_id, model_id in templates.items()
                    if reply_text(model_id) == self._model_id
                ]
                for identity_id, templates in zip(identity_ids, template_maps, strict=True)
            ]
            flat = [name for names in fields for name in names]
            values = self._client.hmget(self._vectors_key, flat) if flat else []
        entries = []
        position = 0
        for identity_id, record, names in zip(identity_ids, records, fields, strict=True):
            found = [
                reply_bytes(value) for value in values[position : position + len(names)] if value
            ]
            position += len(names)
            if record is None or not found:
                continue  # removed, or no template of the active model
            identity = Identity.from_record(identity_id, reply_bytes(record))
            present = [
                name.split("/", 1)[1]
                for name, value in zip(names, values[position - len(names) : position], strict=True)
                if value
            ]
            entries.append(
                IndexEntry(
                    identity_id,
                    identity.name,
                    self._parse_vectors(identity_id, found),
                    tuple(present),
                    identity.tau_ceiling,
                    identity.galleries,
                )
            )
        return entries

    def _parse_vectors(self, identity_id: str, values: Sequence[bytes]) -> npt.NDArray[np.float32]:
        return parse_vectors(identity_id, self._model_id, values)

    def _swap(self, index: TemplateIndex) -> None:
        self._index = index
        self._metrics.gallery_identities.set(len(index.identity_ids))
        self._metrics.gallery_templates.set(index.template_count)

    @contextmanager
    def _talking_to_redis(self, action: str) -> Iterator[None]:
        """Turn redis-py errors into the gallery's errors, naming what was being done."""
        with translated_redis_errors(
            f"gallery {self._config.namespace!r}: cannot {action}",
            self._where,
            unavailable=GalleryUnavailableError,
            refused=GalleryStoreError,
        ):
            yield
