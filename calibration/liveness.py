"""Liveness error rates (ISO/IEC 30107-3): APCER per attack type, BPCER, ACER.

Each clip is run through the service's own parts (the BlazeFace detector, the IoU tracker and
``LivenessJudge``); its decision is the verdict of its main face track (most frames, then
largest) at the end of the clip. "undecided" counts against bona fide clips (the door stays
closed) and as rejected for attacks. Clips come from either

- a manifest CSV (``path,label``; label ``bona_fide`` or an attack type such as ``print`` or
  ``replay``; paths relative to the CSV's folder; each a video or an image, an image being a
  still clip), or
- the shared data folder: bona fide segments of the face videos listed in
  ``video/labels.csv``, synthetic print attacks from single-face photos of
  ``faces/labels.csv``, synthetic screen replays of those video segments and photos
  (``calibration.liveness_attacks``), all at ``fps``; plus the real samples of
  ``liveness/labels.csv``, reported apart (they are single images: a still is never "live").
"""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from calibration.errors import CalibrationDataError, PairsFileError
from calibration.liveness_attacks import (
    Clip,
    bona_fide_clip,
    print_attack,
    replay_attack,
)
from engines.base import Engine
from engines.liveness import load_liveness_engine
from engines.store import ModelStore
from pipeline.blazeface import BlazeFaceConfig
from pipeline.detect import load_detector
from pipeline.images import decode_image
from pipeline.liveness import Liveness, LivenessConfig, LivenessJudge
from pipeline.track import FaceTracker, TrackConfig, face_qualities

__all__ = [
    "ClipResult",
    "EvalSettings",
    "default_shared_data",
    "iso_metrics",
    "run_liveness_eval",
    "write_det_plot",
]

_log = logging.getLogger(__name__)
BONA_FIDE = "bona_fide"
_VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm"}


def default_shared_data() -> Path:
    """``../shared/data`` beside the repository (or beside the working directory)."""
    candidates = [
        Path(__file__).resolve().parents[1].parent / "shared" / "data",
        Path.cwd().resolve().parent / "shared" / "data",
        Path.cwd().resolve() / "shared" / "data",
    ]
    return next((path for path in candidates if path.is_dir()), candidates[0])


@dataclass(frozen=True, slots=True)
class EvalSettings:
    """What the evaluation runs on. fps: frame rate clips are sampled at; clip_seconds: length
    of each clip; frame_width_px: frames are resized to this width; max_prints / max_replays:
    synthetic attacks made (sources drawn at random with ``seed``)."""

    data_dir: Path = field(default_factory=default_shared_data)
    store_dir: Path = Path("data")
    manifest: Path | None = None
    minifasnet_dir: Path | None = None
    seed: int = 7
    fps: float = 15.0
    clip_seconds: float = 3.0
    frame_width_px: int = 640
    max_prints: int = 24
    max_replays: int = 16
    liveness: LivenessConfig = field(
        default_factory=lambda: LivenessConfig(enabled=True)  # the eval judges liveness
    )


@dataclass(frozen=True, slots=True)
class ClipResult:
    """One clip's outcome: its label, the main track's final liveness, and the seconds from
    the track's first frame to its first non-undecided verdict (None if never decided)."""

    source: str
    label: str
    liveness: Liveness
    decision_seconds: float | None

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "source": self.source,
            "label": self.label,
            "verdict": self.liveness.verdict,
            "score": round(self.liveness.score, 4),
            "cues": {name: round(value, 4) for name, value in self.liveness.cues.items()},
            "decision_seconds": self.decision_seconds,
        }


def _resize(image: npt.NDArray[np.uint8], width: int) -> npt.NDArray[np.uint8]:
    if image.shape[1] == width:
        return image
    height = round(image.shape[0] * width / image.shape[1])
    interpolation = cv2.INTER_AREA if width < image.shape[1] else cv2.INTER_LINEAR
    return np.ascontiguousarray(cv2.resize(image, (width, height), interpolation=interpolation))


