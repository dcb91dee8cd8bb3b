"""Liveness: the MiniFASNet conversion, the cues on synthetic attacks and real clips, bad input,
and the ISO/IEC 30107-3 arithmetic. Real models and real data (../shared/data, skipped when
absent); synthetic attacks come from calibration.liveness_attacks with fixed seeds."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pydantic
import pytest
from typer.testing import CliRunner, Result

from calibration.liveness import iso_metrics
from calibration.liveness_attacks import Clip, PrintParameters, print_attack
from calibration.liveness_clips import ClipJudge, ClipResult
from calibration.liveness_dataset import EvalSettings, manifest_clips, read_video, scene_photos
from engines.base import Engine
from engines.convert.minifasnet import (
    MINIFASNET_FILES,
    build_minifasnet,
    load_minifasnet_state,
)
from engines.errors import ConfigError, FaceStreamError
from engines.models.antispoof import INPUT_SCALES, OUTPUT_NAME, default_minifasnet_dir
from engines.store import ModelStore
from pipeline.cli.main import app
from pipeline.images import read_image_bgr
from pipeline.liveness import Liveness, LivenessConfig, LivenessJudge, load_liveness_engine
from pipeline.liveness.cnn import cnn_live_probabilities
from pipeline.types import Faces

FPS = 15.0


@pytest.fixture(scope="module")
def minifasnet_dir() -> Path:
    """../shared/models/minifasnet, or a skip."""
    folder = default_minifasnet_dir()
    if not all((folder / item.file_name).is_file() for item in MINIFASNET_FILES):
        pytest.skip(f"MiniFASNet weights not found in {folder}")
    return folder


@pytest.fixture(scope="module")
def liveness_store(tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    """A model store for the liveness CNN and the detector, shared by this module."""
    return ModelStore(tmp_path_factory.mktemp("liveness_store"))


@pytest.fixture(scope="module")
def liveness_engine(liveness_store: ModelStore, minifasnet_dir: Path) -> Iterator[Engine]:
    """The converted MiniFASNet ensemble on ONNX Runtime CPU."""
    engine = load_liveness_engine(liveness_store, source_dir=minifasnet_dir)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def clip_judge(liveness_store: ModelStore, liveness_engine: Engine) -> Iterator[ClipJudge]:
    """BlazeFace + tracker + judge with the default liveness settings (enabled, CNN on)."""
    judge = ClipJudge(liveness_store, LivenessConfig(enabled=True), liveness_engine)
    yield judge
    judge.close()


def _liveness_samples(shared_data: Path) -> list[tuple[Path, str]]:
    with (shared_data / "liveness" / "labels.csv").open(newline="") as handle:
        return [
            (shared_data / "liveness" / row["path"], row["label"]) for row in csv.DictReader(handle)
        ]


def test_onnx_ensemble_matches_our_torch_networks(
    liveness_engine: Engine, minifasnet_dir: Path
) -> None:
    """The exported graph gives the mean softmax of our two torch MiniFASNets (1e-4)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    crops = {name: rng.uniform(0, 255, (3, 3, 80, 80)).astype(np.float32) for name in INPUT_SCALES}
    ours = liveness_engine.infer(crops)[OUTPUT_NAME]
    expected = []
    for item in MINIFASNET_FILES:
        network = build_minifasnet(load_minifasnet_state(minifasnet_dir / item.file_name))
        with torch.no_grad():
            logits = network(torch.from_numpy(crops[item.input_name]))
        expected.append(logits.softmax(dim=1).numpy())
    assert ours.shape == (3, 3)
    np.testing.assert_allclose(ours, np.mean(expected, axis=0), atol=1e-4)


def test_cnn_separates_the_real_samples(
    shared_data: Path, clip_judge: ClipJudge, liveness_engine: Engine, liveness_store: ModelStore
) -> None:
    """On the real samples of liveness/labels.csv (EXIF applied, RGBA dropped), every live face
    scores above every spoof: a smoke test (some are the authors' own demo images)."""
    from pipeline.recognition.detect.blazeface import BlazeFaceConfig  # noqa: PLC0415
    from pipeline.recognition.detect.factory import load_detector  # noqa: PLC0415

    detector = load_detector(BlazeFaceConfig(), liveness_store)
    scores: dict[str, list[float]] = {"live": [], "spoof": []}
    try:
        for path, label in _liveness_samples(shared_data):
            image = read_image_bgr(path)
            faces = detector.detect(np.ascontiguousarray(image[:, :, ::-1]))
            assert len(faces), f"no face found in {path}"
            scores[label].append(
                float(cnn_live_probabilities(liveness_engine, image, faces.boxes[:1])[0])
            )
    finally:
        detector.close()
    assert scores["live"]
    assert scores["spoof"]
    assert min(scores["live"]) > max(scores["spoof"]), scores


