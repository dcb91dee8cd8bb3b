"""Triplet-loss adapter and pair verifier: the loss and miners on hand-made embeddings where the
answer is known, the head learning a nuisance it can generalise, its ONNX appended to the real
encoder, gallery re-encoding on a real Redis, and the commands on real photos."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import pytest
import redis
import torch
from typer.testing import CliRunner

from calibration.adapter import (
    AdapterSettings,
    TrainedAdapter,
    batch_hard_triplets,
    evaluate_adapter,
    semi_hard_triplets,
    squared_distances,
    train_adapter,
    triplet_loss,
)
from calibration.errors import CalibrationDataError
from calibration.faceset import LabelledFaces, all_pairs, identity_folds, split_identities
from calibration.verifier import LogisticVerifier, compare_verifiers, mcnemar_exact_p
from engines.errors import ConfigError, ModelFileError
from engines.models.adapter import adapted_model_id, build_adapted_encoder, read_adapter
from engines.models.encoder import EngineSettings, load_encoder
from engines.store import ModelStore, StoredModel
from pipeline.cli.main import app
from pipeline.config.service import GalleryConfig
from pipeline.errors import GalleryRequestError
from pipeline.gallery.model import Enrollment
from pipeline.gallery.reencode import reencode_from
from pipeline.gallery.store import Gallery
from pipeline.metrics import PipelineMetrics
from pipeline.types import Embeddings

BASE_MODEL = "encoder-test"

# four points on a line: identities 0, 0, 1, 1 at x = 0, 1, 1.5, 4 (squared distances by hand)
LINE = torch.tensor([[0.0], [1.0], [1.5], [4.0]])
LINE_LABELS = torch.tensor([0, 0, 1, 1])


def _faces(vectors: npt.NDArray[np.floating], labels: list[int]) -> LabelledFaces:
    names = tuple(f"person{label:02d}" for label in labels)
    paths = tuple(Path(f"{index}.jpg") for index in range(len(labels)))
    return LabelledFaces(np.asarray(vectors, np.float32), names, paths, BASE_MODEL)


def _nuisance_faces(seed: int, people: int = 12, per_person: int = 6) -> LabelledFaces:
    """People 0.25 apart in 16 dimensions plus a strong shared nuisance along one axis (a
    camera effect): the distance is fooled by it, a learnt projection can drop it."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=0.25 / np.sqrt(2 * 16), size=(people, 16))
    nuisance = np.zeros(16)
    nuisance[0] = 1.0
    vectors = [
        centre + rng.normal(scale=0.01, size=16) + rng.normal(scale=0.4) * nuisance
        for centre in centres
        for _ in range(per_person)
    ]
    labels = [person for person in range(people) for _ in range(per_person)]
    return _faces(np.array(vectors) + 1.0, labels)  # away from 0: norms stay well defined


# ---------------------------------------------------------------------------------------------
# loss and miners


def test_squared_distances_equal_brute_force() -> None:
    points = torch.randn(7, 5, generator=torch.Generator().manual_seed(0))
    expected = ((points[:, None, :] - points[None, :, :]) ** 2).sum(dim=2)
    assert torch.allclose(squared_distances(points), expected, atol=1e-5)


def test_batch_hard_picks_farthest_positive_and_nearest_negative() -> None:
    to_positive, to_negative = batch_hard_triplets(squared_distances(LINE), LINE_LABELS)
    assert to_positive.tolist() == [1.0, 1.0, 6.25, 6.25]
    assert to_negative.tolist() == [2.25, 0.25, 0.25, 9.0]


def test_semi_hard_picks_nearest_negative_beyond_the_positive() -> None:
    """Pairs (0,1), (1,0), (2,3), (3,2): for (2,3) no negative is farther than 6.25, so the
    farthest one (2.25) stands in."""
    to_positive, to_negative = semi_hard_triplets(squared_distances(LINE), LINE_LABELS)
    assert to_positive.tolist() == [1.0, 1.0, 6.25, 6.25]
    assert to_negative.tolist() == [2.25, 9.0, 2.25, 9.0]


