"""The door's face-quality gate chosen from labelled pairs (``facestream calibrate quality``,
``calibration.quality_cli``).

A door lets an encoding vote only when its face passes the gate (``DoorConfig``'s
``min_interocular_px``, ``min_sharpness``, ``max_yaw``, ``max_roll_degrees``,
``min_detector_score``, ``max_clipped_fraction``; ``pipeline.access.policy.passes_quality``).
Here every photo of the pairs is encoded once clean and once per degradation
(``calibration.degrade``) by the service's own detect + align + encode, with each face's
``Quality`` from the service's ``face_quality`` (``calibration.embed.PipelineEmbedder``). A pair
is *accepted* when both its faces are found and pass the gate; among accepted pairs, at the
service's tau, an impostor pair within tau is a false accept and a genuine pair beyond it a
false reject. The *refused share* is the share of pairs with both faces found that the gate
turns away.

``search_gate`` tries every gate of a grid and keeps the *safe* ones: at every condition, false
accepts <= target FAR x accepted impostor pairs. Of those it chooses the loosest: the one that
accepts the most pairs over all conditions (ties: the lowest minimums and highest maximums).
With n accepted impostor pairs FAR moves in steps of 1/n, so a target below 1/n means "no
false accept at all" and only bounds FAR at about 3/n (95 %, the rule of three).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import numpy.typing as npt

from calibration.degrade import Degradation
from calibration.embed import ImageEmbeddings, PipelineEmbedder, embed_images, score_pairs
from calibration.errors import CalibrationDataError
from calibration.pairs import PairSet
from pipeline.access.policy import (
    MAX_CLIPPED_FRACTION,
    MAX_ROLL_DEGREES,
    MAX_YAW,
    MIN_DETECTOR_SCORE,
    MIN_INTEROCULAR_PX,
    MIN_SHARPNESS,
    DoorConfig,
)
from pipeline.types import Quality

__all__ = [
    "GateGrid",
    "GateResult",
    "GateSearch",
    "GatedPairs",
    "QualityGate",
    "evaluate_gate",
    "gated_pairs",
    "measure_conditions",
    "search_gate",
]

Progress = Callable[[str], None]  # one line per stage


@dataclass(frozen=True, slots=True)
class QualityGate:
    """The door's quality minimums (``DoorConfig``'s fields of the same names)."""

    min_interocular_px: float = MIN_INTEROCULAR_PX
    min_sharpness: float = MIN_SHARPNESS
    max_yaw: float = MAX_YAW
    max_roll_degrees: float = MAX_ROLL_DEGREES
    min_detector_score: float = MIN_DETECTOR_SCORE
    max_clipped_fraction: float = MAX_CLIPPED_FRACTION

    @classmethod
    def from_door(cls, door: DoorConfig) -> QualityGate:
        """The gate a configured door applies."""
        return cls(**{field.name: getattr(door, field.name) for field in fields(cls)})

    @classmethod
    def open(cls) -> QualityGate:
        """A gate that lets every found face through (what no gate measures)."""
        return cls(0.0, 0.0, 1.0, 90.0, 0.0, 1.0)

    def strictness(self) -> tuple[float, ...]:
        """Orders gates from loosest (smallest) on equal acceptance: lower minimums, higher
        maximums."""
        return (
            self.min_interocular_px,
            self.min_sharpness,
            -self.max_yaw,
            -self.max_roll_degrees,
            self.min_detector_score,
            -self.max_clipped_fraction,
        )

    def as_dict(self) -> dict[str, float]:
        """JSON-ready form."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class GatedPairs:
    """One condition's labelled pairs: distance (``inf`` where a face is missing), label, and
    the quality of each side's face (None: no face found)."""

    condition: str
    distances: npt.NDArray[np.float64]
    same: npt.NDArray[np.bool_]
    quality_a: tuple[Quality | None, ...]
    quality_b: tuple[Quality | None, ...]

    def __post_init__(self) -> None:
        count = self.distances.shape[0]
        sizes = (self.same.shape[0], len(self.quality_a), len(self.quality_b))
        if self.distances.ndim != 1 or any(size != count for size in sizes):
            raise CalibrationDataError(
                f"{self.condition}: {count} distances but labels and qualities of sizes {sizes}"
            )

    def __len__(self) -> int:
        return int(self.distances.shape[0])

    @property
    def found(self) -> npt.NDArray[np.bool_]:
        """Pairs whose two faces were both found (and measured)."""
        measured = [
            a is not None and b is not None
            for a, b in zip(self.quality_a, self.quality_b, strict=True)
        ]
        return np.isfinite(self.distances) & np.array(measured, np.bool_)

    def worst_quality(self) -> npt.NDArray[np.float64]:
        """(N, 6): per pair, the worse face's value of each gate field, in ``QualityGate``
        order (roll as its magnitude); rows of pairs not ``found`` are NaN."""
        table = np.full((len(self), 6), np.nan)
        for row, (first, second) in enumerate(zip(self.quality_a, self.quality_b, strict=True)):
            if first is not None and second is not None:
                table[row] = [
                    min(first.interocular_px, second.interocular_px),
                    min(first.sharpness, second.sharpness),
                    max(first.yaw, second.yaw),
                    max(abs(first.roll_degrees), abs(second.roll_degrees)),
                    min(first.detector_score, second.detector_score),
                    max(first.clipped_fraction, second.clipped_fraction),
                ]
        return table


