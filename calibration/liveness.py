"""Liveness error rates (ISO/IEC 30107-3): APCER per attack type, BPCER, ACER.

Each clip is run through the service's own parts (the BlazeFace detector, the IoU tracker and
``LivenessJudge``); its decision is its main face track's (most frames, then largest) first
verdict other than "undecided", as at a door (below). A track never decided counts against
bona fide clips (the door stays closed) and as rejected for attacks. Clips come from either

- a manifest CSV (``path,label``; label ``bona_fide`` (or ``live``) or an attack type such as
  ``print`` or ``replay``; paths relative to the CSV's folder; each a video or an image), or
- the shared data folder: bona fide windows of every face track of the face videos listed in
  ``video/labels.csv`` (``bona_fide_windows``), synthetic print attacks from single-face photos
  of ``faces/labels.csv``, synthetic screen replays of those video windows and photos
  (``calibration.liveness_attacks``), all at ``fps``; plus the real samples of
  ``liveness/labels.csv``, reported apart.
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

import csv
import logging
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

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
from calibration.liveness_static_attacks import static_print_attack, static_replay_attack
from engines.base import Engine
from engines.models.antispoof import load_liveness_engine
from engines.store import ModelStore
from pipeline.images import read_image_bgr
from pipeline.liveness import Liveness, LivenessConfig, LivenessJudge, Verdict
from pipeline.recognition.detect.blazeface import BlazeFaceConfig
from pipeline.recognition.detect.factory import load_detector
from pipeline.recognition.track import FaceTracker, TrackConfig, face_qualities

__all__ = [
    "SCENE_PHOTOS",
    "BonaFideWindow",
    "ClipJudge",
    "ClipResult",
    "EvalSettings",
    "Split",
    "Still",
    "StillPolicy",
    "bona_fide_windows",
    "default_shared_data",
    "iso_metrics",
    "read_photo",
    "run_liveness_eval",
    "scene_photos",
    "split_of_photo",
    "split_photos",
    "synthetic_clips",
    "write_det_plot",
]

_log = logging.getLogger(__name__)
BONA_FIDE = "bona_fide"
_VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm"}
Split = Literal["tune", "report", "all"]
StillPolicy = Literal["passive", "clip"]
_BONA_FIDE_ALIASES = {"bona_fide", "bonafide", "live", "real", "genuine"}
_WINDOW_COVERAGE = 0.7  # a window needs its track detected in this fraction of its frames
_CROP_SIZE = (640, 480)  # bona fide windows are cut to (at most) this size around the track
_MAX_SOURCE_WIDTH = 1920
# photos of places without people (../shared/data/style/content): the rooms and streets the
# synthetic attacks are filmed in, so the scene behind a print or phone has edges and corners
SCENE_PHOTOS = (
    "golden_gate.jpg",
    "hoovertowernight.jpg",
    "tubingen.jpg",
    "coffee.png",
    "rocket.jpg",
)


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
    of each attack clip (and of manifest stills); bona_fide_seconds / window_stride_seconds:
    length and spacing of the bona fide windows cut from each face track; frame_width_px:
    attack frames are this wide; max_prints / max_replays: synthetic attacks made (sources
    drawn at random with ``seed``); static_attacks: attacks of the second generator
    (``calibration.liveness_static_attacks``), half replays, half prints; split: which half
    of the shared data ("tune", "report" or "all"; manifests are used whole); stills: how
    images are decided (module docstring);
    scene_backgrounds: attacks are filmed in front of ``SCENE_PHOTOS`` (else a plain
    backdrop, as before 2026-12-02's fourth session)."""

    data_dir: Path = field(default_factory=default_shared_data)
    store_dir: Path = Path("data")
    manifest: Path | None = None
    minifasnet_dir: Path | None = None
    seed: int = 7
    fps: float = 15.0
    clip_seconds: float = 3.0
    bona_fide_seconds: float = 2.0
    window_stride_seconds: float = 1 / 3
    frame_width_px: int = 640
    max_prints: int = 24
    max_replays: int = 16
    static_attacks: int = 16
    split: Split = "report"
    stills: StillPolicy = "passive"
    scene_backgrounds: bool = True
    liveness: LivenessConfig = field(
        default_factory=lambda: LivenessConfig(enabled=True)  # the eval judges liveness
    )


