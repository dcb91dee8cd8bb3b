"""Labelled verification pairs: from a pairs CSV, a labels CSV or a folder-per-identity layout.

A pairs CSV has the header ``path_a,path_b,same`` (other columns are ignored); paths are relative
to the CSV's folder and ``same`` is 1 for the same person, 0 otherwise. A labels CSV has the
header ``path,identity`` (optionally ``n_faces`` and ``duplicate_of``, as in the shared
``faces/labels.csv``) and gives *every* pair of its single-face images: a false accept rate of
0.1 % needs thousands of impostor pairs to be told from 0, which a hand-made pairs list rarely
has. A folder-per-identity layout (``ROOT/<identity>/<image>``) gives every same-identity pair
as genuine and a seeded random sample of different-identity pairs as impostors, so the same
folder and seed give the same pairs. Every image a pair names must exist: the error lists the
missing ones.
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calibration.errors import CalibrationDataError, PairsFileError

__all__ = [
    "IMAGE_SUFFIXES",
    "LabelledPair",
    "PairSet",
    "identity_folders",
    "load_pairs",
    "pairs_from_folders",
    "pairs_from_labels",
    "read_pairs_csv",
]

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
_REQUIRED_COLUMNS = ("path_a", "path_b", "same")
_SAME_VALUES = {"1": True, "0": False, "true": True, "false": False, "yes": True, "no": False}
_MISSING_SHOWN = 10
_MAX_LABELS_PAIRS = 2_000_000  # every pair of ~2000 images; each pair is a Python object


@dataclass(frozen=True, slots=True)
class LabelledPair:
    """Two image files and whether they show the same person."""

    path_a: Path
    path_b: Path
    same: bool


@dataclass(frozen=True, slots=True)
class PairSet:
    """Pairs and where they came from (``source``: the CSV file or identity folder)."""

    pairs: tuple[LabelledPair, ...]
    source: Path

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def images(self) -> tuple[Path, ...]:
        """Every distinct image, in first-use order."""
        return tuple(
            dict.fromkeys(path for pair in self.pairs for path in (pair.path_a, pair.path_b))
        )

    @property
    def genuine_count(self) -> int:
        """Pairs of the same person."""
        return sum(pair.same for pair in self.pairs)

    def head(self, count: int) -> PairSet:
        """The first ``count`` pairs (a subset for quick runs)."""
        return PairSet(self.pairs[:count], self.source)

    def subsample(self, count: int, *, seed: int) -> PairSet:
        """``count`` pairs drawn without replacement with ``seed``, keeping file order."""
        if count >= len(self.pairs):
            return self
        chosen = np.sort(np.random.default_rng(seed).choice(len(self.pairs), count, replace=False))
        return PairSet(tuple(self.pairs[int(index)] for index in chosen), self.source)


def _require_images(pairs: Sequence[LabelledPair], source: Path) -> None:
    missing = sorted(
        {str(path) for pair in pairs for path in (pair.path_a, pair.path_b) if not path.is_file()}
    )
    if missing:
        shown = ", ".join(missing[:_MISSING_SHOWN])
        more = f" and {len(missing) - _MISSING_SHOWN} more" if len(missing) > _MISSING_SHOWN else ""
        raise PairsFileError(f"{source}: {len(missing)} image(s) not found: {shown}{more}")


def read_pairs_csv(path: Path) -> PairSet:
    """Pairs from a CSV with header ``path_a,path_b,same`` (paths relative to its folder)."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            absent = [name for name in _REQUIRED_COLUMNS if name not in columns]
            if absent:
                raise PairsFileError(
                    f"{path}: the header needs columns {', '.join(_REQUIRED_COLUMNS)}; missing "
                    f"{', '.join(absent)} (found: {', '.join(columns) or 'nothing'})"
                )
            rows = list(reader)
    except FileNotFoundError as exc:
        raise PairsFileError(f"{path}: pairs file not found") from exc
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise PairsFileError(f"{path}: cannot read the pairs file: {exc}") from exc
    pairs = []
    for line, row in enumerate(rows, start=2):
        label = (row.get("same") or "").strip().lower()
        if label not in _SAME_VALUES:
            raise PairsFileError(f"{path}:{line}: same must be 1 or 0, got {row.get('same')!r}")
        names = [(row.get(column) or "").strip() for column in ("path_a", "path_b")]
        if not all(names):
            raise PairsFileError(f"{path}:{line}: path_a and path_b must both be given")
        pairs.append(
            LabelledPair(path.parent / names[0], path.parent / names[1], _SAME_VALUES[label])
        )
    if not pairs:
        raise PairsFileError(f"{path}: no pairs (only a header)")
    _require_images(pairs, path)
    return PairSet(tuple(pairs), path)


