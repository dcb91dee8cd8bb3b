"""Calibration: ROC/EER math on hand-made scores, pairs files, tau bound to a model id, the
real pipeline and face_recognition on real photos, 1:N identification, and INT8 encoders
(ONNX Runtime QDQ; TensorRT calibrator batching and cache without TensorRT)."""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import typer
from typer.testing import CliRunner

from calibration.commands import eval_pairs_command, write_report_files
from calibration.errors import (
    CalibrationDataError,
    PairsFileError,
    ThresholdFileError,
    ThresholdModelMismatchError,
)
from calibration.identify import evaluate_identification, fnir_at_fpir
from calibration.int8 import compare_int8
from calibration.pairs import (
    LabelledPair,
    PairSet,
    load_pairs,
    pairs_from_folders,
    read_pairs_csv,
)
from calibration.roc import (
    PairScores,
    area_under_curve,
    best_accuracy_point,
    bootstrap_tau_at_far,
    equal_error_rate,
    operating_point,
    roc_curve,
    tau_at_far,
)
from calibration.threshold import (
    CalibratedTau,
    OpenSetTarget,
    ThresholdSettings,
    calibrate_threshold,
    load_calibrated_tau,
    read_calibrated_tau,
    save_calibrated_tau,
    tau_file,
)
from engines.errors import BackendUnavailableError, CalibrationSetError, ConfigError
from engines.models.encoder import EngineSettings, load_encoder
from engines.quantize import (
    MIN_CALIBRATION_CHIPS,
    FaceChipDataset,
    QuantizeSettings,
    quantize_encoder,
)
from engines.runtime.onnxrt import OrtEngine, OrtSettings
from engines.runtime.tensorrt.calibrator import (
    CalibrationBatches,
    CalibrationCache,
    calibration_cache_for,
    make_entropy_calibrator,
)
from engines.store import ModelStore, StoredModel
from pipeline.config.service import FaceStreamConfig
from pipeline.metrics import PipelineMetrics
from pipeline.recognition.analyzer import FaceAnalyzer
from pipeline.recognition.encode import FaceEncoder
from pipeline.service.app import open_analyzer
from pipeline.types import FaceChips

# genuine and impostor distances whose ROC is worked out by hand in the tests below
GENUINE = [0.1, 0.2, 0.3, 0.6]
IMPOSTOR = [0.5, 0.7, 0.8, 0.9]

# photos of ../shared/data/faces/face_recognition under 1300 px, by identity
PEOPLE = {
    "obama": [
        "examples/knn_examples/train/obama/obama.jpg",
        "examples/knn_examples/train/obama/obama2.jpg",
        "examples/obama_small.jpg",
        "examples/obama-480p.jpg",
    ],
    "biden": ["examples/knn_examples/train/biden/biden2.jpg"],
    "kit_harington": [
        "examples/knn_examples/train/kit_harington/john1.jpeg",
        "examples/knn_examples/train/kit_harington/john2.jpeg",
    ],
    "rose_leslie": [
        "examples/knn_examples/train/rose_leslie/img1.jpg",
        "examples/knn_examples/train/rose_leslie/img2.jpg",
    ],
    "alex_lacamoire": [
        "examples/alex-lacamoire.png",
        "examples/knn_examples/train/alex_lacamoire/img1.jpg",
    ],
}
NO_FACE = "dlib_faces/dogs.jpg"


def _hand_made() -> PairScores:
    return PairScores.from_lists(GENUINE + IMPOSTOR, [True] * 4 + [False] * 4)


def _link_people(root: Path, faces: Path, people: dict[str, list[str]]) -> Path:
    """ROOT/<identity>/<n>_<name>: symbolic links to the shared photos (nothing is copied)."""
    for identity, names in people.items():
        folder = root / identity
        folder.mkdir(parents=True)
        for index, name in enumerate(names):
            (folder / f"{index}_{Path(name).name}").symlink_to(faces / "face_recognition" / name)
    return root


# ---------------------------------------------------------------------------------------------
# ROC math on scores where the answer is known


