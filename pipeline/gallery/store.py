"""The face gallery: identities and their face templates in Redis, searched in memory.

Redis is the source of truth; every process keeps an in-memory float32 index of the templates
of the gallery's active model id and searches it exactly (one matrix product per batch of
probes, the best template per identity, top-k by Euclidean distance).

Keys (all share the hash tag ``{namespace}``, so the gallery lives in one Redis Cluster slot
and multi-key transactions work there unchanged)::

    fs:{gallery}:version              integer, +1 on every change
    fs:{gallery}:identities           hash  identity id -> JSON {name, metadata, created,
                                      updated, templates: {model id: count}}
    fs:{gallery}:templates:<id>       hash  template id -> model id (one identity's templates)
    fs:{gallery}:vectors:<model id>   hash  "<identity id>/<template id>" -> 128 float32 LE
    fs:{gallery}:changes              pub/sub channel: JSON {version, identities}

Every write is one MULTI/EXEC transaction that also increments the version and publishes the
new version with the identities it touched, under WATCH of the version key, so concurrent
writers from several processes are serialised. Each gallery object applies its own writes to
its index at once; ``start()`` runs a thread that applies other processes' changes from the
channel, and on any gap in versions, lost connection or Redis restart it reloads everything
(once Redis answers again) if the stored version differs from its own. Deltas and reloads change
the index one at a time, under one lock, so a slow reload never swaps in a snapshot older than a
delta applied meanwhile. A write Redis committed is never reported as failed: when the index
cannot take it at once (Redis gone right after EXEC), that thread reloads at its next resync.
With ``gallery.min_replicas_acked`` = N > 0 a write is acknowledged only after N replicas
confirmed it (WAIT on the EXEC's connection, ``pipeline.redis.ha``); fewer in time raises
GalleryNotReplicatedError (the API's 503), so an acknowledged enrolment survives a failover.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType
from typing import Any, Final, NamedTuple

import numpy as np
import numpy.typing as npt
import redis
from redis.client import Pipeline, PubSub

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
from pipeline.metrics import PipelineMetrics
from pipeline.redis.client import redis_password
from pipeline.redis.errors import translated_redis_errors
from pipeline.redis.ha import (
    acknowledged_transaction,
    is_sentinel_url,
    parse_sentinel_url,
    redis_location,
    sentinel_client,
)
from pipeline.types import DESCRIPTOR_SIZE, Embeddings, Match, Matches

__all__ = [
    "Enrollment",
    "Gallery",
    "Identity",
    "MetadataValue",
    "ReencodeResult",
    "connect",
]

LOGGER = logging.getLogger(__name__)

MetadataValue = str | int | float | bool | None
_IDENTITY_ID = re.compile(r"[A-Za-z0-9_.-]{1,128}")  # fullmatch: "$" would let "a\n" in
_VECTOR_DTYPE: Final = np.dtype("<f4")
_VECTOR_BYTES: Final = DESCRIPTOR_SIZE * _VECTOR_DTYPE.itemsize
_STAGE: Final = "gallery"
_BACKEND: Final = "numpy"
# above this many identities in one change, a full reload is cheaper than a delta
_MAX_DELTA_IDENTITIES: Final = 1000


def connect(url: str, config: GalleryConfig | None = None) -> redis.Redis:
    """A Redis client for the gallery from a redis://, rediss://, unix:// or redis+sentinel://
    URL (``pipeline.redis.ha``: the master found through Sentinel, again after a failover).

    Connect and command timeouts come from ``config.socket_timeout_seconds`` (seconds);
    responses stay bytes, as the gallery needs. A network Redis without a password is
    refused (ConfigError) unless ``config.allow_insecure_redis`` (``pipeline.redis.client``).
    A Sentinel URL naming a master no sentinel monitors is a ConfigError.
    """
    config = config if config is not None else GalleryConfig()
    password = redis_password(url, config)  # refuses a network Redis without one
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


def _frozen_metadata(metadata: Mapping[str, MetadataValue]) -> Mapping[str, MetadataValue]:
    for key, value in metadata.items():
        if not isinstance(key, str) or not key:
            raise GalleryRequestError(f"metadata keys must be non-empty strings, got {key!r}")
        if value is not None and not isinstance(value, str | int | float | bool):
            raise GalleryRequestError(
                f"metadata[{key!r}]: expected str, int, float, bool or None, "
                f"got {type(value).__name__}"
            )
    return MappingProxyType(dict(metadata))


@dataclass(frozen=True, slots=True)
class ReencodeResult:
    """What ``Gallery.reencode_from`` wrote: identities touched and templates made."""

    identities: int
    templates: int


@dataclass(frozen=True, slots=True)
class Identity:
    """A person in the gallery.

    created and updated: Unix time in seconds; template_counts: model id -> number of face
    templates stored for that model.
    """

    identity_id: str
    name: str
    metadata: Mapping[str, MetadataValue]
    created: float
    updated: float
    template_counts: Mapping[str, int]
    negatives: int = 0  # probes an operator said are not this person (pipeline.gallery.feedback)
    tau_ceiling: float | None = None  # a margin below the nearest negative; None: global tau

    def __post_init__(self) -> None:
        object.__setattr__(self, "metadata", _frozen_metadata(self.metadata))
        object.__setattr__(self, "template_counts", MappingProxyType(dict(self.template_counts)))

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form (CLI and API): id, name, metadata, created, updated, templates."""
        return {
            "id": self.identity_id,
            "name": self.name,
            "metadata": dict(self.metadata),
            "created": self.created,
            "updated": self.updated,
            "templates": dict(self.template_counts),
            "negatives": self.negatives,
            "tau_ceiling": self.tau_ceiling,
        }

    def with_counts(self, template_counts: Mapping[str, int]) -> Identity:
        """This identity with other template counts, updated now."""
        return dataclasses.replace(self, updated=time.time(), template_counts=template_counts)

    def record(self) -> bytes:
        """The JSON stored in the identities hash (the feedback module writes it too)."""
        fields: dict[str, object] = {
            "name": self.name,
            "metadata": dict(self.metadata),
            "created": self.created,
            "updated": self.updated,
            "templates": dict(self.template_counts),
        }
        if self.negatives:  # records of identities never corrected stay as they were
            fields["negatives"] = self.negatives
            fields["tau_ceiling"] = self.tau_ceiling
        return json.dumps(fields, sort_keys=True).encode()

    @classmethod
    def from_record(cls, identity_id: str, record: bytes) -> Identity:
        """Parse a stored record; GalleryStoreError when it is malformed."""
        try:
            fields = json.loads(record)
            ceiling = fields.get("tau_ceiling")
            return cls(
                identity_id=identity_id,
                name=str(fields["name"]),
                metadata=fields["metadata"],
                created=float(fields["created"]),
                updated=float(fields["updated"]),
                template_counts={
                    str(key): int(value) for key, value in fields["templates"].items()
                },
                negatives=int(fields.get("negatives", 0)),
                tau_ceiling=None if ceiling is None else float(ceiling),
            )
        except (ValueError, KeyError, TypeError, AttributeError, GalleryRequestError) as exc:
            raise GalleryStoreError(
                f"identity {identity_id!r}: stored record is malformed: {exc}"
            ) from exc


