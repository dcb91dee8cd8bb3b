"""The match threshold tau from labelled pairs, its accuracy report, and tau bound to a model.

``calibrate_threshold`` encodes every image of the pairs once with facestream's pipeline (and,
in the same run, with face_recognition's as the baseline), optionally on degraded copies too,
and measures ROC, EER, AUC, the most accurate tau, and tau at a target FAR with a bootstrap
interval and the FRR it costs. ``save_calibrated_tau`` writes that tau with the encoder's model
id to ``data_dir/calibration/tau.json``; ``load_calibrated_tau`` refuses it for any other model,
because distances of two encoders are not comparable.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from calibration.degrade import Degradation
from calibration.embed import (
    FaceEmbedder,
    FaceRecognitionEmbedder,
    ImageEmbeddings,
    PipelineEmbedder,
    ScoredPairs,
    embed_images,
    score_pairs,
)
from calibration.errors import CalibrationDataError, ThresholdFileError, ThresholdModelMismatchError
from calibration.pairs import PairSet
from calibration.roc import (
    ConfidenceInterval,
    OperatingPoint,
    area_under_curve,
    best_accuracy_point,
    bootstrap_tau_at_far,
    equal_error_rate,
    operating_point,
    roc_curve,
    tau_at_far,
)
from engines.store import atomic_write
from pipeline.config.calibrated import CALIBRATED_TAU_FILE
from pipeline.recognition.analyzer import FaceAnalyzer

__all__ = [
    "FACE_RECOGNITION_TOLERANCE",
    "TAU_FILE",
    "CalibratedTau",
    "OpenSetTarget",
    "PipelineResult",
    "ThresholdReport",
    "ThresholdSettings",
    "calibrate_threshold",
    "evaluate_pipeline",
    "load_calibrated_tau",
    "read_calibrated_tau",
    "save_calibrated_tau",
    "tau_file",
]

_log = logging.getLogger(__name__)

FACE_RECOGNITION_TOLERANCE = 0.6  # face_recognition's documented default (compare_faces)
TAU_FILE = CALIBRATED_TAU_FILE  # the service reads it (pipeline/config/calibrated.py)
MIN_PAIRS = 20
Progress = Callable[[str, int, int], None]  # (stage, images done, images in all)


@dataclass(frozen=True, slots=True)
class OpenSetTarget:
    """A 1:N target: at most ``target_fpir`` of strangers may fall within tau of *someone* in
    a gallery of ``gallery_size`` identities (the false-positive identification rate)."""

    target_fpir: float
    gallery_size: int

    def __post_init__(self) -> None:
        if not 0.0 < self.target_fpir < 1.0:
            raise CalibrationDataError(f"target FPIR must be in (0, 1), got {self.target_fpir}")
        if self.gallery_size < 1:
            raise CalibrationDataError(f"gallery size must be >= 1, got {self.gallery_size}")

    @property
    def target_far(self) -> float:
        """The 1:1 FAR that gives ``target_fpir`` at ``gallery_size``.

        A stranger is let in when the nearest of N impostor distances is within tau; with
        independent impostors FPIR = 1 - (1 - FAR)^N, so FAR = 1 - (1 - FPIR)^(1/N), computed
        through log1p/expm1 because it is tiny for a large N.
        """
        return -math.expm1(math.log1p(-self.target_fpir) / self.gallery_size)

    def fpir(self, far: float) -> float:
        """The FPIR a 1:1 ``far`` gives at ``gallery_size`` (same independence model)."""
        return -math.expm1(self.gallery_size * math.log1p(-min(far, 1.0 - 1e-16)))

    def as_dict(self) -> dict[str, object]:
        return {
            "target_fpir": self.target_fpir,
            "gallery_size": self.gallery_size,
            "target_far": self.target_far,
        }


@dataclass(frozen=True, slots=True)
class ThresholdSettings:
    """How to calibrate.

    target_far: false accept rate (0..1) the tau must not exceed; service_tau: the distance the
    service matches at now (config ``recognition.match.max_distance``), reported for comparison;
    baseline: also run face_recognition; degradations: conditions measured besides clean;
    bootstrap_resamples: resamples of the tau interval; seed: fixes resampling and degradation;
    open_set: the 1:N target ``target_far`` was derived from (``OpenSetTarget.target_far``),
    recorded with the tau so the service can tell when its gallery outgrows it.
    """

    target_far: float = 1e-3
    service_tau: float = 0.6
    baseline: bool = True
    degradations: tuple[Degradation, ...] = ()
    bootstrap_resamples: int = 1000
    seed: int = 0
    open_set: OpenSetTarget | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.target_far < 1.0:
            raise CalibrationDataError(f"target FAR must be in (0, 1), got {self.target_far}")
        if self.service_tau <= 0:
            raise CalibrationDataError(f"service tau must be > 0, got {self.service_tau}")


@dataclass(frozen=True, slots=True)
class PipelineResult:
    """One pipeline's verification figures on the pairs under one condition (``clean`` or a
    degradation). ``reference`` is the pipeline's own operating point (facestream: the
    service's tau; face_recognition: its tolerance 0.6); ``at_target`` is at tau for the
    target FAR; ``at_far_1e3`` at tau for FAR 0.1 %."""

    pipeline: str
    condition: str
    scored: ScoredPairs
    auc: float
    eer: float
    eer_tau: float
    best: OperatingPoint
    reference: OperatingPoint
    at_target: OperatingPoint
    at_far_1e3: OperatingPoint
    tau_interval: ConfidenceInterval | None = None

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form (no per-pair data)."""
        return {
            "pipeline": self.pipeline,
            "condition": self.condition,
            "n_pairs": len(self.scored.scores),
            "no_face": self.scored.no_face_pairs,
            "no_face_images": [str(path) for path in self.scored.no_face_images],
            "auc": round(self.auc, 6),
            "eer": round(self.eer, 6),
            "eer_tau": round(self.eer_tau, 6),
            "best_accuracy": self.best.as_dict(),
            "at_reference_tau": self.reference.as_dict(),
            "at_target_far": self.at_target.as_dict(),
            "tar_at_far_1e-3": round(1.0 - self.at_far_1e3.frr, 6),
            "tau_interval": None if self.tau_interval is None else self.tau_interval.as_dict(),
        }