def test_anchors_without_a_positive_are_left_out() -> None:
    distances = squared_distances(LINE[1:])
    labels = torch.tensor([0, 1, 1])
    to_positive, to_negative = batch_hard_triplets(distances, labels)
    assert to_positive.tolist() == [6.25, 6.25]  # anchors 1 and 2 only
    assert to_negative.tolist() == [0.25, 9.0]  # x = 1.5 and 4 against x = 1
    assert semi_hard_triplets(distances, labels)[0].tolist() == [6.25, 6.25]
    assert batch_hard_triplets(distances, torch.tensor([0, 0, 0]))[0].numel() == 0


def test_triplet_loss_is_the_hinge_of_the_margin() -> None:
    loss = triplet_loss(torch.tensor([1.0, 1.0, 6.25]), torch.tensor([2.25, 0.25, 9.0]), margin=0.5)
    assert loss.item() == pytest.approx((0.0 + 1.25 + 0.0) / 3)
    assert triplet_loss(torch.zeros(0), torch.zeros(0), margin=0.5).item() == 0.0


# ---------------------------------------------------------------------------------------------
# training and the held-out verdict


@pytest.mark.parametrize("mining", ["batch-hard", "semi-hard"])
def test_adapter_learns_to_ignore_a_shared_nuisance_on_unseen_people(mining: str) -> None:
    faces = _nuisance_faces(seed=3)
    train, held_out = split_identities(faces, holdout_fraction=0.4, seed=0)
    assert not set(train.identities) & set(held_out.identities)
    settings = AdapterSettings(
        mining="semi-hard" if mining == "semi-hard" else "batch-hard",
        steps=300,
        learning_rate=1e-2,
        stay_close=0.0,
        margin=0.05,
    )
    adapter = train_adapter(train, settings)
    report = evaluate_adapter(adapter, train, held_out)
    assert report.encoder.auc < 0.9, "the nuisance should fool the plain distance"
    assert report.adapted.auc > report.encoder.auc + 0.05
    assert report.adapted.eer < report.encoder.eer
    assert adapter.losses[-1] < adapter.losses[0]


def test_adapter_starts_as_the_identity_up_to_scale() -> None:
    faces = _nuisance_faces(seed=4)
    adapter = train_adapter(faces, AdapterSettings(steps=1, learning_rate=1e-9))
    norms = np.linalg.norm(faces.vectors, axis=1, keepdims=True)
    expected = faces.vectors / norms * adapter.scale
    assert np.allclose(adapter.apply(faces.vectors), expected, atol=1e-5)


def test_too_few_people_are_refused_with_the_reason() -> None:
    one_person = _faces(np.ones((3, 4), np.float32), [0, 0, 0])
    with pytest.raises(CalibrationDataError, match="at least 2 identities"):
        train_adapter(one_person, AdapterSettings())
    with pytest.raises(CalibrationDataError, match="at least 4 identities"):
        split_identities(
            _faces(np.eye(4, dtype=np.float32), [0, 0, 1, 1]), holdout_fraction=0.3, seed=0
        )
    with pytest.raises(CalibrationDataError, match="mining"):
        AdapterSettings(mining="random")  # type: ignore[arg-type]


def test_identity_folds_split_people_not_photos() -> None:
    faces = _nuisance_faces(seed=5, people=7, per_person=2)
    folds = identity_folds(faces, folds=3, seed=0)
    assert set().union(*folds) == set(faces.identity_names)
    assert sum(len(fold) for fold in folds) == 7
    pairs = all_pairs(faces)
    assert pairs.same.sum() == 7  # one genuine pair per person
    assert len(pairs.same) == 14 * 13 // 2


# ---------------------------------------------------------------------------------------------
# the logistic verifier


def test_mcnemar_exact_p_values() -> None:
    assert mcnemar_exact_p(0, 0) == 1.0
    assert mcnemar_exact_p(5, 0) == pytest.approx(2 / 32)
    assert mcnemar_exact_p(6, 0) == pytest.approx(2 / 64)
    assert mcnemar_exact_p(3, 3) == 1.0