@dataclass(frozen=True, slots=True)
class ClipResult:
    """One clip's outcome: its label, the main track's final liveness, whether the track's
    first non-undecided verdict was "live" (``accepted``: the door would have opened), and the
    seconds from the track's first frame to that verdict (None if never decided)."""

    source: str
    label: str
    liveness: Liveness
    decision_seconds: float | None
    accepted: bool = False
    main_track: int = -1

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "source": self.source,
            "label": self.label,
            "accepted": self.accepted,
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


def _rows(path: Path) -> list[dict[str, str]]:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))
    except OSError as exc:
        raise PairsFileError(f"{path}: cannot read: {exc.strerror}") from exc


@dataclass(frozen=True, slots=True)
class BonaFideWindow:
    """A window of one real face track: frames cut around the track (BGR uint8), its name
    (``video#track@start``) and the split it belongs to."""

    name: str
    split: Literal["tune", "report"]
    frames: tuple[npt.NDArray[np.uint8], ...]


def split_of_photo(path: str) -> Literal["tune", "report"]:
    """The split of a photo: a fixed hash of its path, so the halves never share a photo."""
    return "tune" if zlib.crc32(path.encode("utf-8")) % 2 == 0 else "report"


def split_of_window(
    track_rank: int, start: int, length: int, span: tuple[int, int]
) -> Literal["tune", "report"] | None:
    """The split of a window of ``length`` frames from frame ``start`` of a track seen from
    frame ``span[0]`` to ``span[1]``. ``track_rank``: 0 for the video's longest track, else the
    rank of the track among the others in order of appearance (1, 2, ...). Other tracks are
    split by person (odd ranks tune, even ranks report); the longest track's windows by time
    halves of the track (before / after its middle frame; a window across the middle belongs
    to neither), so a video with one main person still serves both splits."""
    if track_rank > 0:
        return "tune" if track_rank % 2 == 1 else "report"
    middle = (span[0] + span[1] + 1) // 2
    if start + length <= middle:
        return "tune"
    if start >= middle:
        return "report"
    return None


def _window_starts(detected: list[int], length: int, stride: int) -> Iterator[int]:
    """Starts of the windows over a track detected at frame indices ``detected`` (sorted) in
    which it is detected in at least ``_WINDOW_COVERAGE`` of the frames; windows begin every
    ``stride`` frames from the track's first frame and from its middle frame (where its time
    halves split), and not where the track is not detected (the face appears at the window's
    first frame)."""
    present = set(detected)
    middle = (detected[0] + detected[-1] + 1) // 2
    starts = sorted(
        set(range(detected[0], middle, stride))
        | set(range(middle, detected[-1] - length + 2, stride))
    )
    for start in starts:
        if start not in present or start + length > detected[-1] + 1:
            continue
        covered = sum(1 for index in range(start, start + length) if index in present)
        if covered >= _WINDOW_COVERAGE * length:
            yield start


def _crop_bounds(
    boxes: list[npt.NDArray[np.float32]], frame_size: tuple[int, int]
) -> tuple[int, int, int, int]:
    """A window of at most ``_CROP_SIZE`` centred on the mean centre of ``boxes``, inside the
    frame (width, height)."""
    width, height = frame_size
    crop_width, crop_height = min(_CROP_SIZE[0], width), min(_CROP_SIZE[1], height)
    centres = np.array([((box[0] + box[2]) / 2, (box[1] + box[3]) / 2) for box in boxes])
    centre_x, centre_y = centres.mean(axis=0)
    left = int(np.clip(round(centre_x - crop_width / 2), 0, width - crop_width))
    top = int(np.clip(round(centre_y - crop_height / 2), 0, height - crop_height))
    return left, top, left + crop_width, top + crop_height