def _check_identity_id(identity_id: str) -> None:
    if not _IDENTITY_ID.fullmatch(identity_id):
        raise GalleryRequestError(
            f"identity id {identity_id!r}: expected 1-128 of A-Z a-z 0-9 _ . -"
        )


def _check_vectors(embeddings: Embeddings) -> None:
    if len(embeddings) == 0:
        raise GalleryRequestError("no face templates given (embeddings has 0 rows)")
    if not np.isfinite(embeddings.vectors).all():
        raise GalleryRequestError("face templates contain NaN or infinity")


@dataclass(frozen=True, slots=True)
class Enrollment:
    """A new identity: a name, one or more face templates (embeddings rows) and metadata.

    identity_id None lets the gallery pick a random one; otherwise 1-128 characters of
    A-Z a-z 0-9 _ . -, not yet in the gallery.
    """

    name: str
    embeddings: Embeddings
    metadata: Mapping[str, MetadataValue] = field(default_factory=dict)
    identity_id: str | None = None

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise GalleryRequestError("an identity needs a non-empty name")
        if self.identity_id is not None:
            _check_identity_id(self.identity_id)
        _check_vectors(self.embeddings)
        object.__setattr__(self, "metadata", _frozen_metadata(self.metadata))


class _Entry(NamedTuple):
    """One identity's searchable part: float32 (n, 128) templates of the active model, their
    n template ids, and its tau ceiling (None: the query's tau alone)."""

    identity_id: str
    name: str
    vectors: npt.NDArray[np.float32]
    template_ids: tuple[str, ...]
    tau_ceiling: float | None = None


