"""Fit the texture model and tune the liveness fusion on the *tune* split only.

    python -m calibration.tune_liveness [--seed 1] [--l2 20.0] [--store data]
                                        [--write-texture-model]

1. The tune split of the shared data (``calibration.liveness``: bona fide windows of the face
   tracks of the tune half, synthetic prints and replays from the tune photos and windows, made
   with the attack generator's ``--seed``, 1 by default; the report figures use seed 7 and the
   other half) goes once through BlazeFace, the tracker and ``LivenessJudge`` with every cue on;
   for the main track of every clip each frame's cues are kept, and every second frame the
   texture features of the face (``pipeline.liveness.texture``).
2. The texture model: an L2-regularised logistic regression on the standardised features,
   bona fide faces against print and replay faces, each clip weighing the same and both
   classes half. Bona fide faces are the windows' and, texture only, each tune photo through
   the camera model (``_bona_fide_stills``): the prints and photo replays are made of those
   same photos. ``--write-texture-model`` writes its coefficients to
   ``pipeline/liveness/texture_model.py``.
3. The fusion: a grid over the cue weights, the parallax neutral ratio, the live threshold
   and the frames a track needs before any verdict (``min_frames``), replaying each clip's
   recorded cues frame by frame as ``LivenessJudge.verdict`` would combine them (a clip is
   accepted when its first decided verdict is "live", as in ``calibration.liveness``). The
   chosen setting minimises ACER on the tune split, ties going to the fewest frames before a
   verdict, then to the widest mean log-odds margin from the threshold; it is printed (last
   line, JSON) for
   ``pipeline/liveness/config.py``, not written there.

The figures this prints are *tune* figures; report figures come from
``facestream eval liveness`` (the report split), which this script never reads.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from calibration.liveness_attacks import bona_fide_clip
from calibration.liveness_clips import ClipJudge
from calibration.liveness_dataset import (
    BONA_FIDE,
    EvalSettings,
    bona_fide_windows,
    read_photo,
    split_photos,
    synthetic_clips,
)
from engines.models.antispoof import load_liveness_engine
from engines.store import ModelStore
from pipeline.liveness import Liveness, LivenessConfig
from pipeline.liveness.fusion import fuse
from pipeline.liveness.texture import (
    TEXTURE_FEATURES,
    TextureModel,
    flicker_live_probability,
    texture_features,
    texture_patch,
)

__all__ = ["ClipTrace", "Fusion", "fit_texture_model", "main", "replay_verdicts"]

_MODEL_FILE = Path(__file__).resolve().parents[1] / "pipeline" / "liveness" / "texture_model.py"
_TEXTURE_WINDOW = 30  # texture scores the judge averages (LivenessJudge keeps window_frames)
_CNN_OVER_TEXTURE = 2.0  # the least ratio of the CNN's weight to the texture cue's (tune_fusion)


@dataclass(slots=True)
class ClipTrace:
    """One clip's main track: its label, each frame's liveness, and texture features of every
    second frame (frame position in the track -> features)."""

    label: str
    source: str
    frames: list[dict[str, float]] = field(default_factory=list)
    features: dict[int, npt.NDArray[np.float32]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form (``--cache``)."""
        return {
            "label": self.label,
            "source": self.source,
            "frames": self.frames,
            "features": {str(key): value.tolist() for key, value in self.features.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClipTrace:
        """The inverse of ``as_dict``."""
        features = {
            int(key): np.asarray(value, np.float32) for key, value in data["features"].items()
        }
        return cls(str(data["label"]), str(data["source"]), list(data["frames"]), features)


def record(settings: EvalSettings, store: ModelStore) -> list[ClipTrace]:
    """Run the tune clips with every cue on and keep each main track's evidence."""
    config = LivenessConfig(enabled=True, texture=True, flicker_weight=1.0, texture_weight=1.0)
    engine = load_liveness_engine(store, source_dir=settings.minifasnet_dir)
    clip_judge = ClipJudge(store, config, engine)
    traces = []
    try:
        clips = synthetic_clips(settings, bona_fide_windows(settings, clip_judge))
        for number, clip in enumerate(clips):
            seen: list[tuple[int, int, npt.NDArray[np.float32], Liveness]] = []
            result = clip_judge.judge(clip, trace=seen)
            trace = ClipTrace(clip.label, clip.source)
            for track_id, index, box, liveness in seen:
                if track_id != result.main_track:
                    continue
                position = len(trace.frames)
                trace.frames.append(dict(liveness.cues))
                if position % 2 == 0:
                    patch = texture_patch(clip.frames[index], box)
                    if patch is not None:
                        trace.features[position] = texture_features(patch)
            traces.append(trace)
            print(f"{number + 1}/{len(clips)} {clip.label} {clip.source}", file=sys.stderr)
        traces += _bona_fide_stills(settings, clip_judge)
    finally:
        clip_judge.close()
        engine.close()
    return traces


def _bona_fide_stills(settings: EvalSettings, clip_judge: ClipJudge) -> list[ClipTrace]:
    """Texture-only bona fide samples: each photo of the split (a camera's picture of a real
    person) through the camera model, features of its face. The prints and photo replays are
    made of the same photos, so the texture model must learn what printing and screens add,
    not "video frame against photo"."""
    rng = np.random.default_rng(settings.seed + 1000)
    traces = []
    for path in split_photos(settings):
        frame = bona_fide_clip((read_photo(settings, path),), fps=settings.fps, rng=rng).frames[0]
        tracks = clip_judge.tracks([frame])
        boxes = [boxes[0] for boxes in tracks.values()]
        if not boxes:
            continue
        box = max(boxes, key=lambda item: float(item[2] - item[0]))
        patch = texture_patch(frame, box)
        if patch is not None:
            trace = ClipTrace(BONA_FIDE, f"{path} (still)")
            trace.features[0] = texture_features(patch)
            traces.append(trace)
    return traces


def fit_texture_model(traces: list[ClipTrace], *, l2: float = 1.0) -> TextureModel:
    """Logistic regression (Newton steps, L2 ``l2`` on the weights) of bona fide (1) against
    attacks (0) on standardised texture features; every clip weighs the same, classes half."""
    rows, labels, weights = [], [], []
    live_clips = sum(1 for item in traces if item.label == BONA_FIDE and item.features)
    attack_clips = sum(1 for item in traces if item.label != BONA_FIDE and item.features)
    for trace in traces:
        if not trace.features:
            continue
        live = trace.label == BONA_FIDE
        per_clip = 0.5 / (live_clips if live else attack_clips) / len(trace.features)
        for features in trace.features.values():
            rows.append(features.astype(np.float64))
            labels.append(1.0 if live else 0.0)
            weights.append(per_clip)
    data = np.stack(rows)
    target, weight = np.asarray(labels), np.asarray(weights) * len(rows)
    means = data.mean(axis=0)
    scales = np.maximum(data.std(axis=0), 1e-6)
    design = np.hstack([(data - means) / scales, np.ones((len(rows), 1))])
    penalty = np.diag([l2] * len(TEXTURE_FEATURES) + [0.0])
    beta = np.zeros(design.shape[1])
    for _ in range(50):
        probability = 1.0 / (1.0 + np.exp(-np.clip(design @ beta, -30, 30)))
        gradient = design.T @ (weight * (probability - target)) + penalty @ beta
        hessian = (design * (weight * probability * (1 - probability))[:, None]).T @ design
        step = np.linalg.solve(hessian + penalty + 1e-9 * np.eye(len(beta)), gradient)
        beta -= step
        if float(np.abs(step).max()) < 1e-8:
            break
    return TextureModel(
        means=tuple(round(float(value), 6) for value in means),
        scales=tuple(round(float(value), 6) for value in scales),
        weights=tuple(round(float(value), 6) for value in beta[:-1]),
        bias=round(float(beta[-1]), 6),
    )


@dataclass(frozen=True, slots=True)
class Fusion:
    """One candidate setting of the fusion (the names of ``LivenessConfig``'s fields)."""

    parallax_weight: float
    parallax_planar_ratio: float
    cnn_weight: float
    texture_weight: float
    flicker_weight: float
    surround_weight: float
    live_threshold: float
    spoof_threshold: float
    min_frames: int


def replay_verdicts(trace: ClipTrace, texture: TextureModel, fusion: Fusion) -> tuple[bool, float]:
    """Replay a recorded track under ``fusion`` as the evaluation decides it: (accepted, i.e.
    the first decided verdict is "live"; the score that decided it, or while undecided the
    highest score at which it could have become live (after ``fusion.min_frames``, with
    parallax evidence), 0 if none)."""
    weights = {
        "parallax": fusion.parallax_weight,
        "cnn": fusion.cnn_weight,
        "texture": fusion.texture_weight,
        "flicker": fusion.flicker_weight,
        "surround": fusion.surround_weight,
    }
    scores: list[float] = []
    highest = 0.0
    for position, cues in enumerate(trace.frames):
        if position in trace.features:
            scores.append(texture.live_probability(trace.features[position]))
        probabilities = {}
        if "parallax_ratio" in cues and "parallax" in cues:
            ratio = cues["parallax_ratio"] - fusion.parallax_planar_ratio
            probabilities["parallax"] = 1.0 / (1.0 + math.exp(-10.0 * ratio))
        if "cnn" in cues:
            probabilities["cnn"] = cues["cnn"]
        if "surround" in cues:
            probabilities["surround"] = cues["surround"]
        if scores:
            probabilities["texture"] = float(np.mean(scores[-_TEXTURE_WINDOW:]))
            if "flicker_statistic" in cues:
                probabilities["flicker"] = flicker_live_probability(cues["flicker_statistic"])
        if position + 1 < fusion.min_frames:
            continue
        score = fuse(probabilities, weights)
        if score <= fusion.spoof_threshold:
            return False, score  # a door locks the track out on its first "spoof"
        if "parallax" in probabilities:
            if score >= fusion.live_threshold:
                return True, score
            highest = max(highest, score)
    return False, highest


def _margin(score: float, threshold: float, live: bool) -> float:
    """Log-odds distance of ``score`` from ``threshold`` on the right side (negative: wrong),
    capped at 2 so that easy clips do not outweigh hard ones."""
    clipped = min(max(score, 1e-4), 1 - 1e-4)
    distance = math.log(clipped / (1 - clipped)) - math.log(threshold / (1 - threshold))
    return min(distance if live else -distance, 2.0)


def evaluate(traces: list[ClipTrace], texture: TextureModel, fusion: Fusion) -> dict[str, float]:
    """APCER per attack type, BPCER, ACER and the mean capped margin of ``fusion`` on recorded
    traces (bona fide and attacks weighing half each)."""
    accepted: dict[str, list[bool]] = {}
    margins: dict[bool, list[float]] = {True: [], False: []}
    for trace in traces:
        if not trace.frames:
            continue  # a texture-only sample (a bona fide still)
        live, highest = replay_verdicts(trace, texture, fusion)
        accepted.setdefault(trace.label, []).append(live)
        bona_fide = trace.label == BONA_FIDE
        margins[bona_fide].append(_margin(highest, fusion.live_threshold, bona_fide))
    bpcer = 1.0 - float(np.mean(accepted.get(BONA_FIDE, [False])))
    apcer = {key: float(np.mean(value)) for key, value in accepted.items() if key != BONA_FIDE}
    margin = (float(np.mean(margins[True] or [0.0])) + float(np.mean(margins[False] or [0.0]))) / 2
    return {**{f"apcer_{key}": value for key, value in apcer.items()}, "bpcer": bpcer,
            "acer": (max(apcer.values()) + bpcer) / 2, "margin": margin}  # fmt: skip


def tune_fusion(traces: list[ClipTrace], texture: TextureModel) -> tuple[Fusion, dict[str, float]]:
    """The grid point with the lowest ACER; ties go to the fewest frames before a verdict (a
    door must decide fast), then to the widest mean margin. Flicker stays off (on the real
    clips it is as high as on screens, docs/liveness.md), and the CNN weighs at least
    ``_CNN_OVER_TEXTURE`` times the texture cue: the texture model is fitted to these same
    synthetic attacks, and on real captures it does not separate live from attack while the
    CNN does (docs/liveness.md), so the synthetic tune split must not trade one for the other."""
    grid = itertools.product(
        (1.0, 1.6, 2.4),  # parallax weight
        (0.4, 0.45, 0.5, 0.55),  # parallax neutral ratio
        (0.5, 1.0, 1.5, 2.0),  # cnn weight
        (0.0, 0.5, 1.0),  # texture weight
        (0.0,),  # flicker weight
        (0.0, 1.0, 2.0),  # surround weight
        (0.6, 0.7, 0.8),  # live threshold
        (0.2, 0.3, 0.4),  # spoof threshold
        (6, 9, 12, 15),  # frames before any verdict (min_frames; 15 = 1 s at 15 fps)
    )
    best: tuple[tuple[float, ...], Fusion, dict[str, float]] | None = None
    for values in grid:
        fusion = Fusion(*values)
        if fusion.cnn_weight < _CNN_OVER_TEXTURE * fusion.texture_weight:
            continue
        figures = evaluate(traces, texture, fusion)
        key = (round(figures["acer"], 6), fusion.min_frames, -figures["margin"])
        if best is None or key < best[0]:
            best = (key, fusion, figures)
    assert best is not None
    return best[1], best[2]


def write_texture_model(model: TextureModel, command: str) -> Path:
    """Write ``model`` as pipeline/liveness/texture_model.py."""
    text = f'''"""Default coefficients of the texture cue's logistic model (``TextureModel``).

Fitted by the project on the tune split of its synthetic evaluation only (bona fide face-track
windows of ../shared/data/video and the tune photos of ../shared/data/faces through the camera
model, against synthetic prints and screen replays of the same photos and windows from
``calibration.liveness_attacks``, seed 1; docs/liveness.md). It has never seen a real print or
a real screen. Reproduce with:

    {command}
"""

from __future__ import annotations

from pipeline.liveness.texture import TextureModel

__all__ = ["DEFAULT_TEXTURE_MODEL"]

# feature order: {", ".join(TEXTURE_FEATURES)}
DEFAULT_TEXTURE_MODEL = TextureModel(
    means={model.means!r},
    scales={model.scales!r},
    weights={model.weights!r},
    bias={model.bias!r},
)
'''
    _MODEL_FILE.write_text(text, encoding="utf-8")
    return _MODEL_FILE


def main() -> None:
    """Record the tune split, fit, tune; progress on stderr, one JSON object last on stdout."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1, help="attack generator seed (tune)")
    parser.add_argument("--store", type=Path, default=Path("data"), help="model store")
    parser.add_argument("--l2", type=float, default=20.0, help="texture model L2 penalty")
    parser.add_argument("--write-texture-model", action="store_true")
    parser.add_argument("--cache", type=Path, help="JSON of recorded traces (reused if present)")
    args = parser.parse_args()
    settings = EvalSettings(store_dir=args.store, seed=args.seed, split="tune")
    if args.cache is not None and args.cache.is_file():
        cached = json.loads(args.cache.read_text(encoding="utf-8"))
        traces = [ClipTrace.from_dict(item) for item in cached]
    else:
        traces = record(settings, ModelStore(args.store))
        if args.cache is not None:
            args.cache.write_text(json.dumps([item.as_dict() for item in traces]), "utf-8")
    model = fit_texture_model(traces, l2=args.l2)
    if args.write_texture_model:
        command = f"python -m calibration.tune_liveness --seed {args.seed} --l2 {args.l2} "
        print(f"wrote {write_texture_model(model, command + '--write-texture-model')}",
              file=sys.stderr)  # fmt: skip
    fusion, figures = tune_fusion(traces, model)
    print(
        json.dumps(
            {
                "split": "tune",
                "seed": args.seed,
                "clips": {label: sum(t.label == label for t in traces) for label in
                          sorted({t.label for t in traces})},
                "texture_model": {
                    "features": list(TEXTURE_FEATURES),
                    "weights": model.weights,
                    "bias": model.bias,
                },
                "fusion": {name: getattr(fusion, name) for name in Fusion.__slots__},
                "tune_figures": figures,
            }
        )
    )  # fmt: skip


if __name__ == "__main__":
    main()