def test_roc_on_hand_made_scores() -> None:
    """FAR/FRR, EER (0.25 where the curves cross at 0.5), AUC (15 of 16 pairs ordered) and
    the best-accuracy tau (7 of 8 right, halfway between 0.3 and 0.5) match hand computation."""
    scores = _hand_made()
    curve = roc_curve(scores)
    assert curve.thresholds.tolist() == [0.0, 0.1, 0.2, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9]
    assert curve.far.tolist() == [0, 0, 0, 0, 0.25, 0.25, 0.5, 0.75, 1.0]
    assert curve.frr.tolist() == [1.0, 0.75, 0.5, 0.25, 0.25, 0, 0, 0, 0]
    assert equal_error_rate(curve) == pytest.approx((0.25, 0.5))
    assert area_under_curve(curve) == pytest.approx(15 / 16)
    best = best_accuracy_point(scores, curve)
    assert best.tau == pytest.approx(0.4)
    assert best.accuracy == pytest.approx(7 / 8)


def test_tau_at_far_picks_the_largest_threshold_within_the_target() -> None:
    """At FAR 0 tau sits below the first impostor (0.5); at FAR 0.25 below the second (0.7)."""
    scores = _hand_made()
    assert tau_at_far(scores, 0.0) == pytest.approx(0.4)
    assert tau_at_far(scores, 0.25) == pytest.approx(0.65)
    point = operating_point(scores, 0.65)
    assert (point.far, point.frr, point.accuracy) == pytest.approx((0.25, 0.0, 7 / 8))


def test_an_impostor_at_distance_zero_leaves_a_tau_that_accepts_nothing() -> None:
    """A duplicate photo labelled as two people gives an impostor at 0; "accept nothing" must
    then be a tau below 0, since acceptance is distance <= tau (0.0 accepted that impostor)."""
    scores = PairScores(np.array([0.0, 0.3, 0.4, 0.5]), np.array([False, True, True, False]))
    tau = tau_at_far(scores, 0.0)
    assert tau < 0.0
    assert operating_point(scores, tau).far == 0.0


def test_auc_equals_the_mann_whitney_statistic_with_ties() -> None:
    """The trapezoid AUC is P(genuine < impostor) + P(tie) / 2, ties included."""
    generator = np.random.default_rng(3)
    genuine = np.round(generator.normal(0.4, 0.1, 60), 2)
    impostor = np.round(generator.normal(0.7, 0.1, 90), 2)
    scores = PairScores(
        np.concatenate([genuine, impostor]),
        np.concatenate([np.ones(60, np.bool_), np.zeros(90, np.bool_)]),
    )
    less = (genuine[:, None] < impostor[None, :]).mean()
    ties = (genuine[:, None] == impostor[None, :]).mean()
    assert area_under_curve(roc_curve(scores)) == pytest.approx(less + ties / 2)


def test_perfect_separation_and_unscored_pairs() -> None:
    """Separated scores give EER 0 and AUC 1; a genuine pair without a face (inf) is a false
    reject at every tau."""
    separated = PairScores.from_lists([0.1, 0.2, 0.8, 0.9], [True, True, False, False])
    curve = roc_curve(separated)
    assert equal_error_rate(curve)[0] == 0.0
    assert area_under_curve(curve) == 1.0
    unscored = PairScores.from_lists([0.1, np.inf, 0.8, 0.9], [True, True, False, False])
    assert operating_point(unscored, 10.0).frr == 0.5


def test_bootstrap_interval_is_seeded_and_brackets_the_estimate() -> None:
    """The same seed gives the same interval, and it contains the point estimate."""
    generator = np.random.default_rng(0)
    scores = PairScores(
        np.concatenate([generator.normal(0.4, 0.08, 200), generator.normal(0.8, 0.08, 400)]),
        np.concatenate([np.ones(200, np.bool_), np.zeros(400, np.bool_)]),
    )
    first = bootstrap_tau_at_far(scores, 0.01, resamples=200, seed=5)
    again = bootstrap_tau_at_far(scores, 0.01, resamples=200, seed=5)
    assert first == again
    assert first.low <= tau_at_far(scores, 0.01) <= first.high


def test_scores_need_both_kinds_of_pairs() -> None:
    """Without impostor pairs FAR is unmeasurable: CalibrationDataError, also a ValueError."""
    with pytest.raises(CalibrationDataError, match="no impostor"):
        PairScores.from_lists([0.1, 0.2], [True, True])
    assert issubclass(CalibrationDataError, ValueError)