def read_video(path: Path, *, fps: float, width: int) -> list[npt.NDArray[np.uint8]]:
    """Frames of a video sampled at about ``fps`` and resized to ``width`` (BGR uint8)."""
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise PairsFileError(f"{path}: cannot open the video")
    source_fps = capture.get(cv2.CAP_PROP_FPS) or fps
    step = max(source_fps / fps, 1.0)
    frames: list[npt.NDArray[np.uint8]] = []
    index, next_kept = 0, 0.0
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            if index >= next_kept:
                frames.append(_resize(np.asarray(frame, np.uint8), width))
                next_kept += step
            index += 1
    finally:
        capture.release()
    if not frames:
        raise PairsFileError(f"{path}: no decodable frame")
    return frames


def read_image_bgr(path: Path) -> npt.NDArray[np.uint8]:
    """An image file as BGR uint8, EXIF orientation applied, alpha dropped."""
    rgb = decode_image(path.read_bytes(), name=str(path))
    return np.ascontiguousarray(rgb[:, :, ::-1])


def _rows(path: Path) -> list[dict[str, str]]:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))
    except OSError as exc:
        raise PairsFileError(f"{path}: cannot read: {exc.strerror}") from exc


def _segments(
    frames: list[npt.NDArray[np.uint8]], length: int
) -> Iterator[tuple[npt.NDArray[np.uint8], ...]]:
    for start in range(0, len(frames) - length + 1, length):
        yield tuple(frames[start : start + length])