def test_logistic_verifier_weights_the_informative_dimensions() -> None:
    """Dimension 0 tells same from different, dimension 1 is loud noise: the fit weights
    dimension 0 against "same" (a larger |a - b| means less likely the same person)."""
    rng = np.random.default_rng(0)
    same = rng.random(400) < 0.5
    features = np.column_stack(
        [np.where(same, 0.1, 0.5) + rng.normal(scale=0.05, size=400), rng.normal(size=400)]
    )
    verifier = LogisticVerifier.fit(np.abs(features), same, kind="abs", l2=1.0)
    assert verifier.weights[0] < -1.0
    assert abs(verifier.weights[1]) < abs(verifier.weights[0]) / 5


def test_verifier_beats_the_distance_only_where_the_distance_is_fooled() -> None:
    fooled = compare_verifiers(_nuisance_faces(seed=6, people=15), folds=3, seed=0)
    assert fooled.beats_distance("logistic_abs")
    assert fooled.methods["logistic_abs"].auc > fooled.methods["distance"].auc
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(10, 8))
    clean = _faces(
        np.repeat(centres, 4, axis=0) + rng.normal(scale=0.01, size=(40, 8)),
        [person for person in range(10) for _ in range(4)],
    )
    separable = compare_verifiers(clean, folds=5, seed=0)
    assert separable.methods["distance"].accuracy == 1.0
    assert not separable.beats_distance("logistic_abs")
    assert not separable.beats_distance("logistic_chi2")


# ---------------------------------------------------------------------------------------------
# the head as ONNX, appended to the real encoder


def _trained(base_model_id: str) -> TrainedAdapter:
    rng = np.random.default_rng(8)
    return TrainedAdapter(
        weight=(np.eye(128) + rng.normal(scale=0.05, size=(128, 128))).astype(np.float32),
        bias=rng.normal(scale=0.01, size=128).astype(np.float32),
        scale=1.5,
        base_model_id=base_model_id,
        losses=(0.0,),
    )


def _write_head(adapter: TrainedAdapter, path: Path) -> Path:
    path.write_bytes(adapter.onnx_model().SerializeToString())
    return path


def test_head_onnx_computes_what_the_trained_head_computes(tmp_path: Path) -> None:
    adapter = _trained(BASE_MODEL)
    head = read_adapter(_write_head(adapter, tmp_path / "head.onnx"))
    descriptors = np.random.default_rng(9).normal(size=(5, 128)).astype(np.float32)
    session = ort.InferenceSession(str(head.path), providers=["CPUExecutionProvider"])
    (from_onnx,) = session.run(None, {"descriptor": descriptors})
    assert np.allclose(from_onnx, adapter.apply(descriptors), atol=1e-5)
    assert np.allclose(head.apply(descriptors), adapter.apply(descriptors), atol=1e-6)
    assert head.base_model_id == BASE_MODEL


def test_encoder_with_adapter_is_one_model_with_a_new_id(
    session_store: ModelStore,
    encoder_model: StoredModel,
    face_chips: list[npt.NDArray[np.uint8]],
    tmp_path: Path,
) -> None:
    base_id = encoder_model.manifest.model_id
    head_path = _write_head(_trained(base_id), tmp_path / "head.onnx")
    head = read_adapter(head_path)
    adapted = build_adapted_encoder(session_store, encoder_model, head_path)
    assert adapted.manifest.model_id == adapted_model_id(base_id, head.sha256) != base_id
    assert adapted.manifest.build["base_model_id"] == base_id
    # the encoder's own input: float32 NCHW 0..255, as FaceEncoder feeds it
    chips = np.ascontiguousarray(np.stack(face_chips[:6]).transpose(0, 3, 1, 2), np.float32)
    plain = load_encoder(session_store, EngineSettings(threads=2))
    with_head = load_encoder(session_store, EngineSettings(threads=2, adapter=head_path))
    try:
        assert with_head.model_id == adapted.manifest.model_id
        base = plain.infer({"chips": chips})["descriptors"]
        merged = with_head.infer({"chips": chips})["descriptors"]
    finally:
        plain.close()
        with_head.close()
    assert np.allclose(merged, head.apply(base), atol=1e-4)
    assert build_adapted_encoder(session_store, encoder_model, head_path).path == adapted.path