def test_fnir_at_fpir_on_hand_made_probes() -> None:
    """With unknown probes at 0.5 and 0.9 and FPIR 50 %, tau lies between 0.9 and the next
    smaller probe distance, 0.8: only the wrongly ranked mated probe is missed, FNIR 1/4; at
    FPIR 0 tau falls between 0.3 and 0.5 and the mated probes at 0.6 and 0.8 are missed too."""
    tau, fpir, fnir = fnir_at_fpir(
        np.array([True, True, False, True]),
        np.array([0.3, 0.8, 0.2, 0.6]),
        np.array([0.5, 0.9]),
        0.5,
    )
    assert tau == pytest.approx(0.85)
    assert (fpir, fnir) == pytest.approx((0.5, 0.25))
    tau, fpir, fnir = fnir_at_fpir(
        np.array([True, True, False, True]),
        np.array([0.3, 0.8, 0.2, 0.6]),
        np.array([0.5, 0.9]),
        0.0,
    )
    assert tau == pytest.approx(0.4)
    assert (fpir, fnir) == pytest.approx((0.0, 0.75))


# ---------------------------------------------------------------------------------------------
# pairs files and folders


def test_pairs_csv_with_a_missing_image_names_it(shared_data: Path, tmp_path: Path) -> None:
    """Every image a pairs CSV names must exist; the error names the missing file."""
    photo = shared_data / "faces" / "face_recognition" / PEOPLE["obama"][0]
    relative = os.path.relpath(photo, tmp_path)
    csv_file = tmp_path / "pairs.csv"
    csv_file.write_text(f"path_a,path_b,same,note\n{relative},nobody.jpg,0,x\n")
    with pytest.raises(PairsFileError, match=r"1 image\(s\) not found: .*nobody\.jpg"):
        read_pairs_csv(csv_file)
    csv_file.write_text(f"path_a,path_b,same\n{relative},{relative},1\n")
    (pair,) = read_pairs_csv(csv_file).pairs
    assert pair.same
    assert pair.path_a.resolve() == photo.resolve()


def test_pairs_csv_needs_its_columns(tmp_path: Path) -> None:
    """A CSV without the ``same`` column is refused, naming what is missing."""
    csv_file = tmp_path / "pairs.csv"
    csv_file.write_text("path_a,path_b\na.jpg,b.jpg\n")
    with pytest.raises(PairsFileError, match="missing same"):
        read_pairs_csv(csv_file)


def test_pairs_from_folders_are_seeded(shared_data: Path, tmp_path: Path) -> None:
    """Same folder and seed give the same pairs; genuine pairs are every same-identity pair."""
    root = _link_people(tmp_path / "people", shared_data / "faces", PEOPLE)
    first = pairs_from_folders(root, seed=1)
    assert first == pairs_from_folders(root, seed=1)
    assert first.genuine_count == 6 + 1 + 1 + 1  # obama 4 photos, kit, rose, alex 2 each
    assert len(first) - first.genuine_count == 27  # three impostors per genuine pair
    assert all(pair.path_a.parent != pair.path_b.parent for pair in first.pairs if not pair.same)


def test_one_identity_gives_no_impostor_pairs(shared_data: Path, tmp_path: Path) -> None:
    """A folder with one identity cannot calibrate FAR: a clear CalibrationDataError."""
    root = _link_people(tmp_path / "one", shared_data / "faces", {"obama": PEOPLE["obama"]})
    with pytest.raises(CalibrationDataError, match="at least 2 identities"):
        pairs_from_folders(root)


def test_labels_csv_gives_every_pair_of_single_face_images(
    shared_data: Path, tmp_path: Path
) -> None:
    """A labels CSV (path,identity) gives every pair of its single-face images, labelled by
    identity; group photos, no-face rows and byte duplicates are left out."""
    faces = shared_data / "faces" / "face_recognition"
    rows = [
        (PEOPLE["obama"][0], "barack_obama", "1", ""),
        (PEOPLE["obama"][1], "barack_obama", "1", ""),
        (PEOPLE["obama"][1], "barack_obama", "1", PEOPLE["obama"][1]),  # a duplicate
        (PEOPLE["kit_harington"][0], "kit_harington", "1", ""),
        (PEOPLE["rose_leslie"][0], "__multi__", "multi", ""),
    ]
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "path,identity,n_faces,duplicate_of\n"
        + "".join(
            f"{os.path.relpath(faces / name, tmp_path)},{who},{count},{twin}\n"
            for name, who, count, twin in rows
        )
    )
    pair_set = load_pairs(labels)
    assert len(pair_set) == 3  # obama-obama, obama-kit twice
    assert pair_set.genuine_count == 1
    (genuine,) = (pair for pair in pair_set.pairs if pair.same)
    assert {genuine.path_a, genuine.path_b} == {
        labels.parent / os.path.relpath(faces / name, tmp_path) for name in PEOPLE["obama"][:2]
    }
    labels.write_text(
        f"path,identity\n{os.path.relpath(faces / PEOPLE['kit_harington'][0], tmp_path)},k\n"
    )
    with pytest.raises(CalibrationDataError, match="at least 2 identities"):
        load_pairs(labels)