def _passing(worst: npt.NDArray[np.float64], gate: QualityGate) -> npt.NDArray[np.bool_]:
    """Pairs whose two faces both pass ``gate``: the same rule as ``passes_quality``, applied
    to the worse face of each pair (NaN rows, pairs without faces, never pass)."""
    with np.errstate(invalid="ignore"):
        passing: npt.NDArray[np.bool_] = (
            (worst[:, 0] >= gate.min_interocular_px)
            & (worst[:, 1] >= gate.min_sharpness)
            & (worst[:, 2] <= gate.max_yaw)
            & (worst[:, 3] <= gate.max_roll_degrees)
            & (worst[:, 4] >= gate.min_detector_score)
            & (worst[:, 5] <= gate.max_clipped_fraction)
        )
    return passing


@dataclass(frozen=True, slots=True)
class GateResult:
    """One gate at one condition, at tau: counts of pairs."""

    condition: str
    pairs: int
    no_face_pairs: int
    refused_pairs: int  # both faces found, at least one failed the gate
    genuine_accepted: int
    impostor_accepted: int
    false_accepts: int  # impostor pairs accepted by the gate and within tau
    false_rejects: int  # genuine pairs accepted by the gate and beyond tau

    @property
    def far(self) -> float | None:
        """False accept rate among accepted impostor pairs (None: none accepted)."""
        return self.false_accepts / self.impostor_accepted if self.impostor_accepted else None

    @property
    def frr(self) -> float | None:
        """False reject rate among accepted genuine pairs (None: none accepted)."""
        return self.false_rejects / self.genuine_accepted if self.genuine_accepted else None

    @property
    def refused_share(self) -> float:
        """Share of the pairs with both faces found that the gate refuses."""
        found = self.pairs - self.no_face_pairs
        return self.refused_pairs / found if found else 0.0

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form, with the rates and the FAR step (1 / accepted impostor pairs)."""
        return {
            **asdict(self),
            "far": None if self.far is None else round(self.far, 6),
            "frr": None if self.frr is None else round(self.frr, 6),
            "refused_share": round(self.refused_share, 6),
            "far_step": round(1.0 / self.impostor_accepted, 6) if self.impostor_accepted else None,
        }


def evaluate_gate(pairs: GatedPairs, gate: QualityGate, *, tau: float) -> GateResult:
    """Counts of ``pairs`` under ``gate`` at ``tau``."""
    return _counts(pairs.condition, _Columns.of(pairs, tau), gate)


@dataclass(frozen=True, slots=True)
class _Columns:
    """One condition's pairs as arrays, built once for a whole grid search."""

    worst: npt.NDArray[np.float64]
    found: npt.NDArray[np.bool_]
    genuine: npt.NDArray[np.bool_]
    within_tau: npt.NDArray[np.bool_]

    @classmethod
    def of(cls, pairs: GatedPairs, tau: float) -> _Columns:
        found = pairs.found
        return cls(pairs.worst_quality(), found, pairs.same, found & (pairs.distances <= tau))


def _counts(condition: str, columns: _Columns, gate: QualityGate) -> GateResult:
    accepted = _passing(columns.worst, gate) & columns.found
    genuine, impostor = accepted & columns.genuine, accepted & ~columns.genuine
    found = int(columns.found.sum())
    return GateResult(
        condition=condition,
        pairs=int(columns.found.size),
        no_face_pairs=int(columns.found.size) - found,
        refused_pairs=found - int(accepted.sum()),
        genuine_accepted=int(genuine.sum()),
        impostor_accepted=int(impostor.sum()),
        false_accepts=int((impostor & columns.within_tau).sum()),
        false_rejects=int((genuine & ~columns.within_tau).sum()),
    )


