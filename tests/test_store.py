"""The model store: atomic files, manifests that must match, and rebuilds when stale."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engines.base import ModelManifest
from engines.errors import ManifestMismatchError, ModelFileError
from engines.models.encoder import build_encoder_onnx
from engines.runtime.onnxrt import OrtEngine, OrtSettings
from engines.store import ModelStore, StoredModel, atomic_write


def _copy_store(encoder_model: StoredModel, tmp_path: Path) -> tuple[ModelStore, Path]:
    store = ModelStore(tmp_path)
    path = store.model_path("dlib_resnet_v1")
    store.save(path, encoder_model.path.read_bytes(), encoder_model.manifest)
    return store, path


def test_manifest_records_model_identity(encoder_model: StoredModel) -> None:
    """The encoder's manifest names model id, source hash, precision, specs and versions."""
    manifest = encoder_model.manifest
    assert manifest.model_id.startswith("dlib_resnet_v1-")
    assert manifest.model_id.endswith(manifest.source_sha256[:12])
    assert manifest.precision == "fp32"
    assert manifest.input_specs()["chips"].shape == (None, 3, 150, 150)
    assert manifest.output_specs()["descriptors"].shape == (None, 128)
    assert "onnx" in manifest.library_versions


def test_truncated_onnx_is_refused_before_loading(
    encoder_model: StoredModel, tmp_path: Path
) -> None:
    """A model file cut short no longer matches its manifest's sha256 and is not loaded."""
    store, path = _copy_store(encoder_model, tmp_path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ManifestMismatchError, match=r"dlib_resnet_v1\.onnx: sha256 is"):
        OrtEngine(path, store, OrtSettings())


def test_a_model_changed_after_its_check_is_not_read(
    encoder_model: StoredModel, tmp_path: Path
) -> None:
    """Runtimes load ``read_verified()``'s bytes, checked again, not the path: a file swapped
    between ``open`` and loading is refused instead of run unverified."""
    store, path = _copy_store(encoder_model, tmp_path)
    stored = store.open(path)
    assert stored.read_verified() == path.read_bytes()
    path.write_bytes(path.read_bytes()[:-1] + b"\0")
    with pytest.raises(ManifestMismatchError, match="changed since it was checked"):
        stored.read_verified()


def test_missing_manifest_is_refused(encoder_model: StoredModel, tmp_path: Path) -> None:
    """A model without its manifest is not trusted."""
    store, path = _copy_store(encoder_model, tmp_path)
    store.manifest_path(path).unlink()
    with pytest.raises(ModelFileError, match="manifest not found"):
        store.open(path)


def test_corrupt_manifest_names_the_field(encoder_model: StoredModel, tmp_path: Path) -> None:
    """A manifest with an unknown key or bad hash is invalid, and the error says where."""
    store, path = _copy_store(encoder_model, tmp_path)
    manifest_file = store.manifest_path(path)
    manifest_file.write_text(manifest_file.read_text().replace('"precision"', '"precisoin"'))
    with pytest.raises(ModelFileError, match="manifest is invalid"):
        store.open(path)


def test_rebuild_replaces_a_damaged_model(encoder_model: StoredModel, tmp_path: Path) -> None:
    """build_encoder_onnx rebuilds a damaged model and leaves a loadable, matching one."""
    store, path = _copy_store(encoder_model, tmp_path)
    path.write_bytes(b"not an onnx model")
    rebuilt = build_encoder_onnx(store)
    assert rebuilt.manifest.artifact_sha256 == encoder_model.manifest.artifact_sha256
    assert store.open(path).path == path


def test_up_to_date_model_is_not_rewritten(encoder_model: StoredModel, tmp_path: Path) -> None:
    """A model that matches its source is kept as is (the conversion is skipped)."""
    store, path = _copy_store(encoder_model, tmp_path)
    before = path.stat().st_mtime_ns
    build_encoder_onnx(store)
    assert path.stat().st_mtime_ns == before


def test_atomic_write_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When writing fails midway (disk full at fsync), neither target nor temp file remains."""
    target = tmp_path / "model.onnx"
    target.write_bytes(b"previous good model")

    def disk_full(descriptor: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        atomic_write(target, b"new model bytes")
    assert os.listdir(tmp_path) == ["model.onnx"]
    assert target.read_bytes() == b"previous good model"


def test_save_refuses_manifest_of_other_data(encoder_model: StoredModel, tmp_path: Path) -> None:
    """save() checks that the manifest's sha256 is that of the bytes being written."""
    store = ModelStore(tmp_path)
    with pytest.raises(ManifestMismatchError, match="manifest says sha256"):
        store.save(store.model_path("x"), b"other bytes", encoder_model.manifest)
    assert not store.model_path("x").exists()


def test_require_match_lists_every_difference(encoder_model: StoredModel) -> None:
    """require_match names each differing field, including keys inside library_versions."""
    manifest: ModelManifest = encoder_model.manifest
    with pytest.raises(ManifestMismatchError) as caught:
        manifest.require_match(
            artifact=Path("plan.bin"), precision="fp16", library_versions={"onnx": "0.0"}
        )
    message = str(caught.value)
    assert "plan.bin" in message
    assert "precision is 'fp32', need 'fp16'" in message
    assert "library_versions[onnx]" in message


def test_list_shows_stored_models(encoder_model: StoredModel, tmp_path: Path) -> None:
    """list() returns every artifact that has a manifest."""
    store, path = _copy_store(encoder_model, tmp_path)
    assert [item.path for item in store.list()] == [path]