def identity_folders(root: Path) -> dict[str, list[Path]]:
    """``ROOT/<identity>/<image>``: images per identity (sorted), identities with no image left
    out. PairsFileError when ``root`` is not a folder."""
    if not root.is_dir():
        raise PairsFileError(f"{root}: not a folder of identity folders")
    found: dict[str, list[Path]] = {}
    for folder in sorted(path for path in root.iterdir() if path.is_dir()):
        images = sorted(
            path
            for path in folder.iterdir()
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES
        )
        if images:
            found[folder.name] = images
    return found


def pairs_from_folders(
    root: Path, *, seed: int = 0, impostors_per_genuine: float = 3.0, max_genuine: int = 5000
) -> PairSet:
    """Genuine pairs (every pair within an identity, at most ``max_genuine``, seeded sample) and
    ``impostors_per_genuine`` times as many impostor pairs (a seeded sample across identities).

    CalibrationDataError when there are fewer than two identities (no impostor pairs) or no
    identity with two images (no genuine pairs).
    """
    identities = identity_folders(root)
    if len(identities) < 2:
        raise CalibrationDataError(
            f"{root}: {len(identities)} identity folder(s) with images; impostor pairs need at "
            "least 2 identities (ROOT/<identity>/<image>)"
        )
    generator = np.random.default_rng(seed)
    genuine = [
        LabelledPair(first, second, same=True)
        for images in identities.values()
        for first, second in itertools.combinations(images, 2)
    ]
    if not genuine:
        raise CalibrationDataError(
            f"{root}: no identity has two images, so there are no genuine pairs"
        )
    if len(genuine) > max_genuine:
        keep = np.sort(generator.choice(len(genuine), max_genuine, replace=False))
        genuine = [genuine[int(index)] for index in keep]
    owners = [(name, image) for name, images in identities.items() for image in images]
    sizes = [len(images) for images in identities.values()]
    possible = (len(owners) ** 2 - sum(size * size for size in sizes)) // 2
    count = min(possible, max(1, round(len(genuine) * impostors_per_genuine)))
    chosen: set[tuple[int, int]] = set()
    while len(chosen) < count:  # rejection sampling: never lists all cross pairs
        first, second = (int(index) for index in generator.integers(0, len(owners), 2))
        if owners[first][0] != owners[second][0]:
            chosen.add((min(first, second), max(first, second)))
    impostor = [
        LabelledPair(owners[first][1], owners[second][1], same=False)
        for first, second in sorted(chosen)
    ]
    return PairSet(tuple(genuine + impostor), root)


def _labels_header(path: Path) -> list[str]:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            return next(csv.reader(handle), [])
    except FileNotFoundError as exc:
        raise PairsFileError(f"{path}: pairs file not found") from exc
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise PairsFileError(f"{path}: cannot read the pairs file: {exc}") from exc


def pairs_from_labels(path: Path) -> PairSet:
    """Every pair of the single-face images of a labels CSV (``path,identity``; rows with
    ``n_faces`` other than 1, a ``duplicate_of`` or an identity starting with ``__`` -- several
    faces, none -- are left out)."""
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    owned: list[tuple[str, Path]] = []
    for line, row in enumerate(rows, start=2):
        image, identity = (row.get("path") or "").strip(), (row.get("identity") or "").strip()
        if not image or not identity:
            raise PairsFileError(f"{path}:{line}: path and identity must both be given")
        single = (row.get("n_faces") or "1").strip() == "1"
        if single and not (row.get("duplicate_of") or "").strip() and not identity.startswith("__"):
            owned.append((identity, path.parent / image))
    if len({identity for identity, _ in owned}) < 2:
        raise CalibrationDataError(
            f"{path}: impostor pairs need single-face images of at least 2 identities"
        )
    count = len(owned) * (len(owned) - 1) // 2
    if count > _MAX_LABELS_PAIRS:
        raise CalibrationDataError(
            f"{path}: {len(owned)} images make {count} pairs, more than {_MAX_LABELS_PAIRS}: "
            "give a folder of identity folders (a sample of impostor pairs) instead"
        )
    pairs = [
        LabelledPair(first_path, second_path, same=first == second)
        for (first, first_path), (second, second_path) in itertools.combinations(owned, 2)
    ]
    if not any(pair.same for pair in pairs):
        raise CalibrationDataError(f"{path}: no identity has two images, so no genuine pairs")
    _require_images(pairs, path)
    return PairSet(tuple(pairs), path)


def load_pairs(path: Path, *, seed: int = 0) -> PairSet:
    """Pairs from a pairs CSV, a labels CSV or a folder-per-identity layout (see the module
    docstring)."""
    if path.is_dir():
        return pairs_from_folders(path, seed=seed)
    header = _labels_header(path)
    if "identity" in header and "same" not in header:
        return pairs_from_labels(path)
    return read_pairs_csv(path)