def _photo(shared_data: Path, index: int) -> tuple[str, np.ndarray]:
    with (shared_data / "faces" / "labels.csv").open(newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["n_faces"] == "1"]
    path = rows[index]["path"]
    return path, read_image_bgr(shared_data / "faces" / path)


def test_synthetic_print_attack_is_planar_and_not_live(
    shared_data: Path, clip_judge: ClipJudge
) -> None:
    """A photo printed and waved in front of the camera: its points fit one homography
    (parallax ratio far below a head's) and the verdict is spoof."""
    name, photo = _photo(shared_data, 0)
    clip = print_attack(
        photo,
        frame_count=36,
        fps=FPS,
        frame_size=(640, 480),
        rng=np.random.default_rng(12),
        parameters=PrintParameters(yaw_degrees=(20.0, 28.0), pitch_degrees=(12.0, 18.0)),
        source=name,
    )
    result = clip_judge.judge(clip)
    assert result.liveness.frames >= 30
    assert "parallax_ratio" in result.liveness.cues, result.liveness.cues
    assert result.liveness.cues["parallax_ratio"] < LivenessConfig().parallax_planar_ratio
    assert result.liveness.cues["parallax"] < 0.5
    assert result.liveness.verdict == "spoof", result.as_dict()


def test_a_print_held_up_in_a_room_carries_its_surround(
    shared_data: Path, clip_judge: ClipJudge
) -> None:
    """A print waved in front of a street scene by a still camera: the sheet around the face
    moves as one object while the frame's border stays put, so the surround cue gives spoof
    evidence (besides the parallax cue's)."""
    name, photo = _photo(shared_data, 1)
    clip = print_attack(
        photo,
        frame_count=36,
        fps=FPS,
        frame_size=(640, 480),
        rng=np.random.default_rng(5),
        parameters=PrintParameters(sheet_height_fraction=(0.55, 0.6)),
        source=name,
        scenes=scene_photos(EvalSettings(data_dir=shared_data)),
    )
    result = clip_judge.judge(clip)
    assert result.liveness.cues["surround_carried_fraction"] > 0.5, result.as_dict()
    assert result.liveness.cues["surround"] < 0.5
    assert not result.accepted


def test_real_head_motion_clip_is_not_judged_spoof(
    shared_data: Path, clip_judge: ClipJudge
) -> None:
    """A real person moving on stage (the first face video of video/labels.csv, 3 s from 3 s
    on): the main track is live, with parallax evidence of a non-planar face."""
    with (shared_data / "video" / "labels.csv").open(newline="") as handle:
        video = next(row["path"] for row in csv.DictReader(handle) if row["kind"] == "face")
    frames = read_video(shared_data / "video" / video, fps=FPS, width=640)
    clip = Clip(tuple(frames[45:90]), FPS, "bona_fide", video)
    result = clip_judge.judge(clip)
    assert result.liveness.verdict != "spoof", result.as_dict()
    assert result.liveness.verdict == "live", result.as_dict()
    assert result.liveness.cues["parallax_ratio"] > 0.45
    # the stage camera pans: no surround evidence, and none against the performer
    assert result.liveness.cues.get("surround", 0.5) == 0.5


def test_a_face_that_never_moves_stays_undecided(shared_data: Path, clip_judge: ClipJudge) -> None:
    """A live person's photo held perfectly still gives no motion evidence: never 'live'."""
    live = next(path for path, label in _liveness_samples(shared_data) if label == "live")
    still = read_image_bgr(live)
    result = clip_judge.judge(Clip((still,) * 20, FPS, "bona_fide", live.name))
    assert result.liveness.frames == 20
    assert "parallax" not in result.liveness.cues
    assert result.liveness.verdict != "live"