@dataclass(frozen=True, slots=True)
class ThresholdReport:
    """Everything one calibration run measured; ``tau`` is facestream's tau at the target FAR
    on the clean pairs, the number to deploy."""

    model_id: str
    source: Path
    settings: ThresholdSettings
    results: tuple[PipelineResult, ...]
    seconds: float
    created_unix: float = field(default_factory=time.time)

    def result(self, pipeline: str, condition: str = "clean") -> PipelineResult:
        """The result of ``pipeline`` under ``condition``; KeyError when it was not measured."""
        for result in self.results:
            if result.pipeline == pipeline and result.condition == condition:
                return result
        raise KeyError(f"{pipeline} under {condition} was not measured")

    @property
    def ours(self) -> PipelineResult:
        """facestream on the clean pairs."""
        return self.result(PipelineEmbedder.name)

    @property
    def tau(self) -> float:
        """facestream's tau at the target FAR (Euclidean distance)."""
        return self.ours.at_target.tau

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        scores = self.ours.scored.scores
        impostors = int(scores.impostor.size)
        return {
            "model_id": self.model_id,
            "source": str(self.source),
            "n_pairs": len(scores),
            "n_genuine": int(scores.genuine.size),
            "n_impostor": impostors,
            "target_far": self.settings.target_far,
            "far_resolution": 1.0 / impostors,  # FAR moves in steps of one impostor pair
            "tau": round(self.tau, 6),
            "tau_interval": (
                None if self.ours.tau_interval is None else self.ours.tau_interval.as_dict()
            ),
            "frr_at_tau": round(self.ours.at_target.frr, 6),
            "service_tau": self.settings.service_tau,
            "open_set": _open_set_figures(self),
            "baseline_tolerance": FACE_RECOGNITION_TOLERANCE,
            "seed": self.settings.seed,
            "seconds": round(self.seconds, 1),
            "created_unix": round(self.created_unix, 3),
            "results": [result.as_dict() for result in self.results],
        }


