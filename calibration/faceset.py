"""Faces with identities: the descriptors of a folder-per-identity layout, split by identity.

The pair verifier (calibration/verifier.py) and the triplet adapter (calibration/adapter.py)
learn from descriptors whose identity is known, and must be judged on people they never saw:
``split_identities`` and ``identity_folds`` split by identity, never by photo, and
``all_pairs`` makes every pair of a set (genuine within an identity, impostor across).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from calibration.degrade import Degradation, degrade
from calibration.embed import FaceEmbedder, FaceEmbedding, load_image
from calibration.errors import CalibrationDataError
from calibration.pairs import identity_folders
from calibration.roc import PairScores

__all__ = [
    "IndexPairs",
    "LabelledFaces",
    "all_pairs",
    "embed_identity_folders",
    "identity_folds",
    "split_identities",
]

_log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]  # (images done, images in all)


@dataclass(frozen=True, slots=True)
class LabelledFaces:
    """Descriptors float32 (N, D) with the identity and the photo of each row.

    no_face: photos of the layout where no face was found (left out, and reported).
    """

    vectors: npt.NDArray[np.float32]
    identities: tuple[str, ...]
    paths: tuple[Path, ...]
    model_id: str
    no_face: tuple[Path, ...] = ()

    def __post_init__(self) -> None:
        if self.vectors.ndim != 2 or not (
            self.vectors.shape[0] == len(self.identities) == len(self.paths)
        ):
            raise CalibrationDataError(
                f"{self.vectors.shape} descriptors for {len(self.identities)} identities and "
                f"{len(self.paths)} photos: expected (N, D) and N of each"
            )

    def __len__(self) -> int:
        return len(self.identities)

    @property
    def identity_names(self) -> tuple[str, ...]:
        """Distinct identities, sorted."""
        return tuple(sorted(set(self.identities)))

    @property
    def labels(self) -> npt.NDArray[np.int64]:
        """Identity of each row as an index into ``identity_names``."""
        index = {name: number for number, name in enumerate(self.identity_names)}
        return np.array([index[name] for name in self.identities], np.int64)

    def of_identities(self, names: set[str]) -> LabelledFaces:
        """The rows whose identity is in ``names``."""
        keep = [number for number, name in enumerate(self.identities) if name in names]
        return LabelledFaces(
            self.vectors[keep],
            tuple(self.identities[number] for number in keep),
            tuple(self.paths[number] for number in keep),
            self.model_id,
        )

    def with_vectors(self, vectors: npt.NDArray[np.float32], model_id: str) -> LabelledFaces:
        """The same photos and identities with other descriptors (another model's)."""
        return LabelledFaces(
            np.asarray(vectors, np.float32), self.identities, self.paths, model_id, self.no_face
        )


def _embed(
    path: Path, embedder: FaceEmbedder, condition: Degradation | None, seed: int
) -> FaceEmbedding | None:
    """The photo's main face, or that of its degraded copy (scaled by the clean face's width)."""
    image = load_image(path)
    clean = embedder.embed(image)
    if condition is None:
        return clean
    width = clean.face_width_px if clean is not None else image.shape[1] / 4
    box = clean.face_box_px if clean is not None else None
    copy = degrade(
        image, condition, face_width_px=width, key=path.as_posix(), seed=seed, face_box_px=box
    )
    return embedder.embed(copy)


def embed_identity_folders(
    root: Path,
    embedder: FaceEmbedder,
    *,
    model_id: str,
    condition: Degradation | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> LabelledFaces:
    """The largest face of every photo under ``ROOT/<identity>/``, encoded by ``embedder``;
    with ``condition``, of a degraded copy of each photo instead (calibration/degrade.py: the
    door-camera conditions a site adapter is meant for).

    Photos without a face are counted in ``no_face``, not silently dropped. CalibrationDataError
    when fewer than two identities have a face, or no identity has two.
    """
    folders = identity_folders(root)
    total = sum(len(images) for images in folders.values())
    vectors: list[npt.NDArray[np.float32]] = []
    identities: list[str] = []
    paths: list[Path] = []
    missing: list[Path] = []
    done = 0
    for identity, images in folders.items():
        for path in images:
            found = _embed(path, embedder, condition, seed)
            if found is None:
                missing.append(path)
            else:
                vectors.append(found.vector)
                identities.append(identity)
                paths.append(path)
            done += 1
            if progress is not None:
                progress(done, total)
    if missing:
        _log.warning("no face in %d of %d photos under %s", len(missing), total, root)
    distinct = set(identities)
    if len(distinct) < 2:
        raise CalibrationDataError(
            f"{root}: faces of {len(distinct)} identity(ies) found ({len(missing)} photo(s) "
            "without a face); learning to tell people apart needs at least 2"
        )
    if all(identities.count(name) < 2 for name in distinct):
        raise CalibrationDataError(
            f"{root}: no identity has two photos with a face, so there are no genuine pairs"
        )
    return LabelledFaces(
        np.stack(vectors).astype(np.float32),
        tuple(identities),
        tuple(paths),
        model_id,
        tuple(missing),
    )


def split_identities(
    faces: LabelledFaces, *, holdout_fraction: float, seed: int
) -> tuple[LabelledFaces, LabelledFaces]:
    """(train, held-out): a seeded ``holdout_fraction`` of the identities is held out.

    Both sides keep at least two identities and one genuine pair, or CalibrationDataError
    says how many identities there are and what is needed.
    """
    if not 0.0 < holdout_fraction < 1.0:
        raise CalibrationDataError(f"holdout fraction must be in (0, 1), got {holdout_fraction}")
    names = list(faces.identity_names)
    repeated = [name for name in names if faces.identities.count(name) >= 2]
    if len(names) < 4 or len(repeated) < 2:
        raise CalibrationDataError(
            f"{len(names)} identities ({len(repeated)} with two or more photos): a held-out "
            "evaluation needs at least 4 identities, 2 of them with two photos or more"
        )
    generator = np.random.default_rng(seed)
    # each side gets at least one identity with a genuine pair, then the rest by lot
    first, second = (str(name) for name in generator.choice(repeated, 2, replace=False))
    rest = [name for name in names if name not in (first, second)]
    generator.shuffle(rest)
    held_count = max(2, round(len(names) * holdout_fraction)) - 1
    held = {second, *rest[:held_count]}
    if len(names) - len(held) < 2:
        raise CalibrationDataError(
            f"holdout fraction {holdout_fraction} leaves fewer than 2 identities to learn from"
        )
    return faces.of_identities(set(names) - held), faces.of_identities(held)


def identity_folds(faces: LabelledFaces, *, folds: int, seed: int) -> list[set[str]]:
    """``folds`` disjoint sets of identities covering all of them (seeded, sizes differ by one)."""
    names = list(faces.identity_names)
    if not 2 <= folds <= len(names):
        raise CalibrationDataError(
            f"{folds} folds need between 2 and {len(names)} (the number of identities)"
        )
    order = np.random.default_rng(seed).permutation(len(names))
    return [{names[int(index)] for index in order[fold::folds]} for fold in range(folds)]


@dataclass(frozen=True, slots=True)
class IndexPairs:
    """Pairs of rows of one ``LabelledFaces``: row indices, distances and labels, all (M,)."""

    first: npt.NDArray[np.int64]
    second: npt.NDArray[np.int64]
    distances: npt.NDArray[np.float64]
    same: npt.NDArray[np.bool_]

    def scores(self) -> PairScores:
        """As ``PairScores`` (CalibrationDataError without genuine or impostor pairs)."""
        return PairScores(self.distances, self.same)


def all_pairs(faces: LabelledFaces) -> IndexPairs:
    """Every pair i < j of ``faces`` with its Euclidean distance and label."""
    first, second = np.triu_indices(len(faces), k=1)
    labels = faces.labels
    difference = faces.vectors[first].astype(np.float64) - faces.vectors[second]
    return IndexPairs(
        first.astype(np.int64),
        second.astype(np.int64),
        np.linalg.norm(difference, axis=1),
        labels[first] == labels[second],
    )
