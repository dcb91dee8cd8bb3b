"""The liveness evaluation's data (``calibration.liveness``): its settings, the bona fide
windows cut from the face videos, the synthetic print and replay attacks made from them and
from the face photos, the two disjoint splits ("tune" and "report"), manifest clips and the
real samples of ``liveness/labels.csv``."""

from __future__ import annotations

import csv
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt

from calibration.errors import PairsFileError
from calibration.liveness_attacks import (
    Clip,
    bona_fide_clip,
    print_attack,
    replay_attack,
)
from calibration.liveness_clips import ClipJudge, ClipResult, Still
from calibration.liveness_static_attacks import static_print_attack, static_replay_attack
from pipeline.images import read_image_bgr
from pipeline.liveness import LivenessConfig

__all__ = [
    "BONA_FIDE",
    "SCENE_PHOTOS",
    "BonaFideWindow",
    "EvalSettings",
    "Split",
    "StillPolicy",
    "bona_fide_windows",
    "default_shared_data",
    "judge_real_samples",
    "manifest_clips",
    "manifest_label",
    "read_photo",
    "read_video",
    "scaled_image",
    "scaled_item",
    "scene_photos",
    "split_of_photo",
    "split_of_window",
    "split_photos",
    "synthetic_clips",
]

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
    synthetic attack frames and manifest images are this wide (manifest videos keep their own
    size); max_prints / max_replays: synthetic attacks made (sources
    drawn at random with ``seed``); static_attacks: attacks of the second generator
    (``calibration.liveness_static_attacks``), half replays, half prints; split: which half
    of the shared data ("tune", "report" or "all"; manifests are used whole); stills: how
    images are decided (``calibration.liveness``'s docstring);
    scene_backgrounds: attacks are filmed in front of ``SCENE_PHOTOS`` (else a plain
    backdrop, as before 2026-12-02's fourth session); frame_scale: every clip and still is
    shrunk by this factor before it is judged (what a camera farther away sees: smaller
    faces, the same scene)."""

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
    frame_scale: float = 1.0
    liveness: LivenessConfig = field(
        default_factory=lambda: LivenessConfig(enabled=True)  # the eval judges liveness
    )


def _resize(image: npt.NDArray[np.uint8], width: int) -> npt.NDArray[np.uint8]:
    if image.shape[1] == width:
        return image
    height = round(image.shape[0] * width / image.shape[1])
    interpolation = cv2.INTER_AREA if width < image.shape[1] else cv2.INTER_LINEAR
    return np.ascontiguousarray(cv2.resize(image, (width, height), interpolation=interpolation))


def read_video(path: Path, *, fps: float, width: int | None) -> list[npt.NDArray[np.uint8]]:
    """Frames of a video sampled at about ``fps`` and resized to ``width`` (BGR uint8); with
    ``width=None`` at the video's own size, as a camera delivers it to the service (narrowed
    to 1920 px when wider)."""
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
                image = np.asarray(frame, np.uint8)
                if width is not None or image.shape[1] > _MAX_SOURCE_WIDTH:
                    image = _resize(image, width or _MAX_SOURCE_WIDTH)
                frames.append(image)
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
        frames = read_video(path, fps=settings.fps, width=None)
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


def scaled_item(item: Clip | Still, scale: float) -> Clip | Still:
    """``item`` with every image shrunk by ``scale`` (0 < scale <= 1; 1 returns it as is)."""
    if scale == 1.0:
        return item
    if isinstance(item, Still):
        return Still(scaled_image(item.image, scale), item.label, item.source)
    frames = tuple(scaled_image(frame, scale) for frame in item.frames)
    return Clip(frames, item.fps, item.label, item.source)


def scaled_image(image: npt.NDArray[np.uint8], scale: float) -> npt.NDArray[np.uint8]:
    """``image`` resized by ``scale`` (area interpolation: made smaller, as a farther camera
    sees it)."""
    size = (max(round(image.shape[1] * scale), 1), max(round(image.shape[0] * scale), 1))
    return np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA), np.uint8)


def _resize_longest(image: npt.NDArray[np.uint8], longest: int) -> npt.NDArray[np.uint8]:
    scale = longest / max(image.shape[:2])
    return _resize(image, round(image.shape[1] * scale)) if scale < 1 else image


def manifest_label(label: str) -> str:
    """A manifest label, lower case, with the bona fide aliases (live, real, ...) folded."""
    folded = label.strip().lower()
    if not folded:
        raise PairsFileError("a manifest row has an empty label")
    return BONA_FIDE if folded in _BONA_FIDE_ALIASES else folded


def manifest_clips(manifest: Path, settings: EvalSettings) -> list[Clip | Still]:
    """Clips (videos; images too when ``stills = "clip"``) and stills named by a ``path,label``
    CSV (paths relative to its folder). Videos are judged at their own size (up to 1920 px
    wide), as the service sees a camera's frames: a 720p recording read at 640 px would halve
    its faces. Images are resized to ``frame_width_px``."""
    items: list[Clip | Still] = []
    for row in _rows(manifest):
        if "path" not in row or "label" not in row:
            raise PairsFileError(f"{manifest}: expected the header path,label")
        path = manifest.parent / row["path"]
        label = manifest_label(row["label"])
        if path.suffix.lower() in _VIDEO_SUFFIXES:
            frames = tuple(read_video(path, fps=settings.fps, width=None))
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


def judge_real_samples(
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
        item = _image_item(image, label, row["path"], settings)
        samples.append(clip_judge.judge_any(scaled_item(item, settings.frame_scale)))
    return samples