def bona_fide_windows(settings: EvalSettings, clip_judge: ClipJudge) -> list[BonaFideWindow]:
    """Windows of ``bona_fide_seconds`` of every face track of the face videos (every face in
    them is a real person), each cut to at most 640x480 around its track at the video's own
    resolution (up to 1920 wide), every ``window_stride_seconds``; in ``settings.split``."""
    length = round(settings.bona_fide_seconds * settings.fps)
    stride = max(round(settings.window_stride_seconds * settings.fps), 1)
    windows: list[BonaFideWindow] = []
    for row in _rows(settings.data_dir / "video" / "labels.csv"):
        if row.get("kind") != "face":
            continue
        path = settings.data_dir / "video" / row["path"]
        width = min(int(row.get("width") or _MAX_SOURCE_WIDTH), _MAX_SOURCE_WIDTH)
        frames = read_video(path, fps=settings.fps, width=width)
        tracks = clip_judge.tracks(frames)
        frame_size = (frames[0].shape[1], frames[0].shape[0])
        eligible = [key for key, value in tracks.items() if len(value) >= _WINDOW_COVERAGE * length]
        longest = max(eligible, key=lambda track_id: len(tracks[track_id]), default=-1)
        others = sorted(set(eligible) - {longest}, key=lambda track_id: min(tracks[track_id]))
        for rank, track_id in enumerate([longest, *others] if eligible else []):
            boxes = tracks[track_id]
            detected = sorted(boxes)
            for start in _window_starts(detected, length, stride):
                split = split_of_window(rank, start, length, (detected[0], detected[-1]))
                if split is None or settings.split not in ("all", split):
                    continue
                inside = [boxes[i] for i in range(start, start + length) if i in boxes]
                left, top, right, bottom = _crop_bounds(inside, frame_size)
                cut = tuple(
                    np.ascontiguousarray(frame[top:bottom, left:right])
                    for frame in frames[start : start + length]
                )
                windows.append(BonaFideWindow(f"{row['path']}#{rank}@{start}", split, cut))
    return windows


def split_photos(settings: EvalSettings) -> list[str]:
    """The single-face photos of ``faces/labels.csv`` (paths under ``faces/``, duplicates left
    out) in ``settings.split``."""
    return [
        row["path"]
        for row in _rows(settings.data_dir / "faces" / "labels.csv")
        if row.get("n_faces") == "1"
        and not row.get("duplicate_of")
        and settings.split in ("all", split_of_photo(row["path"]))
    ]


def read_photo(settings: EvalSettings, path: str) -> npt.NDArray[np.uint8]:
    """A photo of ``split_photos`` as BGR, its longest side at most 480 px."""
    return _resize_longest(read_image_bgr(settings.data_dir / "faces" / path), 480)


def scene_photos(settings: EvalSettings) -> tuple[npt.NDArray[np.uint8], ...]:
    """The backgrounds attacks are filmed in front of (``SCENE_PHOTOS``, longest side 960 px);
    none when ``settings.scene_backgrounds`` is off."""
    if not settings.scene_backgrounds:
        return ()
    folder = settings.data_dir / "style" / "content"
    return tuple(_resize_longest(read_image_bgr(folder / name), 960) for name in SCENE_PHOTOS)