@dataclass(frozen=True, slots=True)
class GateGrid:
    """Values tried for each gate field; a field with one value is held there."""

    min_interocular_px: tuple[float, ...] = (0, 5, 8, 10, 12, 15, 18, 20, 25, 30, 40)
    min_sharpness: tuple[float, ...] = (0, 5, 10, 20, 30, 50, 75, 100, 150, 200, 300)
    max_yaw: tuple[float, ...] = (1.0, 0.5, 0.35, 0.25)
    max_roll_degrees: tuple[float, ...] = (MAX_ROLL_DEGREES,)
    min_detector_score: tuple[float, ...] = (0.0, 0.5, 0.7, 0.8, 0.9)
    max_clipped_fraction: tuple[float, ...] = (1.0, 0.5, 0.25, 0.1)

    def gates(self) -> Iterator[QualityGate]:
        """Every combination, as gates."""
        for values in itertools.product(*(getattr(self, field.name) for field in fields(self))):
            yield QualityGate(*(float(value) for value in values))


@dataclass(frozen=True, slots=True)
class GateSearch:
    """What the grid search found. chosen: the loosest safe gate, or None when no gate of the
    grid keeps FAR <= target at every condition; closest: the gate whose worst FAR over the
    conditions is lowest (ties: the most pairs accepted), admissible ones first."""

    tau: float
    target_far: float
    gates_tried: int
    safe_gates: int
    chosen: QualityGate | None
    closest: QualityGate
    results: tuple[GateResult, ...]  # of the chosen gate (or of the closest)


def search_gate(
    conditions: Sequence[GatedPairs],
    grid: GateGrid,
    *,
    tau: float,
    target_far: float,
    max_clean_refused: float = 1.0,
) -> GateSearch:
    """The loosest gate of ``grid`` with FAR <= ``target_far`` among accepted pairs at every
    condition (false accepts <= target x accepted impostor pairs), at ``tau``.

    max_clean_refused: a gate refusing more than this share of the ``clean`` condition's pairs
    is not considered (a door must let good faces through: dodging one look-alike pair of sharp,
    large faces by refusing most clean ones is no gate)."""
    if not conditions:
        raise CalibrationDataError("no condition to search the quality gate on")
    columns = [(pairs.condition, _Columns.of(pairs, tau)) for pairs in conditions]
    safe: list[tuple[int, tuple[float, ...], QualityGate]] = []
    ranked: list[tuple[bool, float, int, tuple[float, ...], QualityGate]] = []
    for gate in grid.gates():
        results = [_counts(name, column, gate) for name, column in columns]
        accepted = sum(r.genuine_accepted + r.impostor_accepted for r in results)
        admissible = all(
            r.refused_share <= max_clean_refused for r in results if r.condition == "clean"
        )
        if admissible and all(r.false_accepts <= target_far * r.impostor_accepted for r in results):
            safe.append((-accepted, gate.strictness(), gate))
        worst_far = max(r.far or 0.0 for r in results)
        ranked.append((not admissible, worst_far, -accepted, gate.strictness(), gate))
    chosen = min(safe, key=lambda entry: entry[:2])[2] if safe else None
    closest = min(ranked, key=lambda entry: entry[:4])[4]
    reported = chosen if chosen is not None else closest
    return GateSearch(
        tau=tau,
        target_far=target_far,
        gates_tried=len(ranked),
        safe_gates=len(safe),
        chosen=chosen,
        closest=closest,
        results=tuple(_counts(name, column, reported) for name, column in columns),
    )


def gated_pairs(pair_set: PairSet, embeddings: ImageEmbeddings) -> GatedPairs:
    """``pair_set``'s distances and face qualities under one condition's embeddings."""
    scored = score_pairs(pair_set, embeddings)

    def quality(path: Path) -> Quality | None:
        found = embeddings.by_image[path]
        return None if found is None else found.quality

    return GatedPairs(
        condition=embeddings.condition,
        distances=scored.scores.distances,
        same=scored.scores.same,
        quality_a=tuple(quality(pair.path_a) for pair in pair_set.pairs),
        quality_b=tuple(quality(pair.path_b) for pair in pair_set.pairs),
    )


def measure_conditions(
    pair_set: PairSet,
    embedder: PipelineEmbedder,
    degradations: Sequence[Degradation],
    *,
    seed: int = 0,
    progress: Progress | None = None,
) -> tuple[GatedPairs, ...]:
    """Clean and each degradation's pairs, every image encoded once per condition."""
    images = pair_set.images
    clean = embed_images(images, embedder, seed=seed)
    measured = [gated_pairs(pair_set, clean)]
    if progress is not None:
        progress(f"clean: {len(images)} images encoded")
    for condition in degradations:
        degraded = embed_images(images, embedder, condition=condition, face_widths=clean, seed=seed)
        measured.append(gated_pairs(pair_set, degraded))
        if progress is not None:
            progress(f"{condition}: {len(images)} images encoded")
    return tuple(measured)