# ---------------------------------------------------------------------------------------------
# tau bound to the encoder's model id


def test_calibrated_tau_is_refused_for_another_model(tmp_path: Path) -> None:
    """The saved tau loads for its model id, is refused for another one, and is None when
    nothing was saved; a damaged file is a ThresholdFileError."""
    assert load_calibrated_tau(tmp_path, "model-a") is None
    calibrated = CalibratedTau("model-a", 0.52, 1e-3, 0.0, 0.1, 100, "pairs.csv", (0.5, 0.55))
    save_calibrated_tau(tmp_path, calibrated)
    assert load_calibrated_tau(tmp_path, "model-a") == 0.52
    with pytest.raises(ThresholdModelMismatchError, match="calibrated for model 'model-a'"):
        load_calibrated_tau(tmp_path, "model-b")
    tau_file(tmp_path).write_text('{"model_id": "model-a"}')
    with pytest.raises(ThresholdFileError, match="not a calibrated tau file"):
        load_calibrated_tau(tmp_path, "model-a")
    assert issubclass(ThresholdModelMismatchError, ValueError)


def test_open_set_tau_tightens_with_the_gallery_size_and_is_saved_with_it(tmp_path: Path) -> None:
    """FPIR = 1 - (1 - FAR)^N: one identity needs FAR = FPIR, a thousand need about a
    thousandth of it; the tau chosen on hand-made scores falls as N grows; N is saved."""
    assert OpenSetTarget(0.01, 1).target_far == pytest.approx(0.01)
    thousand = OpenSetTarget(0.01, 1000)
    assert thousand.target_far == pytest.approx(1.00503e-5, rel=1e-4)
    assert thousand.fpir(thousand.target_far) == pytest.approx(0.01)
    assert OpenSetTarget(0.01, 1_000_000).target_far > 0  # no underflow to 0
    scores = PairScores.from_lists(
        [0.2, 0.3, 0.35] + [0.5 + 0.001 * n for n in range(1000)], [True] * 3 + [False] * 1000
    )
    taus = [tau_at_far(scores, OpenSetTarget(0.05, size).target_far) for size in (1, 10, 100)]
    assert taus[0] > taus[1] > taus[2]
    with pytest.raises(CalibrationDataError, match="gallery size"):
        OpenSetTarget(0.01, 0)
    calibrated = CalibratedTau(
        "model-a", 0.5, 1e-5, 0.0, 0.1, 100, "pairs.csv", gallery_size=1000, target_fpir=0.01
    )
    save_calibrated_tau(tmp_path, calibrated)
    assert read_calibrated_tau(tmp_path) == calibrated


# ---------------------------------------------------------------------------------------------
# the real pipeline on real photos


@pytest.fixture(scope="module")
def analyzer(session_store: ModelStore) -> Iterator[FaceAnalyzer]:
    """The service's default detect + align + encode on the session's model store."""
    with open_analyzer(FaceStreamConfig(data_dir=session_store.data_dir)) as built:
        yield built