def test_adapter_for_another_encoder_or_a_bad_file_is_refused(
    session_store: ModelStore, encoder_model: StoredModel, tmp_path: Path
) -> None:
    other = _write_head(_trained("some-other-encoder"), tmp_path / "other.onnx")
    with pytest.raises(ModelFileError, match="trained on encoder 'some-other-encoder'"):
        build_adapted_encoder(session_store, encoder_model, other)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    with pytest.raises(ModelFileError, match="not a valid ONNX adapter"):
        read_adapter(garbage)
    with pytest.raises(ModelFileError, match="cannot read"):
        read_adapter(tmp_path / "absent.onnx")
    with pytest.raises(ConfigError, match="adapter"):
        EngineSettings(backend="torch", adapter=other)
    with pytest.raises(ConfigError, match="adapter"):
        EngineSettings(precision="int8", adapter=other)


# ---------------------------------------------------------------------------------------------
# gallery re-encoding on a real Redis


def test_gallery_reencode_makes_adapted_templates_once(
    clients: Callable[[], redis.Redis], tmp_path: Path
) -> None:
    adapter = _trained(BASE_MODEL)
    head = read_adapter(_write_head(adapter, tmp_path / "head.onnx"))
    target = adapted_model_id(BASE_MODEL, head.sha256)
    config = GalleryConfig(socket_timeout_seconds=2.0)
    plain = Gallery(clients(), PipelineMetrics.create(), model_id=BASE_MODEL, config=config)
    rng = np.random.default_rng(10)
    templates = {
        name: rng.normal(size=(count, 128)).astype(np.float32)
        for name, count in (("ada", 2), ("bo", 1))
    }
    plain.enroll_many(
        [
            Enrollment(name=name, identity_id=name, embeddings=Embeddings(vectors, BASE_MODEL))
            for name, vectors in templates.items()
        ]
    )
    adapted = Gallery(clients(), PipelineMetrics.create(), model_id=target, config=config)
    assert adapted.list_identities()[0].template_counts.get(target) is None
    first = reencode_from(adapted, BASE_MODEL, head.apply)
    again = reencode_from(adapted, BASE_MODEL, head.apply)
    assert (first.identities, first.templates) == (again.identities, again.templates) == (2, 3)
    counts = {
        identity.identity_id: dict(identity.template_counts)
        for identity in adapted.list_identities()
    }
    assert counts == {"ada": {BASE_MODEL: 2, target: 2}, "bo": {BASE_MODEL: 1, target: 1}}
    probe = head.apply(templates["ada"][:1])
    best = adapted.identify(Embeddings(probe, target), max_distance=1e-4).best()[0]
    assert best is not None
    assert best.identity_id == "ada"
    # the plain gallery still answers with the encoder's own templates
    plain_best = plain.identify(Embeddings(templates["bo"], BASE_MODEL), max_distance=1e-4).best()[
        0
    ]
    assert plain_best is not None
    assert plain_best.identity_id == "bo"
    with pytest.raises(GalleryRequestError, match="already is"):
        reencode_from(adapted, target, head.apply)


# ---------------------------------------------------------------------------------------------
# the commands on real photos

PEOPLE = {
    "obama": [
        "knn_examples/train/obama/obama.jpg",
        "knn_examples/train/obama/obama2.jpg",
        "obama-480p.jpg",
    ],
    "biden": ["knn_examples/train/biden/biden.jpg", "knn_examples/train/biden/biden2.jpg"],
    "kit_harington": [
        "knn_examples/train/kit_harington/john1.jpeg",
        "knn_examples/train/kit_harington/john2.jpeg",
    ],
    "rose_leslie": [
        "knn_examples/train/rose_leslie/img1.jpg",
        "knn_examples/train/rose_leslie/img2.jpg",
    ],
}


def _identity_folders(root: Path, shared_data: Path) -> Path:
    """ROOT/<identity>/<photo>: links to the shared photos (nothing is copied)."""
    examples = shared_data / "faces" / "face_recognition" / "examples"
    for identity, names in PEOPLE.items():
        (root / identity).mkdir(parents=True)
        for index, name in enumerate(names):
            (root / identity / f"{index}_{Path(name).name}").symlink_to(examples / name)
    (root / "nobody").mkdir()
    (root / "nobody" / "dogs.jpg").symlink_to(shared_data / "faces" / "dlib_faces" / "dogs.jpg")
    return root