def _open_set_figures(report: ThresholdReport) -> dict[str, object] | None:
    """The open-set target and what tau gives under it, with the caveat the data forces: FAR
    is measured in steps of one impostor pair, so a target below that is extrapolated."""
    target = report.settings.open_set
    if target is None:
        return None
    ours = report.ours
    impostors = int(ours.scored.scores.impostor.size)
    return {
        **target.as_dict(),
        "far_at_tau": ours.at_target.far,
        "fpir_at_tau": round(target.fpir(ours.at_target.far), 6),
        "measurable": target.target_far >= 1.0 / impostors,
    }


def evaluate_pipeline(
    scored: ScoredPairs,
    *,
    pipeline: str,
    condition: str,
    reference_tau: float,
    settings: ThresholdSettings,
    with_interval: bool = False,
) -> PipelineResult:
    """ROC, EER, AUC and operating points of one pipeline's pair distances."""
    scores = scored.scores
    curve = roc_curve(scores)
    eer, eer_tau = equal_error_rate(curve)
    interval = None
    if with_interval:
        interval = bootstrap_tau_at_far(
            scores,
            settings.target_far,
            resamples=settings.bootstrap_resamples,
            seed=settings.seed,
        )
    return PipelineResult(
        pipeline=pipeline,
        condition=condition,
        scored=scored,
        auc=area_under_curve(curve),
        eer=eer,
        eer_tau=eer_tau,
        best=best_accuracy_point(scores, curve),
        reference=operating_point(scores, reference_tau),
        at_target=operating_point(scores, tau_at_far(scores, settings.target_far, curve)),
        at_far_1e3=operating_point(scores, tau_at_far(scores, 1e-3, curve)),
        tau_interval=interval,
    )


def _stage_progress(progress: Progress | None, stage: str) -> Callable[[int, int], None] | None:
    if progress is None:
        return None

    def report(done: int, total: int) -> None:
        progress(stage, done, total)

    return report


def calibrate_threshold(
    pairs: PairSet,
    analyzer: FaceAnalyzer,
    settings: ThresholdSettings,
    *,
    progress: Progress | None = None,
) -> ThresholdReport:
    """Measure facestream (and the baseline) on ``pairs``; see the module docstring."""
    if len(pairs) < MIN_PAIRS:
        raise CalibrationDataError(
            f"{pairs.source}: {len(pairs)} pairs; calibration needs at least {MIN_PAIRS}"
        )
    started = time.perf_counter()
    embedders: list[tuple[FaceEmbedder, float]] = [
        (PipelineEmbedder(analyzer), settings.service_tau)
    ]
    if settings.baseline:
        embedders.append((FaceRecognitionEmbedder(), FACE_RECOGNITION_TOLERANCE))
    images = pairs.images
    results = []
    clean_ours: ImageEmbeddings | None = None
    for condition in (None, *settings.degradations):
        for embedder, reference_tau in embedders:
            stage = f"{embedder.name} {condition or 'clean'}"
            embeddings = embed_images(
                images,
                embedder,
                condition=condition,
                face_widths=clean_ours,
                seed=settings.seed,
                progress=_stage_progress(progress, stage),
            )
            if condition is None and embedder.name == PipelineEmbedder.name:
                clean_ours = embeddings
            results.append(
                evaluate_pipeline(
                    score_pairs(pairs, embeddings),
                    pipeline=embedder.name,
                    condition=condition or "clean",
                    reference_tau=reference_tau,
                    settings=settings,
                    with_interval=condition is None and embedder.name == PipelineEmbedder.name,
                )
            )
    return ThresholdReport(
        model_id=analyzer.model_id,
        source=pairs.source,
        settings=settings,
        results=tuple(results),
        seconds=time.perf_counter() - started,
    )


# ---------------------------------------------------------------------------------------------
# tau bound to the encoder's model id


