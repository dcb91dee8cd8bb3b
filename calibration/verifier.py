"""Verification as binary classification, measured against the plain distance threshold.

DeepFace (Taigman et al. 2014) and ../shared/THEORY.md pose "same person?" as a logistic unit
on the element-wise difference of two descriptors: ``p = sigmoid(w . phi(a, b) + c)`` with
``phi = |a - b|`` (``abs``) or the chi-square terms ``(a - b)^2 / (|a| + |b|)`` (``chi2``; the
absolute values because dlib's descriptors are signed, where DeepFace's were ReLU outputs).

``compare_verifiers`` answers whether that beats the distance threshold the service uses, on
people the classifier never saw: identities are split into folds; for each fold, every method
learns on all pairs of the other folds' people (the logistic weights, and for every method its
accept threshold at the best training accuracy) and is scored on all pairs of the fold's
people. Held-out decisions and scores are pooled over the folds. A variant "beats" the distance
only when it is more accurate held out, with an AUC no lower, and McNemar's exact test on the
pairs where the two disagree gives p < 0.05: on near-separable data one or two pairs decide
the accuracy, and that is chance, not a better verifier. The service keeps the distance
threshold unless a site's own data says otherwise (docs/calibration.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

from calibration.errors import CalibrationDataError
from calibration.faceset import LabelledFaces, all_pairs, identity_folds
from calibration.roc import (
    PairScores,
    area_under_curve,
    best_accuracy_point,
    equal_error_rate,
    operating_point,
    roc_curve,
)

__all__ = [
    "FEATURES",
    "LogisticVerifier",
    "MethodResult",
    "VerifierReport",
    "compare_verifiers",
    "held_out_result",
    "mcnemar_exact_p",
    "pair_features",
]

FeatureName = Literal["abs", "chi2"]
_EPSILON: Final = 1e-6
_NEWTON_STEPS: Final = 50
_SIGNIFICANCE: Final = 0.05
_Floats = npt.NDArray[np.float64]


def _absolute(first: _Floats, second: _Floats) -> _Floats:
    return np.abs(first - second)


def _chi_square(first: _Floats, second: _Floats) -> _Floats:
    return np.square(first - second) / (np.abs(first) + np.abs(second) + _EPSILON)


FEATURES: Final[dict[str, Callable[[_Floats, _Floats], _Floats]]] = {
    "abs": _absolute,
    "chi2": _chi_square,
}


def pair_features(
    first: npt.NDArray[np.floating], second: npt.NDArray[np.floating], kind: FeatureName
) -> _Floats:
    """phi(a, b) row by row for descriptors ``first`` and ``second`` of shape (N, D)."""
    return FEATURES[kind](np.asarray(first, np.float64), np.asarray(second, np.float64))


@dataclass(frozen=True, slots=True)
class LogisticVerifier:
    """A fitted logistic unit on standardised pair features; ``probability`` of "same"."""

    kind: FeatureName
    mean: _Floats
    scale: _Floats
    weights: _Floats
    bias: float

    @classmethod
    def fit(
        cls, features: _Floats, same: npt.NDArray[np.bool_], *, kind: FeatureName, l2: float
    ) -> LogisticVerifier:
        """Maximum a posteriori weights by Newton's method (IRLS) with an L2 penalty ``l2``.

        Genuine and impostor pairs weigh half the total each, so the far more numerous
        impostor pairs do not decide the fit alone.
        """
        if not same.any() or same.all():
            raise CalibrationDataError("the logistic verifier needs genuine and impostor pairs")
        mean = features.mean(axis=0)
        scale = features.std(axis=0) + _EPSILON
        design = np.hstack([(features - mean) / scale, np.ones((len(features), 1))])
        target = same.astype(np.float64)
        balance = np.where(same, 0.5 / same.sum(), 0.5 / (~same).sum()) * len(same)
        penalty = np.full(design.shape[1], l2)
        penalty[-1] = 0.0  # the bias is not shrunk
        theta = np.zeros(design.shape[1])
        for _ in range(_NEWTON_STEPS):
            probability = 1.0 / (1.0 + np.exp(-(design @ theta)))
            gradient = design.T @ (balance * (probability - target)) + penalty * theta
            curvature = balance * probability * (1.0 - probability)
            hessian = (design * curvature[:, None]).T @ design + np.diag(penalty + _EPSILON)
            step = np.linalg.solve(hessian, gradient)
            theta -= step
            if np.abs(step).max() < 1e-8:
                break
        return cls(kind, mean, scale, theta[:-1].copy(), float(theta[-1]))

    def probability(
        self, first: npt.NDArray[np.floating], second: npt.NDArray[np.floating]
    ) -> _Floats:
        """P(same person) of each pair of rows."""
        features = (pair_features(first, second, self.kind) - self.mean) / self.scale
        return 1.0 / (1.0 + np.exp(-(features @ self.weights + self.bias)))


def mcnemar_exact_p(only_first_right: int, only_second_right: int) -> float:
    """Two-sided exact McNemar p-value from the two discordant counts (binomial, p = 1/2)."""
    discordant = only_first_right + only_second_right
    if discordant == 0:
        return 1.0
    tail = sum(
        math.comb(discordant, k) for k in range(min(only_first_right, only_second_right) + 1)
    )
    return min(1.0, 2.0 * tail / 2.0**discordant)


@dataclass(frozen=True, slots=True)
class MethodResult:
    """One method's pooled held-out figures (rates are fractions 0..1).

    right_where_baseline_wrong / wrong_where_baseline_right: pairs on which only this method,
    or only the baseline (the distance threshold), decides correctly; p_value: McNemar's exact
    test on them.
    """

    accuracy: float
    far: float
    frr: float
    auc: float
    eer: float
    right_where_baseline_wrong: int = 0
    wrong_where_baseline_right: int = 0

    @property
    def p_value(self) -> float:
        """McNemar's exact two-sided p-value against the baseline."""
        return mcnemar_exact_p(self.right_where_baseline_wrong, self.wrong_where_baseline_right)

    def beats(self, baseline: MethodResult) -> bool:
        """More accurate than ``baseline`` (the one it was compared with pair by pair), AUC no
        lower, and McNemar's p < 0.05 on the pairs where the two disagree."""
        return (
            self.accuracy > baseline.accuracy
            and self.auc >= baseline.auc
            and self.p_value < _SIGNIFICANCE
        )

    def as_dict(self) -> dict[str, float | int]:
        """JSON-ready form."""
        return {
            "accuracy": round(self.accuracy, 6),
            "far": round(self.far, 6),
            "frr": round(self.frr, 6),
            "auc": round(self.auc, 6),
            "eer": round(self.eer, 6),
            "right_where_baseline_wrong": self.right_where_baseline_wrong,
            "wrong_where_baseline_right": self.wrong_where_baseline_right,
            "p_value": round(self.p_value, 6),
        }