def _boxes_only(boxes: list[list[float]]) -> Faces:
    """Faces at ``boxes`` (xyxy) with score 1 and no landmarks: what the judge reads is the box."""
    count = len(boxes)
    return Faces(
        boxes=np.array(boxes, np.float32),
        scores=np.ones(count, np.float32),
        landmarks=np.zeros((count, 5, 2), np.float32),
    )


def test_bad_input_gives_undecided_not_a_crash(liveness_engine: Engine) -> None:
    """Tiny faces, faces half outside the frame, a dark frame and an unknown track id."""
    judge = LivenessJudge(LivenessConfig(enabled=True), liveness_engine)
    dark = np.full((240, 320, 3), 3, np.uint8)
    faces = _boxes_only([[-20, -30, 80, 90], [300, 200, 310, 212]])
    for _ in range(8):
        judge.observe(dark, faces, np.array([1, 2], np.int64))
    for track_id in (1, 2):
        assert judge.verdict(track_id).verdict != "live"
    assert judge.verdict(99) == Liveness.undecided()
    judge.forget(1)
    assert judge.verdict(1).frames == 0
    with pytest.raises(FaceStreamError):
        judge.observe(dark, faces, np.array([1], np.int64))  # one id for two faces


def test_a_box_mostly_outside_the_frame_gives_no_evidence(liveness_engine: Engine) -> None:
    """A box with under half its area in the frame (a tracker coasting past the edge) adds
    nothing: the crops would be of something else."""
    judge = LivenessJudge(LivenessConfig(enabled=True), liveness_engine)
    image = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    faces = _boxes_only([[260, 160, 360, 280], [330, 10, 400, 80]])
    for _ in range(3):
        judge.observe(image, faces, np.array([1, 2], np.int64))
    assert judge.verdict(1).frames == 0  # 60 x 80 of its 100 x 120 inside the frame
    assert judge.verdict(2).frames == 0
    inside = _boxes_only([[220, 120, 320, 240]])
    judge.observe(image, inside, np.array([1], np.int64))
    assert judge.verdict(1).frames == 1


class _FailingOnce:
    """The real MiniFASNet engine, except that its ``fail_on``-th call raises (a device
    error in the middle of a frame)."""

    def __init__(self, engine: Engine, fail_on: int) -> None:
        self._engine, self._calls, self._fail_on = engine, 0, fail_on
        self.backend, self.model_id = engine.backend, engine.model_id
        self.inputs, self.outputs = engine.inputs, engine.outputs

    def infer(self, batch: Mapping[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
        self._calls += 1
        if self._calls == self._fail_on:
            raise RuntimeError("device lost")
        return self._engine.infer(batch)

    def close(self) -> None:
        """The wrapped engine belongs to the module's fixture."""


def test_a_cue_failing_mid_frame_keeps_the_frame_history_whole(liveness_engine: Engine) -> None:
    """When the CNN raises during a frame, that frame still becomes the one the next frame's
    optical flow and surround comparison start from (the tracks' points already refer to it)."""
    judge = LivenessJudge(
        LivenessConfig(enabled=True, cnn_every_frames=1),
        _FailingOnce(liveness_engine, fail_on=2),
    )
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (240, 320, 3), dtype=np.uint8) for _ in range(3)]
    faces = _boxes_only([[100, 60, 200, 180]])
    judge.observe(frames[0], faces, np.array([1], np.int64))
    with pytest.raises(RuntimeError, match="device lost"):
        judge.observe(frames[1], faces, np.array([1], np.int64))
    assert judge._previous_image is frames[1]
    assert [item.image is frame for item, frame in zip(judge._recent, frames, strict=False)] == [
        True,
        True,
    ]
    judge.observe(frames[2], faces, np.array([1], np.int64))
    assert judge.verdict(1).frames == 3


def test_a_still_is_never_live_on_texture_alone() -> None:
    """Without the CNN, the passive check of a photo cannot say "live": the texture model is
    fitted to synthetic attacks and does not separate real captures."""
    judge = LivenessJudge(LivenessConfig(enabled=True, cnn=False, texture_weight=10.0), engine=None)
    image = np.random.default_rng(2).integers(0, 256, (160, 160, 3), dtype=np.uint8)
    faces = _boxes_only([[20, 20, 140, 140]])
    (still,) = judge.judge_still(image, faces)
    assert "texture" in still.cues
    assert still.verdict != "live", still


