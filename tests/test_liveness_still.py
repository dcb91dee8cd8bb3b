"""The still-person path (pipeline/liveness/still.py) through the judge, on real media: a real
person who barely moves (the Hamilton clip's performer, frames 104-133 at 15 fps, the window
docs/liveness.md reports as never moving in 3-D) is decided live within 2 s, also when made
smaller (a podium seen from farther away), while a print and a screen replay of the same frames,
and the real print and phone replay photos held still, are never live, and the still-person
path never opens for the print or replay made small. Skipped when ../shared/data or the
MiniFASNet weights are absent."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from calibration.liveness_attacks import Clip
from calibration.liveness_clips import ClipJudge
from calibration.liveness_dataset import read_video, scaled_image
from calibration.liveness_static_attacks import static_print_attack, static_replay_attack
from engines.base import Engine
from engines.convert.minifasnet import MINIFASNET_FILES
from engines.models.antispoof import default_minifasnet_dir
from engines.store import ModelStore
from pipeline.images import read_image_bgr
from pipeline.liveness import Liveness, LivenessConfig, load_liveness_engine

FPS = 15.0
STILL_WINDOW = slice(104, 134)  # 2 s of the performer standing at the podium
# the window as read (face ~67 px) and shrunk to a face of ~40 px (below the 64-px still-path
# minimum of earlier versions, which kept such a person undecided for ever)
SCALES = [1.0, 0.6]


def _scaled(
    frames: tuple[npt.NDArray[np.uint8], ...], scale: float
) -> tuple[npt.NDArray[np.uint8], ...]:
    return tuple(scaled_image(frame, scale) for frame in frames)


@pytest.fixture(scope="module")
def clip_judge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClipJudge]:
    """BlazeFace + tracker + judge with the default liveness settings, or a skip."""
    # beside the repository (default_minifasnet_dir) or beside its parent, where ../shared is
    candidates = [
        default_minifasnet_dir(),
        Path(__file__).resolve().parents[2] / "shared" / "models" / "minifasnet",
    ]
    folder = next((path for path in candidates if path.is_dir()), candidates[0])
    if not all((folder / item.file_name).is_file() for item in MINIFASNET_FILES):
        pytest.skip(f"MiniFASNet weights not found in {folder}")
    store = ModelStore(tmp_path_factory.mktemp("still_store"))
    engine: Engine = load_liveness_engine(store, source_dir=folder)
    judge = ClipJudge(store, LivenessConfig(enabled=True), engine)
    yield judge
    judge.close()
    engine.close()


@pytest.fixture(scope="module")
def still_frames(shared_data: Path) -> tuple[npt.NDArray[np.uint8], ...]:
    """The still performer's 2-s window, frames as the evaluation reads them."""
    video = shared_data / "video" / "faces" / "short_hamilton_clip.mp4"
    if not video.is_file():
        pytest.skip(f"{video} not found")
    return tuple(read_video(video, fps=FPS, width=640)[STILL_WINDOW])


@pytest.mark.parametrize("scale", SCALES)
def test_a_still_real_person_is_live_within_two_seconds(
    clip_judge: ClipJudge, still_frames: tuple[npt.NDArray[np.uint8], ...], scale: float
) -> None:
    frames = _scaled(still_frames, scale)
    result = clip_judge.judge(Clip(frames, FPS, "bona_fide", "hamilton@104"))
    assert result.accepted, result.liveness
    assert result.liveness.cues["still_face_width_px"] < 70 * scale
    assert result.decision_seconds is not None
    assert result.decision_seconds <= 2.0
    # live by the still-person path, not by 3-D motion
    assert "parallax" not in result.liveness.cues
    assert result.liveness.cues["still_path"] == 1.0


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_static_print_or_replay_of_the_same_person_is_never_live(
    clip_judge: ClipJudge, still_frames: tuple[npt.NDArray[np.uint8], ...], seed: int
) -> None:
    rng = np.random.default_rng(seed)
    replay = static_replay_attack(still_frames, frame_count=45, fps=FPS, rng=rng)
    printed = static_print_attack(still_frames[0], frame_count=45, fps=FPS, rng=rng)
    for clip in (replay, printed):
        trace: list[tuple[int, int, npt.NDArray[np.float32], Liveness]] = []
        result = clip_judge.judge(clip, trace=trace)
        assert not result.accepted, (clip.label, result.liveness)
        assert all(liveness.verdict != "live" for *_, liveness in trace), clip.label


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5, 6])
def test_the_still_path_never_opens_for_a_small_static_print_or_replay(
    clip_judge: ClipJudge, still_frames: tuple[npt.NDArray[np.uint8], ...], seed: int
) -> None:
    """Made small, the attacks stay off the still-person path. Not asserted: "never live".
    Seeds 2 and 6 of the replay are decided live by the parallax path (the screen's moire
    under noise moves tracked points; CNN 0.50-0.66, just above the veto; seed 6 at the
    original size too): docs/liveness.md, "Small faces"."""
    frames = _scaled(still_frames, SCALES[-1])
    rng = np.random.default_rng(seed)
    replay = static_replay_attack(frames, frame_count=45, fps=FPS, rng=rng)
    printed = static_print_attack(frames[0], frame_count=45, fps=FPS, rng=rng)
    for clip in (replay, printed):
        trace: list[tuple[int, int, npt.NDArray[np.float32], Liveness]] = []
        clip_judge.judge(clip, trace=trace)
        assert trace, clip.label
        assert all(liveness.cues.get("still_path", 0.0) == 0.0 for *_, liveness in trace)


def test_real_print_and_replay_photos_held_still_are_never_live(
    clip_judge: ClipJudge, shared_data: Path
) -> None:
    labels = shared_data / "liveness" / "labels.csv"
    if not labels.is_file():
        pytest.skip(f"{labels} not found")
    with labels.open(newline="") as handle:
        attacks = [row["path"] for row in csv.DictReader(handle) if row["label"] == "spoof"]
    rng = np.random.default_rng(0)
    for path in attacks:
        image = read_image_bgr(shared_data / "liveness" / path)
        scale = 640 / image.shape[1]
        size = (640, round(image.shape[0] * scale))
        image = np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA), np.uint8)
        # held still in front of a camera: sensor noise on every frame, nothing else moves
        frames = tuple(
            np.clip(image + rng.normal(0, 2.5, image.shape), 0, 255).astype(np.uint8)
            for _ in range(45)
        )
        trace: list[tuple[int, int, npt.NDArray[np.float32], Liveness]] = []
        clip_judge.judge(Clip(frames, FPS, "attack", path), trace=trace)
        assert all(liveness.verdict != "live" for *_, liveness in trace), path


def test_live_waits_for_the_cnns_second_score(clip_judge: ClipJudge, shared_data: Path) -> None:
    """A real person moving in 3-D (the performer at frame 89) is live, but only once the CNN
    has scored the face twice (frames 1 and 1 + cnn_every_frames): with one score a screen
    replaying a moving head was decided live by parallax before the CNN saw it again."""
    video = shared_data / "video" / "faces" / "short_hamilton_clip.mp4"
    frames = tuple(read_video(video, fps=FPS, width=640)[89:119])
    config = LivenessConfig(enabled=True)
    assert config.live_min_cnn_scores == 2
    result = clip_judge.judge(Clip(frames, FPS, "bona_fide", "hamilton@89"))
    assert result.accepted, result.liveness
    assert result.decision_seconds is not None
    # the second CNN score comes with the track's frame 1 + cnn_every_frames
    assert result.decision_seconds >= config.cnn_every_frames / FPS