@dataclass(frozen=True, slots=True)
class CalibratedTau:
    """A calibrated threshold and what it is valid for: the encoder ``model_id`` whose
    distances it was measured on, the target FAR, and the FAR/FRR it had on ``n_pairs`` pairs."""

    model_id: str
    tau: float
    target_far: float
    far: float
    frr: float
    n_pairs: int
    source: str
    tau_interval: tuple[float, float] | None = None
    gallery_size: int | None = None  # the 1:N gallery size tau was chosen for, if any
    target_fpir: float | None = None

    @classmethod
    def from_report(cls, report: ThresholdReport) -> CalibratedTau:
        """The deployable tau of a calibration run."""
        ours = report.ours
        interval = ours.tau_interval
        open_set = report.settings.open_set
        return cls(
            model_id=report.model_id,
            tau=ours.at_target.tau,
            target_far=report.settings.target_far,
            far=ours.at_target.far,
            frr=ours.at_target.frr,
            n_pairs=len(ours.scored.scores),
            source=str(report.source),
            tau_interval=None if interval is None else (interval.low, interval.high),
            gallery_size=None if open_set is None else open_set.gallery_size,
            target_fpir=None if open_set is None else open_set.target_fpir,
        )

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form, as stored in ``tau.json``."""
        return {
            "model_id": self.model_id,
            "tau": self.tau,
            "target_far": self.target_far,
            "far": self.far,
            "frr": self.frr,
            "n_pairs": self.n_pairs,
            "source": self.source,
            "tau_interval": None if self.tau_interval is None else list(self.tau_interval),
            "gallery_size": self.gallery_size,
            "target_fpir": self.target_fpir,
        }


def tau_file(data_dir: Path) -> Path:
    """Where the calibrated tau lives: ``data_dir/calibration/tau.json``."""
    return data_dir / TAU_FILE


def save_calibrated_tau(data_dir: Path, calibrated: CalibratedTau) -> Path:
    """Write ``calibrated`` to ``tau_file(data_dir)`` atomically; returns the path."""
    path = tau_file(data_dir)
    atomic_write(path, (json.dumps(calibrated.as_dict(), indent=2) + "\n").encode())
    _log.info("saved tau %.4f for model %s to %s", calibrated.tau, calibrated.model_id, path)
    return path


def read_calibrated_tau(data_dir: Path) -> CalibratedTau | None:
    """The stored calibration, or None when none was saved; ThresholdFileError if unreadable."""
    path = tau_file(data_dir)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ThresholdFileError(f"{path}: cannot read the calibrated tau: {exc}") from exc
    try:
        interval = raw.get("tau_interval")
        return CalibratedTau(
            model_id=str(raw["model_id"]),
            tau=float(raw["tau"]),
            target_far=float(raw["target_far"]),
            far=float(raw["far"]),
            frr=float(raw["frr"]),
            n_pairs=int(raw["n_pairs"]),
            source=str(raw["source"]),
            tau_interval=None if interval is None else (float(interval[0]), float(interval[1])),
            gallery_size=None if raw.get("gallery_size") is None else int(raw["gallery_size"]),
            target_fpir=None if raw.get("target_fpir") is None else float(raw["target_fpir"]),
        )
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise ThresholdFileError(
            f"{path}: not a calibrated tau file (model_id, tau, target_far, far, frr, n_pairs, "
            f"source): {exc!r}"
        ) from exc


def load_calibrated_tau(data_dir: Path, model_id: str) -> float | None:
    """The tau calibrated for encoder ``model_id``, or None when no calibration was saved.

    ThresholdModelMismatchError when the saved tau was measured on another model's distances:
    re-run `facestream calibrate threshold` with the encoder in use.
    """
    calibrated = read_calibrated_tau(data_dir)
    if calibrated is None:
        return None
    if calibrated.model_id != model_id:
        raise ThresholdModelMismatchError(
            f"{tau_file(data_dir)}: tau {calibrated.tau:.4f} was calibrated for model "
            f"{calibrated.model_id!r}, but the encoder in use is {model_id!r}; run "
            "`facestream calibrate threshold --pairs CSV` again with this encoder"
        )
    return calibrated.tau
