"""Verification error rates from pair distances: ROC, EER, AUC and thresholds (pure numpy).

A pair is accepted as "the same person" when its Euclidean distance is at or below the
threshold tau. On labelled pairs (genuine = same person, impostor = different people):

- FAR(tau): share of impostor pairs accepted (false accepts);
- FRR(tau): share of genuine pairs rejected (false rejects); TAR = 1 - FRR.

A pair that could not be scored (no face found in one of its images) has distance ``inf``: it is
rejected at every tau, as the service would reject it. Thresholds are placed halfway between
neighbouring observed distances, so a tau chosen on these pairs does not sit exactly on one of
them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from calibration.errors import CalibrationDataError

__all__ = [
    "ConfidenceInterval",
    "OperatingPoint",
    "PairScores",
    "RocCurve",
    "area_under_curve",
    "best_accuracy_point",
    "bootstrap_tau_at_far",
    "equal_error_rate",
    "operating_point",
    "roc_curve",
    "tau_at_far",
]


@dataclass(frozen=True, slots=True)
class PairScores:
    """Distances of labelled pairs: ``distances`` float64 (N,) (``inf`` where a face is missing),
    ``same`` bool (N,) (True for genuine pairs)."""

    distances: npt.NDArray[np.float64]
    same: npt.NDArray[np.bool_]

    def __post_init__(self) -> None:
        if self.distances.ndim != 1 or self.same.shape != self.distances.shape:
            raise CalibrationDataError(
                f"distances {self.distances.shape} and labels {self.same.shape} must be (N,)"
            )
        if self.same.dtype != np.bool_:
            raise CalibrationDataError(f"labels must be bool, got {self.same.dtype}")
        if np.isnan(self.distances).any() or (self.distances < 0).any():
            raise CalibrationDataError("distances must be >= 0 (inf for an unscored pair)")
        if not self.same.any():
            raise CalibrationDataError("no genuine (same person) pairs: FRR cannot be measured")
        if self.same.all():
            raise CalibrationDataError(
                "no impostor (different people) pairs: FAR cannot be measured"
            )
        self.distances.setflags(write=False)
        self.same.setflags(write=False)

    @classmethod
    def from_lists(cls, distances: list[float], same: list[bool]) -> PairScores:
        """Scores from plain lists (hand-made examples, JSON)."""
        return cls(np.asarray(distances, np.float64), np.asarray(same, np.bool_))

    @property
    def genuine(self) -> npt.NDArray[np.float64]:
        """Distances of the same-person pairs."""
        return self.distances[self.same]

    @property
    def impostor(self) -> npt.NDArray[np.float64]:
        """Distances of the different-people pairs."""
        return self.distances[~self.same]

    def __len__(self) -> int:
        return int(self.distances.shape[0])


@dataclass(frozen=True, slots=True)
class RocCurve:
    """FAR and FRR at every distinct finite distance (accept when distance <= threshold).

    thresholds float64 (M,), ascending, starting at 0; far/frr float64 (M,).
    """

    thresholds: npt.NDArray[np.float64]
    far: npt.NDArray[np.float64]
    frr: npt.NDArray[np.float64]

    @property
    def tar(self) -> npt.NDArray[np.float64]:
        """True accept rate (1 - FRR) at each threshold."""
        return 1.0 - self.frr


@dataclass(frozen=True, slots=True)
class OperatingPoint:
    """Error rates at one threshold ``tau`` (Euclidean distance); rates are fractions 0..1."""

    tau: float
    far: float
    frr: float
    accuracy: float

    def as_dict(self) -> dict[str, float]:
        """JSON-ready form."""
        return {
            "tau": round(self.tau, 6),
            "far": round(self.far, 6),
            "frr": round(self.frr, 6),
            "accuracy": round(self.accuracy, 6),
        }


@dataclass(frozen=True, slots=True)
class ConfidenceInterval:
    """A two-sided percentile bootstrap interval (``level`` e.g. 0.95) of a statistic."""

    low: float
    high: float
    level: float
    resamples: int

    def as_dict(self) -> dict[str, float | int]:
        """JSON-ready form."""
        return {
            "low": round(self.low, 6),
            "high": round(self.high, 6),
            "level": self.level,
            "resamples": self.resamples,
        }


def roc_curve(scores: PairScores) -> RocCurve:
    """FAR/FRR at threshold 0 and at every distinct finite distance in ``scores``."""
    finite = scores.distances[np.isfinite(scores.distances)]
    thresholds = np.unique(np.concatenate([[0.0], finite]))
    genuine = np.sort(scores.genuine)
    impostor = np.sort(scores.impostor)
    accepted_genuine = np.searchsorted(genuine, thresholds, side="right")
    accepted_impostor = np.searchsorted(impostor, thresholds, side="right")
    return RocCurve(
        thresholds=thresholds,
        far=accepted_impostor / impostor.size,
        frr=1.0 - accepted_genuine / genuine.size,
    )


def _midpoint_after(curve: RocCurve, index: int) -> float:
    """A threshold between ``thresholds[index]`` and the next distance (or just above the last)."""
    thresholds = curve.thresholds
    if index + 1 < thresholds.size:
        return float((thresholds[index] + thresholds[index + 1]) / 2)
    return float(thresholds[index] + 1e-6)


def operating_point(scores: PairScores, tau: float) -> OperatingPoint:
    """FAR, FRR and accuracy when pairs at distance <= ``tau`` are accepted."""
    accepted = scores.distances <= tau
    far = float(accepted[~scores.same].mean())
    frr = float((~accepted[scores.same]).mean())
    accuracy = float((accepted == scores.same).mean())
    return OperatingPoint(tau=float(tau), far=far, frr=frr, accuracy=accuracy)


def equal_error_rate(curve: RocCurve) -> tuple[float, float]:
    """(EER, its threshold): where FAR = FRR, linearly interpolated between neighbouring
    thresholds of the curve."""
    difference = curve.far - curve.frr  # rises from -1 (accept nothing) towards +1
    crossing = int(np.argmax(difference >= 0)) if (difference >= 0).any() else difference.size - 1
    if crossing == 0 or difference[crossing] < 0:
        return float(curve.far[crossing]), float(curve.thresholds[crossing])
    before, after = difference[crossing - 1], difference[crossing]
    fraction = float(-before / (after - before))
    eer = curve.far[crossing - 1] + fraction * (curve.far[crossing] - curve.far[crossing - 1])
    tau = curve.thresholds[crossing - 1] + fraction * (
        curve.thresholds[crossing] - curve.thresholds[crossing - 1]
    )
    return float(eer), float(tau)


def area_under_curve(curve: RocCurve) -> float:
    """Area under TAR(FAR) from (0, 0) to (1, 1), trapezoids (ties count one half)."""
    far = np.concatenate([[0.0], curve.far, [1.0]])
    tar = np.concatenate([[0.0], curve.tar, [1.0]])
    return float(np.sum((far[1:] - far[:-1]) * (tar[1:] + tar[:-1]) / 2))


def best_accuracy_point(scores: PairScores, curve: RocCurve | None = None) -> OperatingPoint:
    """The threshold with the highest accuracy on ``scores`` (the smallest such on ties)."""
    curve = curve if curve is not None else roc_curve(scores)
    genuine, impostor = scores.genuine.size, scores.impostor.size
    correct = genuine * curve.tar + impostor * (1.0 - curve.far)
    return operating_point(scores, _midpoint_after(curve, int(np.argmax(correct))))


def tau_at_far(scores: PairScores, target_far: float, curve: RocCurve | None = None) -> float:
    """The largest threshold whose FAR on ``scores`` is at most ``target_far`` (0..1).

    With n impostor pairs FAR moves in steps of 1/n: below 1/n the answer is "accept no
    impostor seen here", and more impostor pairs are needed to say more.
    """
    if not 0.0 <= target_far < 1.0:
        raise CalibrationDataError(f"target FAR must be in [0, 1), got {target_far}")
    curve = curve if curve is not None else roc_curve(scores)
    allowed = np.flatnonzero(curve.far <= target_far + 1e-12)
    if allowed.size == 0:  # an impostor at distance 0: only "accept nothing" meets the target
        # below 0, as acceptance is distance <= tau and 0.0 would still accept that impostor
        return float(np.nextafter(0.0, -1.0))
    return _midpoint_after(curve, int(allowed[-1]))


def bootstrap_tau_at_far(
    scores: PairScores,
    target_far: float,
    *,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> ConfidenceInterval:
    """Percentile bootstrap interval of ``tau_at_far``: genuine and impostor pairs are
    resampled separately (with replacement, their counts kept), ``resamples`` times."""
    if resamples < 10:
        raise CalibrationDataError(f"bootstrap needs at least 10 resamples, got {resamples}")
    if not 0.0 < level < 1.0:
        raise CalibrationDataError(f"confidence level must be in (0, 1), got {level}")
    generator = np.random.default_rng(seed)
    genuine, impostor = scores.genuine, scores.impostor
    taus = np.empty(resamples, np.float64)
    same = np.concatenate([np.ones(genuine.size, np.bool_), np.zeros(impostor.size, np.bool_)])
    for index in range(resamples):
        distances = np.concatenate(
            [generator.choice(genuine, genuine.size), generator.choice(impostor, impostor.size)]
        )
        taus[index] = tau_at_far(PairScores(distances, same.copy()), target_far)
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(taus, [tail, 100 - tail])
    return ConfidenceInterval(float(low), float(high), level, resamples)