def test_config_is_checked() -> None:
    """Inverted thresholds, and a threshold at 0.5 (the score of no evidence at all), are
    refused; the CNN cue without an engine is a ConfigError."""
    with pytest.raises(pydantic.ValidationError):
        LivenessConfig(live_threshold=0.3, spoof_threshold=0.6)
    with pytest.raises(pydantic.ValidationError, match=r"greater than 0\.5"):
        LivenessConfig(live_threshold=0.5, require_motion_for_live=False)
    with pytest.raises(pydantic.ValidationError, match=r"less than 0\.5"):
        LivenessConfig(spoof_threshold=0.5)
    with pytest.raises(pydantic.ValidationError):
        LivenessConfig(unknown_field=1)  # type: ignore[call-arg]  # extra keys are refused
    with pytest.raises(ConfigError):
        LivenessJudge(LivenessConfig(cnn=True), None)
    assert LivenessConfig().enabled is True  # doors require liveness by default
    assert LivenessConfig().blink is False


def _result(
    label: str, verdict: str, seconds: float | None = 0.5, *, first_live: bool | None = None
) -> ClipResult:
    liveness = Liveness(verdict, 0.5, MappingProxyType({}), 10)  # type: ignore[arg-type]
    accepted = verdict == "live" if first_live is None else first_live
    return ClipResult("x", label, liveness, seconds, accepted=accepted)


def test_iso_metrics_count_undecided_against_bona_fide_and_for_attacks() -> None:
    """APCER per type = attacks accepted (first decided verdict "live": a door opens then, even
    if the verdict later turns); BPCER = bona fide not accepted (undecided too)."""
    results = [
        _result("bona_fide", "live"),
        _result("bona_fide", "undecided", None),
        _result("bona_fide", "live"),
        _result("bona_fide", "spoof"),
        _result("print", "spoof"),
        _result("print", "undecided", first_live=True),
        _result("replay", "live", 1.5),
        _result("replay", "spoof"),
    ]
    report = iso_metrics(results)
    assert report["apcer"] == {"print": 0.5, "replay": 0.5}
    assert report["bpcer"] == 0.5
    assert report["acer"] == 0.5
    assert report["median_time_to_decision_s"] == 0.5


def test_short_or_heavily_compressed_clips_are_never_judged_live(
    shared_data: Path, clip_judge: ClipJudge
) -> None:
    """The same real head-motion clip, but only 4 frames long (under min_frames), and a print
    attack re-encoded as JPEG quality 5: neither may come out 'live'."""
    with (shared_data / "video" / "labels.csv").open(newline="") as handle:
        video = next(row["path"] for row in csv.DictReader(handle) if row["kind"] == "face")
    frames = read_video(shared_data / "video" / video, fps=FPS, width=640)
    short = clip_judge.judge(Clip(tuple(frames[45:49]), FPS, "bona_fide", video))
    assert short.liveness.verdict == "undecided", short.as_dict()
    live = next(path for path, label in _liveness_samples(shared_data) if label == "live")
    attack = print_attack(
        read_image_bgr(live),
        frame_count=30,
        fps=FPS,
        frame_size=(640, 480),
        rng=np.random.default_rng(3),
        parameters=PrintParameters(),
    )
    compressed = tuple(_jpeg_round_trip(frame, quality=5) for frame in attack.frames)
    result = clip_judge.judge(Clip(compressed, FPS, "print", live.name))
    assert result.liveness.verdict != "live", result.as_dict()


def _jpeg_round_trip(image_bgr: npt.NDArray[np.uint8], *, quality: int) -> npt.NDArray[np.uint8]:
    ok, encoded = cv2.imencode(".jpg", image_bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    decoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR) if ok else None
    assert decoded is not None
    return np.asarray(decoded, dtype=np.uint8)