@dataclass(frozen=True, slots=True)
class _Index:
    """Immutable snapshot of the searchable templates of one model.

    columns: float32 (129, T), one column per template: its 128 values, then its squared
    norm, so one matrix product with [-2 p, 1] ranks every template for probe p (T-major
    layout: BLAS streams it faster than (T, 128)); columns of one identity are contiguous.
    owners: int64 (T,) the identity slot of each column, non-decreasing; template_ids: the
    template id of each column; ceilings: float32 (I,) each slot's tau ceiling (inf: none), so
    a corrected identity's tighter tau is applied in the same search; starts: int64 (I,) first
    column of each slot; ends: int64 (I,) one past its last column.
    """

    version: int
    identity_ids: tuple[str, ...]
    names: tuple[str, ...]
    columns: npt.NDArray[np.float32]
    owners: npt.NDArray[np.int64]
    template_ids: tuple[str, ...]
    ceilings: npt.NDArray[np.float32]
    starts: npt.NDArray[np.int64] = field(init=False)
    ends: npt.NDArray[np.int64] = field(init=False)
    slots: Mapping[str, int] = field(init=False)

    def __post_init__(self) -> None:
        boundaries = np.flatnonzero(np.diff(self.owners)) + 1
        first = np.zeros(1 if self.owners.size else 0, np.int64)
        starts = np.concatenate([first, boundaries]).astype(np.int64)
        ends = np.append(starts[1:], self.owners.size).astype(np.int64)
        object.__setattr__(self, "starts", starts)
        object.__setattr__(self, "ends", ends)
        object.__setattr__(
            self, "slots", {identity: slot for slot, identity in enumerate(self.identity_ids)}
        )
        for array in (self.columns, self.owners, self.starts, self.ends, self.ceilings):
            array.setflags(write=False)

    @property
    def template_count(self) -> int:
        """Number of templates (columns) in the index."""
        return int(self.columns.shape[1])

    @staticmethod
    def _columns_of(vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """float32 (n, 128) templates -> float32 (129, n) columns with squared norms."""
        norms = np.einsum("ij,ij->i", vectors, vectors, dtype=np.float32)
        return np.vstack([vectors.T, norms[np.newaxis, :]]).astype(np.float32, copy=False)

    @classmethod
    def build(cls, version: int, entries: Sequence[_Entry]) -> _Index:
        """From (identity id, name, float32 (n, 128) templates) entries, n >= 1 each."""
        vectors = (
            np.concatenate([entry[2] for entry in entries])
            if entries
            else np.zeros((0, DESCRIPTOR_SIZE), np.float32)
        )
        return cls.from_arrays(
            version,
            identity_ids=tuple(entry[0] for entry in entries),
            names=tuple(entry[1] for entry in entries),
            vectors=vectors,
            counts=np.array([entry[2].shape[0] for entry in entries], np.int64),
            template_ids=tuple(template for entry in entries for template in entry.template_ids),
            ceilings=_ceilings(entries),
        )

    @classmethod
    def from_arrays(
        cls,
        version: int,
        *,
        identity_ids: tuple[str, ...],
        names: tuple[str, ...],
        vectors: npt.NDArray[np.float32],
        counts: npt.NDArray[np.int64],
        template_ids: tuple[str, ...],
        ceilings: npt.NDArray[np.float32],
    ) -> _Index:
        """From templates float32 (T, 128) grouped by identity, counts[i] rows of identity i,
        with the T template ids and float32 (I,) tau ceilings (inf: none)."""
        return cls(
            version=version,
            identity_ids=identity_ids,
            names=names,
            columns=np.ascontiguousarray(cls._columns_of(vectors)),
            owners=np.repeat(np.arange(len(identity_ids), dtype=np.int64), counts),
            template_ids=template_ids,
            ceilings=ceilings,
        )

    def replaced(self, version: int, changed: set[str], entries: Sequence[_Entry]) -> _Index:
        """This index with identities ``changed`` dropped and ``entries`` appended."""
        keep = np.ones(len(self.identity_ids), bool)
        for identity_id in changed:
            slot = self.slots.get(identity_id)
            if slot is not None:
                keep[slot] = False
        new_slot = np.cumsum(keep) - 1
        # pure additions (enrolments) keep every column: no boolean gather needed
        keep_columns = slice(None) if keep.all() else keep[self.owners]
        kept_ids = [
            identity for identity, kept in zip(self.identity_ids, keep, strict=True) if kept
        ]
        kept_names = [name for name, kept in zip(self.names, keep, strict=True) if kept]
        kept_templates = (
            self.template_ids
            if keep.all()
            else tuple(
                template
                for template, kept in zip(self.template_ids, keep[self.owners], strict=True)
                if kept
            )
        )
        added = [
            np.full(entry[2].shape[0], len(kept_ids) + offset, np.int64)
            for offset, entry in enumerate(entries)
        ]
        return _Index(
            version=version,
            identity_ids=(*kept_ids, *(entry[0] for entry in entries)),
            names=(*kept_names, *(entry[1] for entry in entries)),
            columns=np.ascontiguousarray(
                np.hstack(
                    [
                        self.columns[:, keep_columns],
                        *(self._columns_of(entry[2]) for entry in entries),
                    ]
                )
            ),
            owners=np.concatenate([new_slot[self.owners[keep_columns]], *added]).astype(np.int64),
            template_ids=(
                *kept_templates,
                *(template for entry in entries for template in entry.template_ids),
            ),
            ceilings=np.concatenate([self.ceilings[keep], _ceilings(entries)]).astype(np.float32),
        )

    def distance(self, probe: npt.NDArray[np.float32], slot: int) -> float:
        """Exact Euclidean distance from probe float32 (128,) to slot's nearest template."""
        return self.match(probe, slot).distance

    def match(self, probe: npt.NDArray[np.float32], slot: int) -> Match:
        """Slot's identity with the exact distance from probe float32 (128,) to its nearest
        template, and that template's id (what a correction quarantines)."""
        start = int(self.starts[slot])
        templates = self.columns[:DESCRIPTOR_SIZE, start : self.ends[slot]]
        difference = templates - probe[:, np.newaxis]
        squared = np.einsum("ij,ij->j", difference, difference)
        nearest = int(np.argmin(squared))
        return Match(
            self.identity_ids[slot],
            self.names[slot],
            float(np.sqrt(squared[nearest])),
            template_id=self.template_ids[start + nearest],
        )

    def threshold(self, slot: int, max_distance: float) -> float:
        """The tau of slot's identity: the query's, or its own ceiling when that is tighter."""
        return min(max_distance, float(self.ceilings[slot]))

    def search(
        self, probes: npt.NDArray[np.float32], top_k: int, max_distance: float | None
    ) -> tuple[tuple[tuple[Match, ...], ...], tuple[float | None, ...]]:
        """Exact top-k identities within ``max_distance`` per probe row (probes float32
        (B, 128)), and each row's distance to its nearest identity whatever ``max_distance``."""
        identities = len(self.identity_ids)
        probe_count = probes.shape[0]
        if identities == 0 or probe_count == 0:
            return tuple(() for _ in range(probe_count)), (None,) * probe_count
        # |p - t|^2 = |p|^2 - 2 p.t + |t|^2; |p|^2 is the same for every t, so it is left out
        # of the ranking, and exact distances are computed for the k winners only.
        weights = np.empty((probe_count, DESCRIPTOR_SIZE + 1), np.float32)
        np.multiply(probes, -2.0, out=weights[:, :DESCRIPTOR_SIZE])
        weights[:, DESCRIPTOR_SIZE] = 1.0
        ranking = weights @ self.columns
        if identities != self.template_count:
            ranking = np.minimum.reduceat(ranking, self.starts, axis=1)
        count = min(top_k, identities)
        if count == 1:
            candidates = np.argmin(ranking, axis=1)[:, np.newaxis]
        elif count < identities:
            candidates = np.argpartition(ranking, count - 1, axis=1)[:, :count]
        else:
            candidates = np.broadcast_to(np.arange(identities), (probe_count, identities))
        results = []
        nearest: list[float | None] = []
        for probe, slots in zip(probes, candidates, strict=True):
            ranked = sorted(
                ((self.match(probe, slot), slot) for slot in slots.tolist()),
                key=lambda pair: (pair[0].distance, pair[0].identity_id),
            )
            nearest.append(ranked[0][0].distance)
            results.append(
                tuple(
                    match
                    for match, slot in ranked
                    if max_distance is None or match.distance <= self.threshold(slot, max_distance)
                )
            )
        return tuple(results), tuple(nearest)


def _ceilings(entries: Sequence[_Entry]) -> npt.NDArray[np.float32]:
    """float32 (len(entries),): each entry's tau ceiling, inf where it has none."""
    return np.array(
        [np.inf if entry.tau_ceiling is None else entry.tau_ceiling for entry in entries],
        np.float32,
    )


def _decode(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Gallery:
    """Identities and face templates in Redis, with an in-memory index for one model id.

    client: a ``redis.Redis`` whose responses are bytes (see ``connect``); model_id: the
    encoder's model id, the only one whose templates are searched and accepted. Building a
    gallery loads the index from Redis (GalleryUnavailableError when Redis is down).
    ``start()``/``close()`` (or ``with``) run the thread that follows other processes' changes.
    ``identify`` never touches Redis, so it keeps answering while Redis restarts.
    """

    def __init__(
        self,
        client: redis.Redis,
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
        self._update_lock = threading.Lock()  # one index change at a time: delta or reload
        self._resync_due = threading.Event()  # a committed write this index could not apply
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._index = _Index.build(0, [])
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
        self, write: Callable[[Pipeline], None], identity_ids: Sequence[str], action: str
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
        self, embeddings: Embeddings, *, top_k: int = 1, max_distance: float | None
    ) -> Matches:
        """The top_k nearest identities of each embeddings row, nearest first.

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
        per_probe, nearest = index.search(embeddings.vectors, top_k, max_distance)
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
        _check_identity_id(identity_id)
        with self._talking_to_redis("read an identity"):
            record = self._client.hget(self._identities_key, identity_id)
        if record is None:
            raise IdentityNotFoundError(f"no identity {identity_id!r} in the gallery")
        return Identity.from_record(identity_id, _as_bytes(record))

    def list_identities(self) -> list[Identity]:
        """Every identity in Redis, oldest first (ties by id)."""
        with self._talking_to_redis("list identities"):
            records = self._client.hgetall(self._identities_key)
        identities = [
            Identity.from_record(_decode(key), _as_bytes(value)) for key, value in records.items()
        ]
        identities.sort(key=lambda identity: (identity.created, identity.identity_id))
        return identities

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

        def write(pipe: Pipeline) -> None:
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
            _Entry(
                identity.identity_id,
                identity.name,
                enrollment.embeddings.vectors,
                template_ids[identity.identity_id],
            )
            for identity, enrollment in zip(identities, enrollments, strict=True)
        ]
        self._transaction(write, identity_ids, "enroll", entries=entries)
        LOGGER.info("enrolled %d identities", len(identities))
        return identities

    def add_templates(self, identity_id: str, embeddings: Embeddings) -> Identity:
        """Store more face templates (embeddings rows) for an existing identity."""
        _check_identity_id(identity_id)
        self._require_model(embeddings)
        _check_vectors(embeddings)
        updated: list[Identity] = []

        def write(pipe: Pipeline) -> None:
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

    def reencode_from(
        self,
        source_model_id: str,
        transform: Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]],
        *,
        batch_identities: int = 500,
    ) -> ReencodeResult:
        """Make this gallery's templates from those of ``source_model_id`` by ``transform``.

        For an encoder that extends another one (an adapter head on its descriptors),
        ``transform`` maps float32 (N, 128) source templates to this model's. Each new template
        id is derived from its source template's, so running it again rewrites the same
        templates instead of adding copies; the source templates stay (switching back needs
        nothing). Identities are written ``batch_identities`` per transaction.
        """
        if source_model_id == self._model_id:
            raise GalleryRequestError(f"the gallery's model already is {source_model_id!r}")
        with self._talking_to_redis("read the templates to re-encode"):
            stored = self._client.hgetall(self._vectors_prefix + source_model_id)
        by_identity: dict[str, dict[str, bytes]] = {}
        for field_name, value in stored.items():
            identity_id, template_id = _decode(field_name).split("/", 1)
            by_identity.setdefault(identity_id, {})[template_id] = _as_bytes(value)
        suffix = hashlib.sha256(self._model_id.encode()).hexdigest()[:8]
        written = 0
        identity_ids = sorted(by_identity)
        for start in range(0, len(identity_ids), batch_identities):
            chunk = identity_ids[start : start + batch_identities]
            templates = {
                identity_id: self._transformed(
                    identity_id, by_identity[identity_id], transform, suffix
                )
                for identity_id in chunk
            }
            self._write_reencoded(templates)
            written += sum(len(values) for values in templates.values())
        LOGGER.info(
            "re-encoded %d templates of %d identities from model %s into %s",
            written,
            len(identity_ids),
            source_model_id,
            self._model_id,
        )
        return ReencodeResult(identities=len(identity_ids), templates=written)

    def _transformed(
        self,
        identity_id: str,
        templates: Mapping[str, bytes],
        transform: Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]],
        suffix: str,
    ) -> dict[str, bytes]:
        """New template id -> transformed vector bytes of one identity's source templates."""
        source = self._parse_vectors(identity_id, list(templates.values()))
        vectors = np.asarray(transform(source), _VECTOR_DTYPE)
        if vectors.shape != source.shape or not np.isfinite(vectors).all():
            raise GalleryRequestError(
                f"re-encoding gave {vectors.shape} values (finite: {np.isfinite(vectors).all()}) "
                f"for {source.shape} templates: expected finite ({DESCRIPTOR_SIZE},) vectors"
            )
        return {
            f"{template_id}-{suffix}": vector.tobytes()
            for template_id, vector in zip(templates, vectors, strict=True)
        }

    def _write_reencoded(self, templates: Mapping[str, Mapping[str, bytes]]) -> None:
        """Store re-encoded templates (identity -> template id -> bytes) in one transaction;
        identities removed meanwhile are skipped."""
        identity_ids = list(templates)

        def write(pipe: Pipeline) -> None:
            records = pipe.hmget(self._identities_key, identity_ids)
            current = [
                (identity_id, record, pipe.hgetall(self._templates_prefix + identity_id))
                for identity_id, record in zip(identity_ids, records, strict=True)
                if record is not None
            ]
            pipe.multi()
            for identity_id, record, existing in current:
                models = {_decode(key): _decode(value) for key, value in existing.items()}
                models.update(dict.fromkeys(templates[identity_id], self._model_id))
                identity = Identity.from_record(identity_id, _as_bytes(record))
                counts = dict(identity.template_counts)
                counts[self._model_id] = sum(model == self._model_id for model in models.values())
                updated = identity.with_counts(counts)
                pipe.hset(self._identities_key, identity_id, updated.record())
                pipe.hset(
                    self._templates_prefix + identity_id,
                    mapping=dict.fromkeys(templates[identity_id], self._model_id),
                )
                pipe.hset(
                    self._vectors_key,
                    mapping={
                        f"{identity_id}/{template_id}": value
                        for template_id, value in templates[identity_id].items()
                    },
                )

        self._transaction(write, identity_ids, "store re-encoded templates")

    def remove(self, identity_id: str) -> None:
        """Delete an identity and its templates of every model; IdentityNotFoundError if absent."""
        _check_identity_id(identity_id)
        templates_key = self._templates_prefix + identity_id

        def write(pipe: Pipeline) -> None:
            self._current(pipe, identity_id)
            template_models = pipe.hgetall(templates_key)
            pipe.multi()
            pipe.hdel(self._identities_key, identity_id)
            for template_id, model_id in template_models.items():
                pipe.hdel(
                    self._vectors_prefix + _decode(model_id),
                    f"{identity_id}/{_decode(template_id)}",
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
            identity_id, template_id = _decode(field_name).split("/", 1)
            grouped.setdefault(identity_id, []).append(_as_bytes(value))
            templates.setdefault(identity_id, []).append(template_id)
        records_by_id = {_decode(key): value for key, value in records.items()}
        # a half-removed identity cannot exist (transactions); the check is cheap insurance
        identity_ids = tuple(identity for identity in grouped if identity in records_by_id)
        stored = [
            Identity.from_record(identity, _as_bytes(records_by_id[identity]))
            for identity in identity_ids
        ]
        values = [value for identity in identity_ids for value in grouped[identity]]
        index = _Index.from_arrays(
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
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._follow, name=f"gallery-sync-{self._config.namespace}", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """Stop following changes and join the thread. The client stays the caller's."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

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
        self, pipe: Pipeline, identity_id: str, embeddings: Embeddings, template_ids: Sequence[str]
    ) -> None:
        vectors = embeddings.vectors.astype(_VECTOR_DTYPE, copy=False)
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

    def _current(self, pipe: Pipeline, identity_id: str) -> Identity:
        record = pipe.hget(self._identities_key, identity_id)
        if record is None:
            raise IdentityNotFoundError(f"no identity {identity_id!r} in the gallery")
        return Identity.from_record(identity_id, _as_bytes(record))

    def _transaction(
        self,
        write: Callable[[Pipeline], None],
        identity_ids: Sequence[str],
        action: str,
        *,
        entries: Sequence[_Entry] | None = None,
    ) -> None:
        """Run ``write`` under WATCH of the version, then bump the version and publish.

        entries: the changed identities' new index entries when the caller knows them
        (enrolment), so the index is updated without reading them back.
        """
        versions: list[int] = []

        def transaction(pipe: Pipeline) -> None:
            version = int(pipe.get(self._version_key) or 0) + 1
            write(pipe)  # reads (immediate under WATCH), then pipe.multi() and queued writes
            pipe.set(self._version_key, version)
            pipe.publish(
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
            self._apply_change(versions[0], identity_ids, entries)
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
            self._resync_due.set()
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

    def _apply_change(
        self, version: int, identity_ids: Sequence[str], entries: Sequence[_Entry] | None = None
    ) -> None:
        """Bring the index to ``version``, which changed only ``identity_ids``."""
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

    def _fetch_entries(self, identity_ids: Sequence[str]) -> list[_Entry]:
        """Current name and active-model templates of each identity (absent ones skipped)."""
        with self._talking_to_redis("read changed identities"):
            pipe = self._client.pipeline(transaction=True)
            pipe.hmget(self._identities_key, list(identity_ids))
            for identity_id in identity_ids:
                pipe.hgetall(self._templates_prefix + identity_id)
            records, *template_maps = pipe.execute()
            fields = [
                [
                    f"{identity_id}/{_decode(template_id)}"
                    for template_id, model_id in templates.items()
                    if _decode(model_id) == self._model_id
                ]
                for identity_id, templates in zip(identity_ids, template_maps, strict=True)
            ]
            flat = [name for names in fields for name in names]
            values = self._client.hmget(self._vectors_key, flat) if flat else []
        entries = []
        position = 0
        for identity_id, record, names in zip(identity_ids, records, fields, strict=True):
            found = [
                _as_bytes(value) for value in values[position : position + len(names)] if value
            ]
            position += len(names)
            if record is None or not found:
                continue  # removed, or no template of the active model
            identity = Identity.from_record(identity_id, _as_bytes(record))
            present = [
                name.split("/", 1)[1]
                for name, value in zip(names, values[position - len(names) : position], strict=True)
                if value
            ]
            entries.append(
                _Entry(
                    identity_id,
                    identity.name,
                    self._parse_vectors(identity_id, found),
                    tuple(present),
                    identity.tau_ceiling,
                )
            )
        return entries

    def _parse_vectors(self, identity_id: str, values: Sequence[bytes]) -> npt.NDArray[np.float32]:
        if any(len(value) != _VECTOR_BYTES for value in values):
            raise GalleryStoreError(
                f"identity {identity_id!r}: a stored template of model {self._model_id!r} is not "
                f"{_VECTOR_BYTES} bytes ({DESCRIPTOR_SIZE} float32)"
            )
        joined = np.frombuffer(b"".join(values), dtype=_VECTOR_DTYPE)
        return joined.reshape(-1, DESCRIPTOR_SIZE).astype(np.float32)

    def _swap(self, index: _Index) -> None:
        self._index = index
        self._metrics.gallery_identities.set(len(index.identity_ids))
        self._metrics.gallery_templates.set(index.template_count)

    def _follow(self) -> None:
        """Thread body: apply published changes; after any (re)subscription, resync."""
        outage = False
        while not self._stop.is_set():
            # redis-py leaves pubsub() unannotated
            pubsub: PubSub = self._client.pubsub()  # type: ignore[no-untyped-call]
            try:
                pubsub.subscribe(self._channel)
                while not self._stop.is_set():
                    if self._resync_due.is_set():
                        self._resync_due.clear()  # a failing refresh resubscribes, then resyncs
                        self.refresh()
                    message = pubsub.get_message(timeout=self._config.resync_interval_seconds)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        # first subscription, or redis-py reconnected: changes may be missed
                        self.refresh()
                        if outage:
                            LOGGER.info("gallery back in sync with Redis at %s", self._where)
                            outage = False
                    elif message["type"] == "message":
                        self._on_message(_as_bytes(message["data"]))
            except (redis.RedisError, GalleryUnavailableError, GalleryStoreError) as exc:
                if not outage:
                    LOGGER.warning(
                        "gallery lost Redis at %s (%s); serving the last index, resyncing",
                        self._where,
                        exc,
                    )
                    outage = True
            except Exception:
                # redis-py with hiredis can raise TypeError from a socket torn down mid-read
                # (seen when redis-server is SIGKILLed); whatever it is, this thread must live
                # on, or the index would silently stop following Redis
                LOGGER.exception("gallery sync failed unexpectedly; resubscribing")
                outage = True
            finally:
                pubsub.close()
            self._stop.wait(self._config.resync_interval_seconds)

    def _on_message(self, data: bytes) -> None:
        try:
            change = json.loads(data)
            version = int(change["version"])
            identity_ids = [str(identity) for identity in change["identities"]]
        except (ValueError, KeyError, TypeError) as exc:
            LOGGER.warning("ignoring a malformed gallery change message: %s", exc)
            self.refresh()
            return
        self._apply_change(version, identity_ids)

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


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    raise GalleryStoreError(f"unexpected Redis reply of type {type(value).__name__}")
