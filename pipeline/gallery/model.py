"""The gallery's own data types: an identity, an enrolment, a re-encoding's result.

An ``Identity`` is stored as one JSON record in the gallery's identities hash
(``pipeline.gallery.store``); ``record``/``from_record`` are that format. The stage types the
gallery answers with (``Match``, ``Matches``) live in ``pipeline.types``.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from pipeline.errors import GalleryRequestError, GalleryStoreError
from pipeline.types import Embeddings

__all__ = [
    "DEFAULT_GALLERY",
    "GALLERY_NAME",
    "Enrollment",
    "Identity",
    "MetadataValue",
    "ReencodeResult",
    "check_gallery_names",
    "check_identity_id",
    "check_vectors",
]

MetadataValue = str | int | float | bool | None
_IDENTITY_ID = re.compile(r"[A-Za-z0-9_.-]{1,128}")  # fullmatch: "$" would let "a\n" in
# a named gallery (a door searches some of them); same rule as doors[].galleries in config
GALLERY_NAME = r"^[A-Za-z0-9_.-]{1,64}$"
_GALLERY_NAME = re.compile(GALLERY_NAME.strip("^$"))
DEFAULT_GALLERY = "default"
_DEFAULT_GALLERIES = (DEFAULT_GALLERY,)


def check_gallery_names(galleries: Iterable[str]) -> tuple[str, ...]:
    """Sorted, distinct gallery names; GalleryRequestError names a bad one (1-64 of A-Z a-z
    0-9 _ . -) or an empty list."""
    names = tuple(galleries)
    if names == _DEFAULT_GALLERIES:  # nearly every identity: a reload checks a million
        return names
    names = tuple(sorted(set(names)))
    if not names:
        raise GalleryRequestError("an identity belongs to at least one gallery")
    for name in names:
        if not isinstance(name, str) or not _GALLERY_NAME.fullmatch(name):
            raise GalleryRequestError(f"gallery {name!r}: expected 1-64 of A-Z a-z 0-9 _ . -")
    return names


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
    galleries: tuple[str, ...] = (DEFAULT_GALLERY,)  # the named galleries it belongs to

    def __post_init__(self) -> None:
        object.__setattr__(self, "metadata", _frozen_metadata(self.metadata))
        object.__setattr__(self, "galleries", check_gallery_names(self.galleries))
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
            "galleries": list(self.galleries),
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
        if self.galleries != (DEFAULT_GALLERY,):  # records from before galleries stay as they were
            fields["galleries"] = list(self.galleries)
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
                galleries=tuple(fields.get("galleries", (DEFAULT_GALLERY,))),
            )
        except (ValueError, KeyError, TypeError, AttributeError, GalleryRequestError) as exc:
            raise GalleryStoreError(
                f"identity {identity_id!r}: stored record is malformed: {exc}"
            ) from exc


def check_identity_id(identity_id: str) -> None:
    if not _IDENTITY_ID.fullmatch(identity_id):
        raise GalleryRequestError(
            f"identity id {identity_id!r}: expected 1-128 of A-Z a-z 0-9 _ . -"
        )


def check_vectors(embeddings: Embeddings) -> None:
    if len(embeddings) == 0:
        raise GalleryRequestError("no face templates given (embeddings has 0 rows)")
    if not np.isfinite(embeddings.vectors).all():
        raise GalleryRequestError("face templates contain NaN or infinity")


@dataclass(frozen=True, slots=True)
class Enrollment:
    """A new identity: a name, one or more face templates (embeddings rows) and metadata.

    identity_id None lets the gallery pick a random one; otherwise 1-128 characters of
    A-Z a-z 0-9 _ . -, not yet in the gallery. galleries: the named galleries it joins (a
    door searches only its own ``doors[].galleries``).
    """

    name: str
    embeddings: Embeddings
    metadata: Mapping[str, MetadataValue] = field(default_factory=dict)
    identity_id: str | None = None
    galleries: tuple[str, ...] = (DEFAULT_GALLERY,)

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise GalleryRequestError("an identity needs a non-empty name")
        if self.identity_id is not None:
            check_identity_id(self.identity_id)
        check_vectors(self.embeddings)
        object.__setattr__(self, "metadata", _frozen_metadata(self.metadata))
        object.__setattr__(self, "galleries", check_gallery_names(self.galleries))
