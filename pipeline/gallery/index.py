"""The gallery's in-memory index: an exact nearest-neighbour search over face templates.

One immutable ``TemplateIndex`` per gallery version holds every template of the active model
as float32 columns; a search is one matrix product per batch of probes, the best template per
identity, top-k by Euclidean distance, each identity's own tau ceiling applied in the same pass.
A change makes a new index (``replaced``), so readers never see a half-applied one.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, NamedTuple

import numpy as np
import numpy.typing as npt

from pipeline.errors import GalleryStoreError
from pipeline.types import DESCRIPTOR_SIZE, Match

__all__ = ["VECTOR_BYTES", "VECTOR_DTYPE", "IndexEntry", "TemplateIndex", "parse_vectors"]

VECTOR_DTYPE: Final = np.dtype("<f4")  # how a template is stored in Redis: 128 float32 LE
VECTOR_BYTES: Final = DESCRIPTOR_SIZE * VECTOR_DTYPE.itemsize


class IndexEntry(NamedTuple):
    """One identity's searchable part: float32 (n, 128) templates of the active model, their
    n template ids, and its tau ceiling (None: the query's tau alone)."""

    identity_id: str
    name: str
    vectors: npt.NDArray[np.float32]
    template_ids: tuple[str, ...]
    tau_ceiling: float | None = None
    galleries: tuple[str, ...] = ("default",)


@dataclass(frozen=True, slots=True)
class TemplateIndex:
    """Immutable snapshot of the searchable templates of one model.

    columns: float32 (129, T), one column per template: its 128 values, then its squared
    norm, so one matrix product with [-2 p, 1] ranks every template for probe p (T-major
    layout: BLAS streams it faster than (T, 128)); columns of one identity are contiguous.
    owners: int64 (T,) the identity slot of each column, non-decreasing; template_ids: the
    template id of each column; ceilings: float32 (I,) each slot's tau ceiling (inf: none), so
    a corrected identity's tighter tau is applied in the same search; starts: int64 (I,) first
    column of each slot; ends: int64 (I,) one past its last column. galleries: each slot's
    named galleries; members: gallery name -> bool (I,) mask of its slots, so a search of some
    galleries is the same matrix product with the other slots ranked last.
    """

    version: int
    identity_ids: tuple[str, ...]
    names: tuple[str, ...]
    columns: npt.NDArray[np.float32]
    owners: npt.NDArray[np.int64]
    template_ids: tuple[str, ...]
    ceilings: npt.NDArray[np.float32]
    galleries: tuple[tuple[str, ...], ...]
    starts: npt.NDArray[np.int64] = field(init=False)
    ends: npt.NDArray[np.int64] = field(init=False)
    slots: Mapping[str, int] = field(init=False)
    members: Mapping[str, npt.NDArray[np.bool_]] = field(init=False)

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
        # slots per gallery first, one mask each after: a mask per identity (setdefault's
        # eager default) cost a 1M-byte allocation per identity at a million
        slots_of: dict[str, list[int]] = {}
        for slot, names in enumerate(self.galleries):
            for name in names:
                slots_of.setdefault(name, []).append(slot)
        members: dict[str, npt.NDArray[np.bool_]] = {}
        for name, gallery_slots in slots_of.items():
            mask = np.zeros(len(self.identity_ids), bool)
            mask[np.asarray(gallery_slots, np.int64)] = True
            members[name] = mask
        object.__setattr__(self, "members", members)
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
    def build(cls, version: int, entries: Sequence[IndexEntry]) -> TemplateIndex:
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
            ceilings=_ceilings_of(entries),
            galleries=tuple(entry.galleries for entry in entries),
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
        galleries: tuple[tuple[str, ...], ...],
    ) -> TemplateIndex:
        """From templates float32 (T, 128) grouped by identity, counts[i] rows of identity i,
        with the T template ids, float32 (I,) tau ceilings (inf: none) and each identity's
        named galleries."""
        return cls(
            version=version,
            identity_ids=identity_ids,
            names=names,
            columns=np.ascontiguousarray(cls._columns_of(vectors)),
            owners=np.repeat(np.arange(len(identity_ids), dtype=np.int64), counts),
            template_ids=template_ids,
            ceilings=ceilings,
            galleries=galleries,
        )

    def replaced(
        self, version: int, changed: set[str], entries: Sequence[IndexEntry]
    ) -> TemplateIndex:
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
        kept_galleries = [names for names, kept in zip(self.galleries, keep, strict=True) if kept]
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
        return TemplateIndex(
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
            ceilings=np.concatenate([self.ceilings[keep], _ceilings_of(entries)]).astype(
                np.float32
            ),
            galleries=(*kept_galleries, *(entry.galleries for entry in entries)),
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
            galleries=self.galleries[slot],
        )

    def threshold(self, slot: int, max_distance: float) -> float:
        """The tau of slot's identity: the query's, or its own ceiling when that is tighter."""
        return min(max_distance, float(self.ceilings[slot]))

    def searched(self, galleries: Collection[str] | None) -> npt.NDArray[np.bool_] | None:
        """bool (I,): the identity slots in any of ``galleries``; None: every slot (no
        galleries named, or every identity is in one of them)."""
        if galleries is None:
            return None
        mask = np.zeros(len(self.identity_ids), bool)
        for name in galleries:
            member = self.members.get(name)
            if member is not None:
                mask |= member
        return None if mask.all() else mask

    def search(
        self,
        probes: npt.NDArray[np.float32],
        top_k: int,
        max_distance: float | None,
        galleries: Collection[str] | None = None,
    ) -> tuple[tuple[tuple[Match, ...], ...], tuple[float | None, ...]]:
        """Exact top-k identities within ``max_distance`` per probe row (probes float32
        (B, 128)), and each row's distance to its nearest identity whatever ``max_distance``,
        among the identities of ``galleries`` (None: all of them)."""
        searched = self.searched(galleries)
        identities = len(self.identity_ids) if searched is None else int(searched.sum())
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
        if searched is not None:  # the other galleries' identities rank last, never chosen
            ranking[:, ~searched] = np.inf
        count = min(top_k, identities)
        if count == 1:
            candidates = np.argmin(ranking, axis=1)[:, np.newaxis]
        elif count < len(self.identity_ids):
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


def _ceilings_of(entries: Sequence[IndexEntry]) -> npt.NDArray[np.float32]:
    """float32 (len(entries),): each entry's tau ceiling, inf where it has none."""
    return np.array(
        [np.inf if entry.tau_ceiling is None else entry.tau_ceiling for entry in entries],
        np.float32,
    )


def parse_vectors(
    identity_id: str, model_id: str, values: Sequence[bytes]
) -> npt.NDArray[np.float32]:
    """Stored templates (``VECTOR_BYTES`` each) -> float32 (n, 128); GalleryStoreError names
    the identity and model when one has another length."""
    if any(len(value) != VECTOR_BYTES for value in values):
        raise GalleryStoreError(
            f"identity {identity_id!r}: a stored template of model {model_id!r} is not "
            f"{VECTOR_BYTES} bytes ({DESCRIPTOR_SIZE} float32)"
        )
    joined = np.frombuffer(b"".join(values), dtype=VECTOR_DTYPE)
    return joined.reshape(-1, DESCRIPTOR_SIZE).astype(np.float32)