def synthetic_clips(settings: EvalSettings) -> list[Clip]:
    """Bona fide video segments and synthetic print / replay attacks from the shared data."""
    rng = np.random.default_rng(settings.seed)
    length = round(settings.clip_seconds * settings.fps)
    size = (settings.frame_width_px, round(settings.frame_width_px * 3 / 4))
    data = settings.data_dir
    clips: list[Clip] = []
    segments: list[tuple[str, tuple[npt.NDArray[np.uint8], ...]]] = []
    for row in _rows(data / "video" / "labels.csv"):
        if row.get("kind") != "face":
            continue
        frames = read_video(data / "video" / row["path"], fps=settings.fps, width=size[0])
        for number, segment in enumerate(_segments(frames, length)):
            segments.append((f"{row['path']}#{number}", segment))
    for name, segment in segments:
        clips.append(bona_fide_clip(segment, fps=settings.fps, rng=rng, source=name))
    photos = [
        row["path"]
        for row in _rows(data / "faces" / "labels.csv")
        if row.get("n_faces") == "1" and not row.get("duplicate_of")
    ]
    order = rng.permutation(len(photos))
    for index in order[: settings.max_prints]:
        photo = _resize_longest(read_image_bgr(data / "faces" / photos[index]), 480)
        clips.append(
            print_attack(
                photo,
                frame_count=length,
                fps=settings.fps,
                frame_size=size,
                rng=rng,
                source=photos[index],
            )
        )
    replay_sources: list[tuple[str, tuple[npt.NDArray[np.uint8], ...]]] = list(segments)
    replay_sources += [
        (photos[index], (_resize_longest(read_image_bgr(data / "faces" / photos[index]), 480),))
        for index in order[settings.max_prints :][: max(settings.max_replays // 2, 1)]
    ]
    for number in range(settings.max_replays):
        name, shown = replay_sources[number % len(replay_sources)]
        clips.append(
            replay_attack(
                shown,
                frame_count=length,
                fps=settings.fps,
                frame_size=size,
                rng=rng,
                source=name,
            )
        )
    return clips


def _resize_longest(image: npt.NDArray[np.uint8], longest: int) -> npt.NDArray[np.uint8]:
    scale = longest / max(image.shape[:2])
    return _resize(image, round(image.shape[1] * scale)) if scale < 1 else image


def manifest_clips(manifest: Path, settings: EvalSettings) -> list[Clip]:
    """Clips named by a ``path,label`` CSV (paths relative to its folder)."""
    length = round(settings.clip_seconds * settings.fps)
    clips = []
    for row in _rows(manifest):
        if "path" not in row or "label" not in row:
            raise PairsFileError(f"{manifest}: expected the header path,label")
        path = manifest.parent / row["path"]
        if path.suffix.lower() in _VIDEO_SUFFIXES:
            frames = tuple(read_video(path, fps=settings.fps, width=settings.frame_width_px))
        else:
            still = _resize(read_image_bgr(path), settings.frame_width_px)
            frames = (still,) * length
        clips.append(Clip(frames, settings.fps, row["label"].strip(), row["path"]))
    return clips


class ClipJudge:
    """Detector + tracker + liveness judge, fresh per clip, as the service runs them."""

    def __init__(self, store: ModelStore, config: LivenessConfig, engine: Engine | None) -> None:
        self._detector = load_detector(BlazeFaceConfig(threads=1), store)
        self._config = config
        self._engine = engine

    def judge(self, clip: Clip) -> ClipResult:
        """The main track's final liveness and its time to decision."""
        tracker = FaceTracker(TrackConfig())
        judge = LivenessJudge(self._config, self._engine)
        frames_seen: dict[int, int] = {}
        widths: dict[int, float] = {}
        first_frame: dict[int, int] = {}
        decided_frame: dict[int, int] = {}
        last_verdict: dict[int, Liveness] = {}
        for index, frame in enumerate(clip.frames):
            faces = self._detector.detect(np.ascontiguousarray(frame[:, :, ::-1]))
            update = tracker.update(index, faces, face_qualities(faces))
            judge.observe(frame, faces, update.track_ids)
            for row, track_id in enumerate(update.track_ids.tolist()):
                frames_seen[track_id] = frames_seen.get(track_id, 0) + 1
                widths[track_id] = max(widths.get(track_id, 0.0), float(faces.widths_px[row]))
                first_frame.setdefault(track_id, index)
                last_verdict[track_id] = judge.verdict(track_id)
                if track_id not in decided_frame and last_verdict[track_id].verdict != "undecided":
                    decided_frame[track_id] = index
        if not frames_seen:
            return ClipResult(clip.source, clip.label, Liveness.undecided(), None)
        main = max(frames_seen, key=lambda track_id: (frames_seen[track_id], widths[track_id]))
        liveness = last_verdict[main]  # as of the track's last frame in the clip
        seconds = None
        if main in decided_frame:
            seconds = (decided_frame[main] - first_frame[main] + 1) / clip.fps
        return ClipResult(clip.source, clip.label, liveness, seconds)

    def close(self) -> None:
        """Release the detector's engine."""
        self._detector.close()


def iso_metrics(results: list[ClipResult]) -> dict[str, object]:
    """APCER per attack type, BPCER, ACER (max APCER + BPCER) / 2, median time to decision."""
    bona_fide = [item for item in results if item.label == BONA_FIDE]
    attack_types = sorted({item.label for item in results if item.label != BONA_FIDE})
    if not bona_fide or not attack_types:
        raise CalibrationDataError("liveness evaluation needs bona fide and attack clips")
    apcer = {
        kind: float(
            np.mean([item.liveness.verdict == "live" for item in results if item.label == kind])
        )
        for kind in attack_types
    }
    bpcer = float(np.mean([item.liveness.verdict != "live" for item in bona_fide]))
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
    """DET curve (BPCER against APCER as the live threshold moves) per attack type, PNG."""
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


def _real_samples(
    data_dir: Path, clip_judge: ClipJudge, settings: EvalSettings
) -> list[dict[str, object]]:
    """The real images of liveness/labels.csv, each held still for one clip."""
    labels = data_dir / "liveness" / "labels.csv"
    if not labels.is_file():
        return []
    samples = []
    length = round(settings.clip_seconds * settings.fps)
    for row in _rows(labels):
        still = _resize(read_image_bgr(data_dir / "liveness" / row["path"]), 640)
        label = BONA_FIDE if row["label"] == "live" else row.get("attack_type", "spoof")
        result = clip_judge.judge(Clip((still,) * length, settings.fps, label, row["path"]))
        samples.append(
            {
                **result.as_dict(),
                "static_correct": (result.liveness.score >= 0.5) == (label == BONA_FIDE),
            }
        )
    return samples


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
        if settings.manifest is not None:
            clips = manifest_clips(settings.manifest, settings)
        else:
            clips = synthetic_clips(settings)
        results = []
        for clip in clips:
            results.append(clip_judge.judge(clip))
            _log.info("%s %s -> %s", clip.label, clip.source, results[-1].liveness.verdict)
        report = iso_metrics(results)
        real = (
            []
            if settings.manifest is not None
            else _real_samples(settings.data_dir, clip_judge, settings)
        )
    finally:
        clip_judge.close()
        if engine is not None:
            engine.close()
    if det_plot is not None:
        report["det_plot"] = str(write_det_plot(results, det_plot))
    report["real_samples"] = real
    report["results"] = [item.as_dict() for item in results]
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report
