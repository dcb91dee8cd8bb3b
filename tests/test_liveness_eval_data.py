"""The liveness evaluation's data: disjoint tune / report splits, bona fide windows cut from
real face tracks, a synthetic screen replay that still shows a detectable face, and the
project's own texture-model fit. Real data from ../shared/data (skipped when absent)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from calibration.liveness_attacks import replay_attack
from calibration.liveness_clips import ClipJudge
from calibration.liveness_dataset import (
    EvalSettings,
    bona_fide_windows,
    split_of_photo,
    split_of_window,
)
from calibration.tune_liveness import ClipTrace, Fusion, fit_texture_model, replay_verdicts
from engines.store import ModelStore
from pipeline.images import read_image_bgr
from pipeline.liveness import LivenessConfig
from pipeline.liveness.texture import TEXTURE_FEATURES
from pipeline.liveness.texture_model import DEFAULT_TEXTURE_MODEL


@pytest.fixture(scope="module")
def detector_judge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClipJudge]:
    """BlazeFace + tracker, the liveness judge without the CNN (not needed here)."""
    store = ModelStore(tmp_path_factory.mktemp("eval_data_store"))
    judge = ClipJudge(store, LivenessConfig(enabled=True, cnn=False), None)
    yield judge
    judge.close()


def test_window_split_never_shares_frames_of_the_main_track() -> None:
    """The longest track splits at its middle frame: windows before it tune, after it report,
    across it neither; other tracks alternate by person."""
    span = (10, 109)  # middle frame 60
    assert split_of_window(0, 10, 30, span) == "tune"
    assert split_of_window(0, 30, 30, span) == "tune"  # frames 30..59
    assert split_of_window(0, 31, 30, span) is None  # frames 31..60 cross the middle
    assert split_of_window(0, 60, 30, span) == "report"
    assert [split_of_window(rank, 0, 30, span) for rank in (1, 2, 3, 4)] == [
        "tune",
        "report",
        "tune",
        "report",
    ]


def test_photo_split_is_a_fixed_function_of_the_path() -> None:
    """The same path always lands in the same half, and both halves are used."""
    paths = [f"faces/person_{index}.jpg" for index in range(40)]
    first = [split_of_photo(path) for path in paths]
    assert first == [split_of_photo(path) for path in paths]
    assert set(first) == {"tune", "report"}


def test_bona_fide_windows_are_disjoint_real_tracks(
    shared_data: Path, detector_judge: ClipJudge
) -> None:
    """Every window is 2 s at 15 fps, at most 640x480, named by video, track and start; tune
    and report windows of the same track never overlap in time."""
    tune = bona_fide_windows(EvalSettings(data_dir=shared_data, split="tune"), detector_judge)
    report = bona_fide_windows(EvalSettings(data_dir=shared_data, split="report"), detector_judge)
    assert tune
    assert report
    for window in tune + report:
        assert len(window.frames) == 30
        height, width = window.frames[0].shape[:2]
        assert width <= 640
        assert height <= 480
    spans: dict[str, list[range]] = {}
    for window in tune:
        video_track, start = window.name.rsplit("@", 1)
        spans.setdefault(video_track, []).append(range(int(start), int(start) + 30))
    for window in report:
        video_track, start = window.name.rsplit("@", 1)
        frames = set(range(int(start), int(start) + 30))
        for taken in spans.get(video_track, []):
            assert not frames & set(taken), (window.name, taken)


def test_a_synthetic_replay_shows_a_detectable_face(
    shared_data: Path, detector_judge: ClipJudge
) -> None:
    """The screen's sub-pixel grid is integrated by the camera before it clips, so the replayed
    face stays visible: BlazeFace finds it in most frames (an attack nobody can detect as a
    face would be rejected for the wrong reason and make APCER meaningless)."""
    live = read_image_bgr(
        shared_data / "liveness" / "trueface_sample_apps/near_shot_real_person.jpg"
    )
    scale = 480 / max(live.shape[:2])
    size = (round(live.shape[1] * scale), round(live.shape[0] * scale))
    photo = np.ascontiguousarray(cv2.resize(live, size, interpolation=cv2.INTER_AREA), np.uint8)
    clip = replay_attack(
        (photo,), frame_count=10, fps=15.0, frame_size=(640, 480), rng=np.random.default_rng(5)
    )
    tracks = detector_judge.tracks(list(clip.frames))
    assert max((len(boxes) for boxes in tracks.values()), default=0) >= 8, tracks.keys()


def test_texture_fit_separates_what_it_is_given() -> None:
    """On two well separated synthetic feature clouds the fit puts every live sample above
    0.5 and every attack below; with nothing to tell them apart it stays near 0.5."""
    rng = np.random.default_rng(0)
    count = len(TEXTURE_FEATURES)

    def traces(shift: float) -> list[ClipTrace]:
        made = []
        for number in range(20):
            label = "bona_fide" if number % 2 == 0 else "print"
            centre = np.full(count, shift if label == "bona_fide" else -shift)
            features = {k: (centre + rng.normal(0, 1, count)).astype(np.float32) for k in range(6)}
            made.append(ClipTrace(label, f"clip{number}", [], features))
        return made

    separated = traces(3.0)
    model = fit_texture_model(separated)
    for trace in separated:
        for features in trace.features.values():
            probability = model.live_probability(features)
            assert (probability > 0.5) == (trace.label == "bona_fide")
    mixed = fit_texture_model(traces(0.0), l2=50.0)
    probabilities = [
        mixed.live_probability(f) for trace in traces(0.0) for f in trace.features.values()
    ]
    assert 0.3 < float(np.mean(probabilities)) < 0.7


def test_the_default_texture_model_is_fitted() -> None:
    """The shipped coefficients are the project's fit, not the neutral placeholder."""
    assert any(weight != 0.0 for weight in DEFAULT_TEXTURE_MODEL.weights)
    assert all(scale > 0.0 for scale in DEFAULT_TEXTURE_MODEL.scales)


def test_tuner_replays_the_doors_first_decision() -> None:
    """A track first scored as a spoof and live later is rejected, as the door locks it out on
    its first "spoof" (``pipeline.access.policy``); with the first verdicts undecided instead, the
    later "live" is accepted. Verdicts wait for ``min_frames`` and "live" for parallax."""
    spoof_then_live = [{"cnn": 0.05}] * 3 + [
        {"cnn": 0.99, "parallax": 0.9, "parallax_ratio": 0.8}
    ] * 3
    fusion = Fusion(
        parallax_weight=1.0,
        parallax_planar_ratio=0.55,
        cnn_weight=2.0,
        texture_weight=0.0,
        flicker_weight=0.0,
        surround_weight=0.0,
        live_threshold=0.6,
        spoof_threshold=0.3,
        min_frames=1,
    )
    trace = ClipTrace("bona_fide", "made up", frames=spoof_then_live)
    accepted, score = replay_verdicts(trace, DEFAULT_TEXTURE_MODEL, fusion)
    assert not accepted
    assert score <= fusion.spoof_threshold
    waited = replace(fusion, min_frames=4)  # the early frames come before any verdict
    accepted, score = replay_verdicts(trace, DEFAULT_TEXTURE_MODEL, waited)
    assert accepted
    assert score >= fusion.live_threshold
    no_motion = ClipTrace("bona_fide", "made up", frames=[{"cnn": 0.99}] * 6)
    assert replay_verdicts(no_motion, DEFAULT_TEXTURE_MODEL, fusion)[0] is False