@pytest.mark.slow
def test_train_adapter_then_reencode_and_eval_verifier_commands(
    session_store: ModelStore, shared_data: Path, tmp_path: Path
) -> None:
    faces = _identity_folders(tmp_path / "faces", shared_data)
    config = tmp_path / "config.toml"
    config.write_text(f'data_dir = "{session_store.data_dir}"\n')
    runner = CliRunner()
    head_path = tmp_path / "site.onnx"
    trained = runner.invoke(
        app,
        ["train", "adapter", "--faces", str(faces), "-c", str(config), "--holdout", "0",
         "--steps", "30", "--out", str(head_path), "--json"],
    )  # fmt: skip
    assert trained.exit_code == 0, trained.output
    summary = json.loads(trained.output.strip().splitlines()[-1])
    assert summary["identities"] == 4
    assert summary["faces"] == 9
    assert summary["no_face"] == 1  # the dogs photo is counted, not dropped silently
    assert summary["model_id"] == adapted_model_id(
        summary["base_model_id"], read_adapter(head_path).sha256
    )
    assert Path(summary["encoder_onnx"]).is_file()
    assert head_path.with_suffix(".report.json").is_file()

    adapted_config = tmp_path / "adapted.toml"
    adapted_config.write_text(
        f'data_dir = "{session_store.data_dir}"\n[gallery]\nnamespace = "adapter-test"\n'
        f'[engine]\nadapter = "{head_path}"\n'
    )
    base_config = tmp_path / "base.toml"
    base_config.write_text(
        f'data_dir = "{session_store.data_dir}"\n[gallery]\nnamespace = "adapter-test"\n'
    )
    photo = faces / "obama" / "0_obama.jpg"
    enrolled = runner.invoke(
        app, ["enroll", "obama", str(photo), "--id", "obama", "-c", str(base_config)]
    )
    assert enrolled.exit_code == 0, enrolled.output
    reencoded = runner.invoke(app, ["gallery", "reencode", "-c", str(adapted_config), "--json"])
    assert reencoded.exit_code == 0, reencoded.output
    moved = json.loads(reencoded.output.strip().splitlines()[-1])
    assert (moved["identities"], moved["templates"]) == (1, 1)
    assert moved["to_model_id"] == summary["model_id"]
    found = runner.invoke(
        app, ["identify", str(faces / "obama" / "1_obama2.jpg"), "-c", str(adapted_config)]
    )
    assert found.exit_code == 0, found.output
    assert (
        json.loads(found.output.strip().splitlines()[-1])["faces"][0]["matches"][0]["identity_id"]
        == "obama"
    )

    missing = runner.invoke(app, ["gallery", "reencode", "-c", str(base_config)])
    assert missing.exit_code == 2
    assert "no adapter" in missing.output

    verifier = runner.invoke(
        app,
        ["eval", "verifier", "--faces", str(faces), "-c", str(config), "--folds", "2", "--json"],
    )
    assert verifier.exit_code == 0, verifier.output
    report = json.loads(verifier.output.strip().splitlines()[-1])
    assert set(report["methods"]) == {"distance", "logistic_abs", "logistic_chi2"}
    assert report["identities"] == 4
    assert report["genuine_pairs"] + report["impostor_pairs"] > 0


def test_train_adapter_with_one_person_says_why(
    session_store: ModelStore, shared_data: Path, tmp_path: Path
) -> None:
    faces = tmp_path / "faces" / "obama"
    faces.mkdir(parents=True)
    (faces / "a.jpg").symlink_to(
        shared_data / "faces" / "face_recognition" / "examples" / "obama.jpg"
    )
    config = tmp_path / "config.toml"
    config.write_text(f'data_dir = "{session_store.data_dir}"\n')
    result = CliRunner().invoke(
        app, ["train", "adapter", "--faces", str(tmp_path / "faces"), "-c", str(config)]
    )
    assert result.exit_code == 2
    assert "at least 2" in result.output