@dataclass(frozen=True, slots=True)
class VerifierReport:
    """Held-out comparison of the distance threshold with the logistic verifiers."""

    model_id: str
    identities: int
    faces: int
    folds: int
    genuine_pairs: int
    impostor_pairs: int
    methods: dict[str, MethodResult]

    def beats_distance(self, method: str) -> bool:
        """More accurate than the distance threshold held out, AUC no lower, p < 0.05."""
        return self.methods[method].beats(self.methods["distance"])

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form, with the verdict for each logistic variant."""
        return {
            "model_id": self.model_id,
            "identities": self.identities,
            "faces": self.faces,
            "folds": self.folds,
            "genuine_pairs": self.genuine_pairs,
            "impostor_pairs": self.impostor_pairs,
            "methods": {name: result.as_dict() for name, result in self.methods.items()},
            "beats_distance": {
                name: self.beats_distance(name) for name in self.methods if name != "distance"
            },
        }


@dataclass
class _Pooled:
    """Held-out scores (lower = more alike) and decisions of one method over the folds."""

    scores: list[_Floats]
    accepted: list[npt.NDArray[np.bool_]]


def _score_fold(
    train: LabelledFaces, test: LabelledFaces, *, l2: float
) -> tuple[npt.NDArray[np.bool_], dict[str, tuple[_Floats, npt.NDArray[np.bool_]]]]:
    """Held-out labels and, per method, (scores, accepted) of every pair of ``test``."""
    train_pairs, test_pairs = all_pairs(train), all_pairs(test)
    train_a, train_b = train.vectors[train_pairs.first], train.vectors[train_pairs.second]
    test_a, test_b = test.vectors[test_pairs.first], test.vectors[test_pairs.second]
    tau = best_accuracy_point(train_pairs.scores()).tau
    results = {"distance": (test_pairs.distances, test_pairs.distances <= tau)}
    for kind in ("abs", "chi2"):
        features = pair_features(train_a, train_b, kind)
        verifier = LogisticVerifier.fit(features, train_pairs.same, kind=kind, l2=l2)
        train_scores = 1.0 - verifier.probability(train_a, train_b)
        threshold = best_accuracy_point(PairScores(train_scores, train_pairs.same)).tau
        scores = 1.0 - verifier.probability(test_a, test_b)
        results[f"logistic_{kind}"] = (scores, scores <= threshold)
    return test_pairs.same, results


def held_out_result(
    scores: PairScores, accepted: npt.NDArray[np.bool_], baseline_right: npt.NDArray[np.bool_]
) -> MethodResult:
    """Figures of held-out ``scores`` (lower = more alike) and decisions ``accepted``, compared
    pair by pair with where the baseline decided right."""
    same = scores.same
    right = accepted == same
    curve = roc_curve(scores)
    at_decisions = operating_point(PairScores(np.where(accepted, 0.0, 1.0), same), 0.5)
    return MethodResult(
        accuracy=at_decisions.accuracy,
        far=at_decisions.far,
        frr=at_decisions.frr,
        auc=area_under_curve(curve),
        eer=equal_error_rate(curve)[0],
        right_where_baseline_wrong=int((right & ~baseline_right).sum()),
        wrong_where_baseline_right=int((~right & baseline_right).sum()),
    )


def compare_verifiers(
    faces: LabelledFaces, *, folds: int = 5, seed: int = 0, l2: float = 1.0
) -> VerifierReport:
    """Distance threshold vs logistic ``abs`` and ``chi2`` on held-out identities (see module).

    CalibrationDataError when a training side lacks genuine or impostor pairs (too few
    identities with two photos for this many folds).
    """
    labels: list[npt.NDArray[np.bool_]] = []
    pooled: dict[str, _Pooled] = {}
    names = set(faces.identity_names)
    for held_out in identity_folds(faces, folds=folds, seed=seed):
        test = faces.of_identities(held_out)
        if len(test) < 2:
            continue  # one photo of one person: no pair to score
        same, results = _score_fold(faces.of_identities(names - held_out), test, l2=l2)
        labels.append(same)
        for method, (scores, accepted) in results.items():
            pooled.setdefault(method, _Pooled([], [])).scores.append(scores)
            pooled[method].accepted.append(accepted)
    same = np.concatenate(labels) if labels else np.zeros(0, np.bool_)
    if not same.any() or same.all():
        raise CalibrationDataError(
            f"the held-out folds hold {int(same.sum())} genuine and {int((~same).sum())} "
            "impostor pairs: use fewer folds or more people with two photos or more"
        )
    distance_right = np.concatenate(pooled["distance"].accepted) == same
    return VerifierReport(
        model_id=faces.model_id,
        identities=len(names),
        faces=len(faces),
        folds=folds,
        genuine_pairs=int(same.sum()),
        impostor_pairs=int((~same).sum()),
        methods={
            method: held_out_result(
                PairScores(np.concatenate(result.scores), same),
                np.concatenate(result.accepted),
                distance_right,
            )
            for method, result in pooled.items()
        },
    )
