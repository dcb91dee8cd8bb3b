"""1:N identification with unknown probes: rank-1 accuracy and FNIR at a fixed FPIR.

The gallery and the probes are folder-per-identity layouts (``DIR/<identity>/<image>``). Every
gallery photo becomes one template of its identity, as enrolment does; a probe's score for an
identity is the distance to that identity's nearest template, as the gallery searches. A probe
whose identity has no gallery folder is an unknown person (a non-mated probe).

- rank-1 accuracy: share of mated probes whose nearest identity is their own (no threshold);
- FPIR(tau): share of non-mated probes whose nearest identity is within tau (a stranger let in);
- FNIR(tau): share of mated probes not identified as themselves within tau.

tau for the FPIR target is the largest with FPIR <= target; with n unknown probes FPIR moves
in steps of 1/n, so a 1 % target needs 100 or more of them to mean what it says.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from calibration.embed import ImageEmbeddings, PipelineEmbedder, embed_images
from calibration.errors import CalibrationDataError
from calibration.pairs import identity_folders
from pipeline.recognition.analyzer import FaceAnalyzer

__all__ = ["IdentificationReport", "evaluate_identification", "fnir_at_fpir"]


@dataclass(frozen=True, slots=True)
class IdentificationReport:
    """Figures of one 1:N run; rates are fractions 0..1, tau a Euclidean distance."""

    model_id: str
    gallery_identities: int
    gallery_templates: int
    gallery_no_face: int
    mated_probes: int
    non_mated_probes: int
    probes_no_face: int
    rank1_accuracy: float
    target_fpir: float
    tau_at_fpir: float
    fpir: float
    fnir: float
    service_tau: float
    fpir_at_service_tau: float
    fnir_at_service_tau: float

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "model_id": self.model_id,
            "gallery_identities": self.gallery_identities,
            "gallery_templates": self.gallery_templates,
            "gallery_no_face": self.gallery_no_face,
            "mated_probes": self.mated_probes,
            "non_mated_probes": self.non_mated_probes,
            "probes_no_face": self.probes_no_face,
            "rank1_accuracy": round(self.rank1_accuracy, 6),
            "target_fpir": self.target_fpir,
            "fpir_resolution": round(1.0 / self.non_mated_probes, 6),
            "tau_at_fpir": round(self.tau_at_fpir, 6),
            "fpir": round(self.fpir, 6),
            "fnir_at_fpir": round(self.fnir, 6),
            "service_tau": self.service_tau,
            "fpir_at_service_tau": round(self.fpir_at_service_tau, 6),
            "fnir_at_service_tau": round(self.fnir_at_service_tau, 6),
        }


def _nearest(
    probe: npt.NDArray[np.float32],
    templates: npt.NDArray[np.float32],
    owners: npt.NDArray[np.int64],
) -> tuple[int, float]:
    """(identity index, distance) of the identity with the template nearest to ``probe``."""
    distances = np.linalg.norm(templates.astype(np.float64) - probe.astype(np.float64), axis=1)
    best = int(np.argmin(distances))
    return int(owners[best]), float(distances[best])


def fnir_at_fpir(
    mated_correct: npt.NDArray[np.bool_],
    mated_distances: npt.NDArray[np.float64],
    non_mated_distances: npt.NDArray[np.float64],
    target_fpir: float,
) -> tuple[float, float, float]:
    """(tau, FPIR, FNIR) at the largest tau whose FPIR is at most ``target_fpir``.

    mated_correct: whether each mated probe's nearest identity is its own; mated_distances:
    that nearest distance (``inf`` without a face); non_mated_distances: each unknown probe's
    nearest distance (``inf`` without a face). tau lies halfway between the first unknown probe
    that must stay rejected and the next smaller distance of any probe.
    """
    finite = np.sort(non_mated_distances[np.isfinite(non_mated_distances)])
    observed = np.concatenate([finite, mated_distances[np.isfinite(mated_distances)]])
    allowed = int(np.floor(target_fpir * non_mated_distances.size + 1e-9))
    if allowed >= finite.size:  # every unknown probe may be accepted: tau above them all
        tau = float(observed.max()) + 1e-6 if observed.size else 0.0
    else:
        upper = float(finite[allowed])  # the first unknown probe that must stay rejected
        below = observed[observed < upper]
        tau = (float(below.max()) + upper) / 2 if below.size else upper / 2
    fpir = float((non_mated_distances <= tau).mean())
    identified = mated_correct & (mated_distances <= tau)
    return tau, fpir, float(1.0 - identified.mean())


def _templates(
    embeddings: ImageEmbeddings, identities: dict[str, list[Path]]
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64], list[str]]:
    names = sorted(identities)
    vectors, owners = [], []
    for index, name in enumerate(names):
        for path in identities[name]:
            found = embeddings.by_image[path]
            if found is not None:
                vectors.append(found.vector)
                owners.append(index)
    if not vectors:
        raise CalibrationDataError("no face was found in any gallery image")
    return np.stack(vectors), np.asarray(owners, np.int64), names


def evaluate_identification(
    analyzer: FaceAnalyzer,
    gallery_dir: Path,
    probes_dir: Path,
    *,
    target_fpir: float = 0.01,
    service_tau: float = 0.6,
) -> IdentificationReport:
    """Enrol ``gallery_dir`` in memory, identify every probe, and measure (module docstring).

    CalibrationDataError when the probes hold no mated or no unknown identity.
    """
    gallery = identity_folders(gallery_dir)
    probes = identity_folders(probes_dir)
    if not gallery:
        raise CalibrationDataError(f"{gallery_dir}: no identity folder with images")
    mated_names = [name for name in probes if name in gallery]
    unknown_names = [name for name in probes if name not in gallery]
    if not mated_names:
        raise CalibrationDataError(
            f"{probes_dir}: no probe identity is enrolled in {gallery_dir} "
            "(probe and gallery folder names must match)"
        )
    if not unknown_names:
        raise CalibrationDataError(
            f"{probes_dir}: every probe identity is enrolled; FPIR needs unknown people "
            "(probe folders with no gallery folder)"
        )
    embedder = PipelineEmbedder(analyzer)
    gallery_embeddings = embed_images(
        [path for paths in gallery.values() for path in paths], embedder
    )
    templates, owners, names = _templates(gallery_embeddings, gallery)
    probe_embeddings = embed_images([path for paths in probes.values() for path in paths], embedder)
    mated_correct, mated_distances, non_mated_distances = [], [], []
    for name, paths in probes.items():
        for path in paths:
            found = probe_embeddings.by_image[path]
            owner, distance = (
                (-1, np.inf) if found is None else _nearest(found.vector, templates, owners)
            )
            if name in gallery:
                mated_correct.append(owner >= 0 and names[owner] == name)
                mated_distances.append(distance)
            else:
                non_mated_distances.append(distance)
    correct = np.asarray(mated_correct, np.bool_)
    mated = np.asarray(mated_distances, np.float64)
    non_mated = np.asarray(non_mated_distances, np.float64)
    tau, fpir, fnir = fnir_at_fpir(correct, mated, non_mated, target_fpir)
    return IdentificationReport(
        model_id=analyzer.model_id,
        gallery_identities=len(set(owners.tolist())),
        gallery_templates=int(templates.shape[0]),
        gallery_no_face=len(gallery_embeddings.no_face_images),
        mated_probes=int(correct.size),
        non_mated_probes=int(non_mated.size),
        probes_no_face=len(probe_embeddings.no_face_images),
        rank1_accuracy=float(correct.mean()),
        target_fpir=target_fpir,
        tau_at_fpir=tau,
        fpir=fpir,
        fnir=fnir,
        service_tau=service_tau,
        fpir_at_service_tau=float((non_mated <= service_tau).mean()),
        fnir_at_service_tau=float(1.0 - (correct & (mated <= service_tau)).mean()),
    )