@pytest.mark.slow
def test_calibration_on_real_photos_counts_missing_faces(
    analyzer: FaceAnalyzer, shared_data: Path, tmp_path: Path
) -> None:
    """On 36 pairs of real photos plus 2 with a dogs-only photo: both pipelines run, the dog
    pairs are counted as no-face (and rejected), facestream separates the people (AUC > 0.95),
    the small-face copies are measured too, and report and plots are written."""
    root = _link_people(tmp_path / "people", shared_data / "faces", PEOPLE)
    folder_pairs = pairs_from_folders(root, seed=0)
    dogs = shared_data / "faces" / NO_FACE
    extra = (
        LabelledPair(dogs, folder_pairs.pairs[0].path_a, same=False),
        LabelledPair(dogs, folder_pairs.pairs[-1].path_b, same=False),
    )
    pairs = PairSet(folder_pairs.pairs + extra, root)
    settings = ThresholdSettings(degradations=("small",), bootstrap_resamples=50)
    report = calibrate_threshold(pairs, analyzer, settings)
    ours, theirs = report.ours, report.result("face_recognition")
    assert ours.scored.no_face_pairs == 2
    assert dogs in ours.scored.no_face_images
    assert theirs.scored.no_face_pairs >= 2
    assert ours.auc > 0.95
    assert ours.reference.accuracy >= 0.9
    assert report.result("facestream", "small").scored.scores.distances.shape == (38,)
    assert report.model_id == analyzer.model_id
    files = write_report_files(report, tmp_path / "report")
    assert files["roc"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert files["det"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    written = json.loads(files["report"].read_text())
    assert written["n_pairs"] == 38
    assert written["tau"] == pytest.approx(report.tau, abs=1e-6)


@pytest.mark.slow
def test_eval_pairs_command_prints_the_summary_last(
    session_store: ModelStore, shared_data: Path, tmp_path: Path
) -> None:
    """`eval pairs --json` ends with the summary object, no-face pairs counted."""
    faces = shared_data / "faces" / "face_recognition"
    photos = [
        (identity, faces / name)
        for identity in ("obama", "kit_harington", "rose_leslie")
        for name in PEOPLE[identity]
    ]
    lines = ["path_a,path_b,same"]
    for first in range(len(photos)):
        for second in range(first + 1, len(photos)):
            (who_a, path_a), (who_b, path_b) = photos[first], photos[second]
            lines.append(
                f"{os.path.relpath(path_a, tmp_path)},{os.path.relpath(path_b, tmp_path)},"
                f"{int(who_a == who_b)}"
            )
    dogs = os.path.relpath(shared_data / "faces" / NO_FACE, tmp_path)
    lines.append(f"{dogs},{os.path.relpath(photos[0][1], tmp_path)},0")
    (tmp_path / "pairs.csv").write_text("\n".join(lines) + "\n")
    config = tmp_path / "config.toml"
    config.write_text(f'data_dir = "{session_store.data_dir}"\n')
    app = typer.Typer()
    app.command()(eval_pairs_command)
    result = CliRunner().invoke(
        app, ["--pairs", str(tmp_path / "pairs.csv"), "--config", str(config), "--json"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    expected = {"n_pairs", "accuracy", "baseline_accuracy", "tau", "far", "frr", "auc",
                "tar_at_far_1e-3", "no_face"}  # fmt: skip
    assert expected <= set(summary)
    assert summary["n_pairs"] == 29
    assert summary["no_face"] == 1
    assert summary["tau"] == 0.6


@pytest.mark.slow
def test_identification_with_unknown_probes(
    analyzer: FaceAnalyzer, shared_data: Path, tmp_path: Path
) -> None:
    """Three enrolled people, four of their photos as probes and three photos of two people
    never enrolled: every enrolled probe is ranked first, and at FPIR 1 % no stranger gets in."""
    faces = shared_data / "faces"
    gallery = _link_people(
        tmp_path / "gallery",
        faces,
        {
            "obama": PEOPLE["obama"][:1],
            "biden": PEOPLE["biden"],
            "rose_leslie": PEOPLE["rose_leslie"][:1],
        },
    )
    probes = _link_people(
        tmp_path / "probes",
        faces,
        {
            "obama": PEOPLE["obama"][1:3],
            "biden": ["examples/biden.jpg"],
            "rose_leslie": PEOPLE["rose_leslie"][1:],
            "kit_harington": PEOPLE["kit_harington"],
            "alex_lacamoire": PEOPLE["alex_lacamoire"][:1],
        },
    )
    report = evaluate_identification(analyzer, gallery, probes)
    assert (report.mated_probes, report.non_mated_probes) == (4, 3)
    assert report.rank1_accuracy == 1.0
    assert report.fpir == 0.0


# ---------------------------------------------------------------------------------------------
# INT8


def _chips(face_chips: list[npt.NDArray[np.uint8]], start: int, stop: int) -> FaceChipDataset:
    return FaceChipDataset(np.stack(face_chips[start:stop]).astype(np.uint8))


def test_too_small_calibration_set_states_the_minimum(
    session_store: ModelStore, encoder_model: StoredModel, face_chips: list[npt.NDArray[np.uint8]]
) -> None:
    """Five chips cannot calibrate INT8: the error says how many are needed."""
    with pytest.raises(CalibrationSetError, match=f"at least {MIN_CALIBRATION_CHIPS}"):
        quantize_encoder(session_store, encoder_model, _chips(face_chips, 0, 5))
    assert issubclass(CalibrationSetError, ConfigError)


def test_dataset_batches_are_the_pipeline_input(
    ort_engine: OrtEngine, face_chips: list[npt.NDArray[np.uint8]]
) -> None:
    """The calibration batches are exactly what FaceEncoder feeds the engine: same vectors."""
    dataset = _chips(face_chips, 0, 8)
    (batch,) = dataset.batches(16)
    (input_name,) = ort_engine.inputs
    (output,) = ort_engine.infer({input_name: batch}).values()
    encoded = FaceEncoder(ort_engine, PipelineMetrics.create()).encode(FaceChips(dataset.chips))
    np.testing.assert_array_equal(encoded.vectors, output)


@pytest.mark.slow
def test_int8_encoder_keeps_cosine_on_held_out_chips(
    session_store: ModelStore, encoder_model: StoredModel, face_chips: list[npt.NDArray[np.uint8]]
) -> None:
    """Calibrated on 32 real chips, the int8 encoder's descriptors of the other chips have
    cosine >= 0.99 to fp32's; its manifest says int8 under a new model id, which is what
    the onnxruntime backend loads for precision int8."""
    calibration = _chips(face_chips, 0, 32)
    held_out = _chips(face_chips, 32, len(face_chips))
    assert len(held_out) >= 8, "too few chips left to check"
    int8 = quantize_encoder(session_store, encoder_model, calibration, QuantizeSettings())
    assert int8.manifest.precision == "int8"
    assert int8.manifest.model_id != encoder_model.manifest.model_id
    assert int8.manifest.build["calibration_sha256"] == calibration.fingerprint
    settings = OrtSettings(intra_op_threads=2)
    with (
        OrtEngine(encoder_model.path, session_store, settings) as fp32_engine,
        OrtEngine(int8.path, session_store, settings) as int8_engine,
    ):
        report = compare_int8(fp32_engine, int8_engine, held_out)
    assert report.cosine_min >= 0.99, report.as_dict()
    loaded = load_encoder(session_store, EngineSettings(precision="int8", threads=2))
    try:
        assert loaded.model_id == int8.manifest.model_id
    finally:
        loaded.close()


def test_tensorrt_calibration_batches_are_full_and_restart(
    face_chips: list[npt.NDArray[np.uint8]],
) -> None:
    """40 chips at batch 16 give two full float32 NCHW batches (the rest is left out), then
    None; reset starts over. Fewer chips than the minimum are refused."""
    batches = CalibrationBatches(_chips(face_chips, 0, 40), 16)
    first, second = batches.next_batch(), batches.next_batch()
    assert first is not None
    assert second is not None
    assert first.shape == (16, 3, 150, 150)
    assert first.dtype == np.float32
    assert batches.next_batch() is None
    assert len(batches) == 2
    assert batches.batch_nbytes == first.nbytes
    batches.reset()
    again = batches.next_batch()
    assert again is not None
    np.testing.assert_array_equal(again, first)
    with pytest.raises(CalibrationSetError, match=f"at least {MIN_CALIBRATION_CHIPS}"):
        CalibrationBatches(_chips(face_chips, 0, 20), 16)


def test_tensorrt_calibration_cache_is_keyed_by_model_and_chips(
    tmp_path: Path, encoder_model: StoredModel, face_chips: list[npt.NDArray[np.uint8]]
) -> None:
    """The cache file's name carries the model's sha256 and the chips' fingerprint; it reads
    back what was written, and None before that."""
    store = ModelStore(tmp_path)
    chips = _chips(face_chips, 0, 32)
    cache = calibration_cache_for(store, encoder_model.manifest, chips)
    assert encoder_model.manifest.artifact_sha256[:16] in cache.path.name
    other = calibration_cache_for(store, encoder_model.manifest, _chips(face_chips, 1, 33))
    assert other.path != cache.path
    assert cache.read() is None
    cache.write(b"TRT-1001-EntropyCalibration2\n")
    assert CalibrationCache(cache.path).read() == b"TRT-1001-EntropyCalibration2\n"


def test_tensorrt_calibrator_needs_tensorrt(face_chips: list[npt.NDArray[np.uint8]]) -> None:
    """Without TensorRT, making the calibrator is a BackendUnavailableError, not a crash."""
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here")
    from engines.runtime.tensorrt.cuda import CudaRuntime, DeviceBuffer  # noqa: PLC0415

    batches = CalibrationBatches(_chips(face_chips, 0, 32), 16)
    cache = CalibrationCache(Path("unused.calib"))
    with pytest.raises(BackendUnavailableError, match="TensorRT is not installed"):
        make_entropy_calibrator(batches, cache, DeviceBuffer(0, 1), CudaRuntime())