def _real_samples_manifest(shared_data: Path, folder: Path) -> Path:
    """A manifest of the real images, labelled as a site would write them (live, print,
    replay)."""
    folder.mkdir(parents=True, exist_ok=True)
    with (shared_data / "liveness" / "labels.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    lines = ["path,label"]
    for row in rows:
        label = "live" if row["label"] == "live" else row["attack_type"].split("_")[0]
        lines.append(f"{shared_data / 'liveness' / row['path']},{label}")
    manifest = folder / "manifest.csv"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def test_manifest_videos_are_judged_at_their_own_size(tmp_path: Path) -> None:
    """A door camera's 720p frames reach the judge as they are (a 640-px reading would halve the
    faces); wider than 1920 px is narrowed to 1920; manifest images keep frame_width_px."""
    rng = np.random.default_rng(0)
    rows = ["path,label"]
    for width, height in ((1280, 720), (2560, 1440)):
        name = f"clip_{width}.mp4"
        writer = cv2.VideoWriter(
            str(tmp_path / name), cv2.VideoWriter.fourcc(*"mp4v"), FPS, (width, height)
        )
        for _ in range(5):
            writer.write(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
        writer.release()
        rows.append(f"{name},bona_fide")
    cv2.imwrite(str(tmp_path / "photo.png"), rng.integers(0, 255, (900, 1200, 3), dtype=np.uint8))
    rows.append("photo.png,print")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("\n".join(rows) + "\n")
    items = manifest_clips(manifest, EvalSettings(frame_width_px=640))
    shapes = [
        item.frames[0].shape if isinstance(item, Clip) else item.image.shape for item in items
    ]
    assert shapes == [(720, 1280, 3), (1080, 1920, 3), (480, 640, 3)]


def test_eval_decides_manifest_stills_passively_or_as_motionless_clips(
    shared_data: Path, liveness_store: ModelStore, minifasnet_dir: Path, tmp_path: Path
) -> None:
    """`facestream eval liveness --manifest` on the six real images: passively (the default)
    the MiniFASNet + texture verdict accepts both live people and rejects all four attacks; held
    still as a clip nothing can become live (no motion), so BPCER is 1. An empty image in a
    manifest is a clear error, not a crash."""
    manifest = _real_samples_manifest(shared_data, tmp_path / "real")
    runner = CliRunner()

    def invoke(csv_path: Path, *extra: str) -> Result:
        return runner.invoke(
            app,
            ["eval", "liveness", "--manifest", str(csv_path), "--store",
             str(liveness_store.data_dir), "--minifasnet", str(minifasnet_dir), "--json", *extra],
        )  # fmt: skip

    def run(*extra: str) -> dict[str, object]:
        result = invoke(manifest, *extra)
        assert result.exit_code == 0, result.output
        report: dict[str, object] = json.loads(result.output.strip().splitlines()[-1])
        return report

    passive = run()
    assert passive["stills"] == "passive"
    assert passive["clips"] == {"bona_fide": 2, "print": 1, "replay": 3}
    assert passive["bpcer"] == 0.0, passive["results"]
    assert passive["apcer"] == {"print": 0.0, "replay": 0.0}, passive["results"]
    as_clips = run("--stills", "clip")
    assert as_clips["bpcer"] == 1.0
    assert as_clips["apcer"] == {"print": 0.0, "replay": 0.0}
    # a config's [liveness] section is what is judged: without the CNN no still is live
    no_cnn = tmp_path / "no_cnn.toml"
    no_cnn.write_text("[liveness]\nenabled = false\ncnn = false\n")
    texture_only = run("--config", str(no_cnn))
    assert texture_only["bpcer"] == 1.0
    results = texture_only["results"]
    assert isinstance(results, list)
    assert all("cnn" not in item["cues"] for item in results)
    # shrunk images reach the judge: the CNN scores move (the 2nd live photo 0.97 -> 0.7 at 0.1)
    shrunk = run("--scale", "0.1")
    assert shrunk["frame_scale"] == 0.1
    assert shrunk["clips"] == passive["clips"]

    def cnn_scores(report: dict[str, object]) -> list[float]:
        items = report["results"]
        assert isinstance(items, list)
        return [item["cues"]["cnn"] for item in items]

    assert (
        max(abs(a - b) for a, b in zip(cnn_scores(shrunk), cnn_scores(passive), strict=True)) > 0.1
    )
    typo = tmp_path / "typo.toml"
    typo.write_text("[liveness]\ncnn_wieght = 2.0\n")
    result = invoke(manifest, "--config", str(typo))
    assert result.exit_code == 2
    assert "cnn_wieght" in result.output
    (tmp_path / "real" / "empty.jpg").write_bytes(b"")
    broken = tmp_path / "real" / "broken.csv"
    broken.write_text(manifest.read_text() + "empty.jpg,live\n")
    result = invoke(broken)
    assert result.exit_code == 2
    assert "empty.jpg" in result.output
