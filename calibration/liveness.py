"""Liveness error rates (ISO/IEC 30107-3): APCER per attack type, BPCER, ACER.

Each clip is run through the service's own parts (the BlazeFace detector, the IoU tracker and
``LivenessJudge``; ``calibration.liveness_clips``); its decision is its main face track's (most
frames, then largest) first verdict other than "undecided", as at a door (below). A track never
decided counts against bona fide clips (the door stays closed) and as rejected for attacks.
Clips come from either

- a manifest CSV (``path,label``; label ``bona_fide`` (or ``live``) or an attack type such as
  ``print`` or ``replay``; paths relative to the CSV's folder; each a video or an image), or
- the shared data folder (``calibration.liveness_dataset``): bona fide windows of every face
  track of the face videos listed in ``video/labels.csv`` (``bona_fide_windows``), synthetic
  print attacks from single-face photos of ``faces/labels.csv``, synthetic screen replays of
  those video windows and photos (``calibration.liveness_attacks``), all at ``fps``; plus the
  real samples of ``liveness/labels.csv``, reported apart.
  The data is cut into two disjoint splits (``split_of_window``, ``split_of_photo``): "tune"
  (what thresholds, weights and the texture model are fitted on, ``calibration.tune_liveness``)
  and "report" (what the figures in docs/liveness.md come from; the default).

A clip counts as accepted when its main track's first decided verdict is "live": the door policy
(``pipeline.access.policy``) opens on a "live" verdict and locks a track out (``spoof_suspected``)
on a
"spoof" one, whichever comes first. So a bona fide clip must become live within the clip
without first being called a spoof, and an attack must never be live before it is a spoof.

Images are decided by ``stills``: "passive" (the default) judges the image's largest face by
the cues one frame carries (``LivenessJudge.judge_still``: CNN and texture), as a passive
anti-spoofing check of an uploaded photo would; "clip" holds the image still for
``clip_seconds`` and runs it as a video, where it can never become "live" (no motion), which is
what a door camera does with a motionless face.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from calibration.errors import CalibrationDataError
from calibration.liveness_attacks import Clip
from calibration.liveness_clips import ClipJudge, ClipResult, Still
from calibration.liveness_dataset import (
    BONA_FIDE,
    EvalSettings,
    bona_fide_windows,
    judge_real_samples,
    manifest_clips,
    scaled_item,
    synthetic_clips,
)
from engines.models.antispoof import load_liveness_engine
from engines.store import ModelStore

__all__ = ["iso_metrics", "run_liveness_eval", "write_det_plot"]

_log = logging.getLogger(__name__)


def iso_metrics(results: list[ClipResult]) -> dict[str, object]:
    """APCER per attack type (attacks accepted: first decided "live"), BPCER (bona fide clips
    not accepted), ACER (max APCER + BPCER) / 2, median time to decision."""
    bona_fide = [item for item in results if item.label == BONA_FIDE]
    attack_types = sorted({item.label for item in results if item.label != BONA_FIDE})
    if not bona_fide or not attack_types:
        raise CalibrationDataError("liveness evaluation needs bona fide and attack clips")
    apcer = {
        kind: float(np.mean([item.accepted for item in results if item.label == kind]))
        for kind in attack_types
    }
    bpcer = float(np.mean([not item.accepted for item in bona_fide]))
    times = [item.decision_seconds for item in results if item.decision_seconds is not None]
    return {
        "apcer": apcer,
        "bpcer": bpcer,
        "acer": (max(apcer.values()) + bpcer) / 2,
        "median_time_to_decision_s": float(np.median(times)) if times else None,
        "clips": {
            kind: sum(item.label == kind for item in results) for kind in [BONA_FIDE, *attack_types]
        },
    }


def write_det_plot(results: list[ClipResult], path: Path) -> Path:
    """DET curve per attack type, PNG: BPCER against APCER as a threshold moves over each
    clip's fused score at its end. A view of how well the final scores separate; the reported
    operating point (the door's first-decision rule, gated on motion) need not lie on it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
    from matplotlib.figure import Figure  # noqa: PLC0415

    figure = Figure(figsize=(5, 5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    bona_fide = np.array([item.liveness.score for item in results if item.label == BONA_FIDE])
    thresholds = np.linspace(0.0, 1.0, 201)
    bpcer = [(bona_fide < threshold).mean() for threshold in thresholds]
    for kind in sorted({item.label for item in results} - {BONA_FIDE}):
        scores = np.array([item.liveness.score for item in results if item.label == kind])
        apcer = [(scores >= threshold).mean() for threshold in thresholds]
        axes.plot(apcer, bpcer, label=kind)
    axes.set_xlabel("APCER (attacks accepted)")
    axes.set_ylabel("BPCER (bona fide rejected)")
    axes.set_title("liveness DET (fused score)")
    axes.grid(True, alpha=0.3)
    axes.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path


def run_liveness_eval(settings: EvalSettings, *, det_plot: Path | None = None) -> dict[str, object]:
    """Run the evaluation ``settings`` describe; the ISO figures, per-clip results, and the
    real samples' outcomes as one JSON-ready dict."""
    started = time.perf_counter()
    store = ModelStore(settings.store_dir)
    engine = None
    if settings.liveness.cnn:
        engine = load_liveness_engine(store, source_dir=settings.minifasnet_dir)
    clip_judge = ClipJudge(store, settings.liveness, engine)
    try:
        clips: list[Clip | Still]
        if settings.manifest is not None:
            clips = manifest_clips(settings.manifest, settings)
        else:
            clips = list(synthetic_clips(settings, bona_fide_windows(settings, clip_judge)))
        results = []
        for clip in clips:
            results.append(clip_judge.judge_any(scaled_item(clip, settings.frame_scale)))
            _log.info("%s %s -> %s", clip.label, clip.source, results[-1].liveness.verdict)
        report = iso_metrics(results)
        real = (
            []
            if settings.manifest is not None
            else judge_real_samples(settings.data_dir, clip_judge, settings)
        )
    finally:
        clip_judge.close()
        if engine is not None:
            engine.close()
    if det_plot is not None:
        report["det_plot"] = str(write_det_plot(results, det_plot))
    report["split"] = "manifest" if settings.manifest is not None else settings.split
    report["seed"] = settings.seed
    report["stills"] = settings.stills
    report["frame_scale"] = settings.frame_scale
    if settings.manifest is None:
        report["backgrounds"] = "scenes" if settings.scene_backgrounds else "plain"
    report["real_samples"] = [item.as_dict() for item in real]
    real_labels = {item.label for item in real}
    if BONA_FIDE in real_labels and len(real_labels) > 1:
        report["real_samples_iso"] = {
            key: value
            for key, value in iso_metrics(real).items()
            if key in ("apcer", "bpcer", "acer", "clips")
        }
    report["results"] = [item.as_dict() for item in results]
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report
