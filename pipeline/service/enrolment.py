"""Enrolment of a gallery of photos, one identity per person (a folder ``DIR/<name>/*.jpg``).

The one loop behind ``facestream process --gallery``, ``facestream run --sample`` and
``facestream eval doors``: each command says what it reports from the results it gets back.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from engines.convert.parity import image_files
from pipeline.gallery.model import Identity
from pipeline.images import read_image
from pipeline.service.app import EnrolmentTemplates, Services

__all__ = ["PersonEnrolment", "enroll_people", "person_folders"]


@dataclass(frozen=True, slots=True)
class PersonEnrolment:
    """What one person's photos gave, and the identity stored from them (None: no photo gave
    a template, so nothing was stored)."""

    name: str
    found: EnrolmentTemplates
    identity: Identity | None


def person_folders(gallery_dir: Path) -> dict[str, list[Path]]:
    """Name -> image files of each sub-folder ``gallery_dir/<name>/`` (searched recursively,
    sorted), in name order; a sub-folder without images maps to an empty list."""
    folders = sorted(path for path in gallery_dir.iterdir() if path.is_dir())
    return {folder.name: image_files([folder]) for folder in folders}


def enroll_people(
    services: Services, people: Mapping[str, Sequence[Path]]
) -> Iterator[PersonEnrolment]:
    """Enrol each person of ``people`` (name -> photo files) into ``services``' gallery, in order.

    Yields after each person, so a caller can show progress or stop at the first failure; a
    refused photo is named by its path in ``found.rejected``. ImageDecodeError for a photo
    that cannot be read.
    """
    for name, photos in people.items():
        found = services.enrolment_templates([(str(photo), read_image(photo)) for photo in photos])
        identity = services.enroll(name, found.templates) if len(found.templates) else None
        yield PersonEnrolment(name, found, identity)