def synthetic_clips(settings: EvalSettings, windows: list[BonaFideWindow]) -> list[Clip]:
    """Bona fide ``windows`` and synthetic print / replay attacks made from the photos of
    ``settings.split`` and those windows, filmed in front of ``scene_photos``."""
    rng = np.random.default_rng(settings.seed)
    scenes = scene_photos(settings)
    length = round(settings.clip_seconds * settings.fps)
    size = (settings.frame_width_px, round(settings.frame_width_px * 3 / 4))
    clips: list[Clip] = [
        bona_fide_clip(window.frames, fps=settings.fps, rng=rng, source=window.name)
        for window in windows
    ]
    photos = split_photos(settings)
    order = rng.permutation(len(photos))
    for index in order[: settings.max_prints]:
        photo = read_photo(settings, photos[index])
        clips.append(
            print_attack(
                photo,
                frame_count=length,
                fps=settings.fps,
                frame_size=size,
                rng=rng,
                source=photos[index],
                scenes=scenes,
            )
        )
    replay_sources: list[tuple[str, tuple[npt.NDArray[np.uint8], ...]]] = [
        (window.name, window.frames) for window in windows
    ]
    replay_sources = [replay_sources[i] for i in rng.permutation(len(replay_sources))]
    photo_sources: list[tuple[str, tuple[npt.NDArray[np.uint8], ...]]] = [
        (photos[index], (read_photo(settings, photos[index]),))
        for index in order[settings.max_prints :][: max(settings.max_replays // 2, 1)]
    ]
    # half the replays show a video window, half a photo, interleaved
    mixed = [item for pair in zip(replay_sources, photo_sources, strict=False) for item in pair]
    mixed += replay_sources[len(photo_sources) :] + photo_sources[len(replay_sources) :]
    for number in range(settings.max_replays if mixed else 0):
        name, shown = mixed[number % len(mixed)]
        clips.append(
            replay_attack(
                shown,
                frame_count=length,
                fps=settings.fps,
                frame_size=size,
                rng=rng,
                source=name,
                scenes=scenes,
            )
        )
    return clips + _static_attacks(settings, windows, photos)


def _static_attacks(
    settings: EvalSettings, windows: list[BonaFideWindow], photos: list[str]
) -> list[Clip]:
    """The second generator's attacks (``calibration.liveness_static_attacks``): replays of the
    bona fide windows (a talking, blinking real person on a screen on a stand) and prints of
    the split's photos, ``settings.static_attacks`` in all. Its own random stream, so the
    first generator's clips are the same with or without these."""
    rng = np.random.default_rng([settings.seed, 2])
    length = round(settings.clip_seconds * settings.fps)
    size = (settings.frame_width_px, round(settings.frame_width_px * 3 / 4))
    clips: list[Clip] = []
    replays = [windows[i] for i in rng.permutation(len(windows))]
    for window in replays[: (settings.static_attacks + 1) // 2]:
        clips.append(
            static_replay_attack(
                window.frames,
                frame_count=length,
                fps=settings.fps,
                frame_size=size,
                rng=rng,
                source=window.name,
            )
        )
    for index in rng.permutation(len(photos))[: settings.static_attacks // 2]:
        clips.append(
            static_print_attack(
                read_photo(settings, photos[index]),
                frame_count=length,
                fps=settings.fps,
                frame_size=size,
                rng=rng,
                source=photos[index],
            )
        )
    return clips


def _resize_longest(image: npt.NDArray[np.uint8], longest: int) -> npt.NDArray[np.uint8]:
    scale = longest / max(image.shape[:2])
    return _resize(image, round(image.shape[1] * scale)) if scale < 1 else image


@dataclass(frozen=True, slots=True)
class Still:
    """One image judged on its own (``stills = "passive"``); label as a clip's."""

    image: npt.NDArray[np.uint8]
    label: str
    source: str


def manifest_label(label: str) -> str:
    """A manifest label, lower case, with the bona fide aliases (live, real, ...) folded."""
    folded = label.strip().lower()
    if not folded:
        raise PairsFileError("a manifest row has an empty label")
    return BONA_FIDE if folded in _BONA_FIDE_ALIASES else folded


def manifest_clips(manifest: Path, settings: EvalSettings) -> list[Clip | Still]:
    """Clips (videos; images too when ``stills = "clip"``) and stills named by a ``path,label``
    CSV (paths relative to its folder)."""
    items: list[Clip | Still] = []
    for row in _rows(manifest):
        if "path" not in row or "label" not in row:
            raise PairsFileError(f"{manifest}: expected the header path,label")
        path = manifest.parent / row["path"]
        label = manifest_label(row["label"])
        if path.suffix.lower() in _VIDEO_SUFFIXES:
            frames = tuple(read_video(path, fps=settings.fps, width=settings.frame_width_px))
            items.append(Clip(frames, settings.fps, label, row["path"]))
            continue
        image = _resize(read_image_bgr(path), settings.frame_width_px)
        items.append(_image_item(image, label, row["path"], settings))
    return items


def _image_item(
    image: npt.NDArray[np.uint8], label: str, source: str, settings: EvalSettings
) -> Clip | Still:
    """An image as ``settings.stills`` decides it: a Still, or a motionless clip."""
    if settings.stills == "passive":
        return Still(image, label, source)
    length = round(settings.clip_seconds * settings.fps)
    return Clip((image,) * length, settings.fps, label, source)


class ClipJudge:
    """Detector + tracker + liveness judge, fresh per clip, as the service runs them."""

    def __init__(self, store: ModelStore, config: LivenessConfig, engine: Engine | None) -> None:
        self._detector = load_detector(BlazeFaceConfig(threads=1), store)
        self._config = config
        self._engine = engine
        self._still_judge: LivenessJudge | None = None

    def tracks(
        self, frames: list[npt.NDArray[np.uint8]]
    ) -> dict[int, dict[int, npt.NDArray[np.float32]]]:
        """Every track of ``frames``: track id -> {frame index: face box (x1 y1 x2 y2)}."""
        tracker = FaceTracker(TrackConfig())
        tracks: dict[int, dict[int, npt.NDArray[np.float32]]] = {}
        for index, frame in enumerate(frames):
            faces = self._detector.detect(np.ascontiguousarray(frame[:, :, ::-1]))
            update = tracker.update(index, faces, face_qualities(faces))
            for row, track_id in enumerate(update.track_ids.tolist()):
                tracks.setdefault(track_id, {})[index] = faces.boxes[row].copy()
        return tracks

    def judge(
        self,
        clip: Clip,
        *,
        config: LivenessConfig | None = None,
        trace: list[tuple[int, int, npt.NDArray[np.float32], Liveness]] | None = None,
    ) -> ClipResult:
        """The main track's final liveness, whether its first decided verdict was "live", and
        its time to that decision. config: another liveness config for this clip; trace: when
        given, gets (track id, frame index, face box, liveness after the frame) for every
        face."""
        tracker = FaceTracker(TrackConfig())
        judge = LivenessJudge(config or self._config, self._engine)
        frames_seen: dict[int, int] = {}
        widths: dict[int, float] = {}
        first_frame: dict[int, int] = {}
        first_decision: dict[int, tuple[int, Verdict]] = {}  # frame index, verdict
        last_verdict: dict[int, Liveness] = {}
        for index, frame in enumerate(clip.frames):
            faces = self._detector.detect(np.ascontiguousarray(frame[:, :, ::-1]))
            update = tracker.update(index, faces, face_qualities(faces))
            judge.observe(frame, faces, update.track_ids)
            for row, track_id in enumerate(update.track_ids.tolist()):
                frames_seen[track_id] = frames_seen.get(track_id, 0) + 1
                widths[track_id] = max(widths.get(track_id, 0.0), float(faces.widths_px[row]))
                first_frame.setdefault(track_id, index)
                liveness = judge.verdict(track_id)
                last_verdict[track_id] = liveness
                if track_id not in first_decision and liveness.verdict != "undecided":
                    first_decision[track_id] = (index, liveness.verdict)
                if trace is not None:
                    trace.append((track_id, index, faces.boxes[row].copy(), liveness))
        if not frames_seen:
            return ClipResult(clip.source, clip.label, Liveness.undecided(), None)
        main = max(frames_seen, key=lambda track_id: (frames_seen[track_id], widths[track_id]))
        liveness = last_verdict[main]  # as of the track's last frame in the clip
        if main not in first_decision:
            return ClipResult(clip.source, clip.label, liveness, None, main_track=main)
        decided_at, verdict = first_decision[main]
        seconds = (decided_at - first_frame[main] + 1) / clip.fps
        return ClipResult(
            clip.source, clip.label, liveness, seconds, accepted=verdict == "live", main_track=main
        )

    def judge_still(self, still: Still) -> ClipResult:
        """The passive verdict on the image's largest face (the still-image detector, with its
        fallback); accepted when it is "live"; no time to decision."""
        faces = self._detector.detect_still(np.ascontiguousarray(still.image[:, :, ::-1]))
        if not len(faces):
            return ClipResult(still.source, still.label, Liveness.undecided(), None)
        largest = int(np.argmax(faces.widths_px))
        if self._still_judge is None:  # stateless for stills: one serves every image
            self._still_judge = LivenessJudge(self._config, self._engine)
        liveness = self._still_judge.judge_still(still.image, faces)[largest]
        return ClipResult(
            still.source, still.label, liveness, None, accepted=liveness.verdict == "live"
        )

    def judge_any(self, item: Clip | Still) -> ClipResult:
        """``judge`` a clip, ``judge_still`` a still."""
        return self.judge_still(item) if isinstance(item, Still) else self.judge(item)

    def close(self) -> None:
        """Release the detector's engine."""
        self._detector.close()


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


def _real_samples(
    data_dir: Path, clip_judge: ClipJudge, settings: EvalSettings
) -> list[ClipResult]:
    """The real images of liveness/labels.csv, decided as ``settings.stills`` says."""
    labels = data_dir / "liveness" / "labels.csv"
    if not labels.is_file():
        return []
    samples = []
    for row in _rows(labels):
        image = _resize(read_image_bgr(data_dir / "liveness" / row["path"]), 640)
        label = BONA_FIDE if row["label"] == "live" else row.get("attack_type", "spoof")
        samples.append(clip_judge.judge_any(_image_item(image, label, row["path"], settings)))
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
        clips: list[Clip | Still]
        if settings.manifest is not None:
            clips = manifest_clips(settings.manifest, settings)
        else:
            clips = list(synthetic_clips(settings, bona_fide_windows(settings, clip_judge)))
        results = []
        for clip in clips:
            results.append(clip_judge.judge_any(clip))
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
    report["split"] = "manifest" if settings.manifest is not None else settings.split
    report["seed"] = settings.seed
    report["stills"] = settings.stills
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
