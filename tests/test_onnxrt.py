"""OrtEngine: input checks, explicit providers, lifecycle."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import pytest

from engines.errors import (
    BackendUnavailableError,
    EngineStateError,
    InputSpecError,
    ModelFileError,
)
from engines.models.encoder import EngineSettings, load_encoder
from engines.runtime.onnxrt import OrtEngine, OrtSettings
from engines.store import ModelStore, StoredModel


def _chips(count: int) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 255, (count, 3, 150, 150)).astype(np.float32)


def test_backend_label_and_output_shape(ort_engine: OrtEngine) -> None:
    """The engine says what runs it and returns (N, 128) float32 descriptors."""
    assert ort_engine.backend == "onnxruntime-cpu"
    output = ort_engine.infer({"chips": _chips(3)})["descriptors"]
    assert output.shape == (3, 128)
    assert output.dtype == np.float32


@pytest.mark.parametrize(
    ("batch", "message"),
    [
        ({"chips": _chips(2).astype(np.float64)}, "expected dtype float32, got float64"),
        ({"chips": _chips(2)[:, :, :100]}, r"expected shape \(N, 3, 150, 150\), got \(2, 3, 100"),
        ({"chips": _chips(2)[0]}, r"expected shape \(N, 3, 150, 150\), got \(3, 150, 150\)"),
        ({"faces": _chips(2)}, r"expected inputs \['chips'\], got \['faces'\]"),
        ({"chips": _chips(0)}, "empty batch"),
    ],
)
def test_wrong_input_is_a_clear_error(
    ort_engine: OrtEngine,
    batch: dict[str, np.ndarray],
    message: str,
) -> None:
    """Wrong dtype, shape, name or an empty batch raise InputSpecError saying what was wrong."""
    with pytest.raises(InputSpecError, match=message):
        ort_engine.infer(batch)


def test_closed_engine_refuses_work(ort_engine: OrtEngine) -> None:
    """After close(), infer raises EngineStateError instead of touching freed resources."""
    ort_engine.close()
    ort_engine.close()  # idempotent
    with pytest.raises(EngineStateError, match="closed"):
        ort_engine.infer({"chips": _chips(1)})


def test_missing_cuda_provider_is_an_error_not_a_fallback(
    session_store: ModelStore, encoder_model: StoredModel
) -> None:
    """Asking for CUDA on a CPU-only onnxruntime raises; it never quietly runs on the CPU."""
    import onnxruntime  # noqa: PLC0415

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has CUDA; the missing-provider path cannot be shown here")
    with pytest.raises(BackendUnavailableError, match="no CUDAExecutionProvider"):
        OrtEngine(encoder_model.path, session_store, OrtSettings(device="cuda"))


def test_batch_results_do_not_depend_on_batch_company(ort_engine: OrtEngine) -> None:
    """A face's descriptor is the same alone as inside a batch of 8 (within float noise)."""
    chips = _chips(8)
    together = ort_engine.infer({"chips": chips})["descriptors"]
    alone = ort_engine.infer({"chips": chips[5:6]})["descriptors"]
    np.testing.assert_allclose(alone[0], together[5], atol=1e-5)


def test_garbage_model_with_matching_manifest_is_a_model_file_error(
    encoder_model: StoredModel, tmp_path: Path
) -> None:
    """A file that hashes right but is no ONNX model fails as ModelFileError naming the file."""
    store = ModelStore(tmp_path)
    data = b"\x08\x07garbage that is not a protobuf model"
    manifest = encoder_model.manifest.model_copy(
        update={"artifact_sha256": hashlib.sha256(data).hexdigest()}
    )
    path = store.save(store.model_path("garbage"), data, manifest).path
    with pytest.raises(ModelFileError, match=r"garbage\.onnx: onnxruntime cannot load it"):
        OrtEngine(path, store, OrtSettings())


def test_missing_torch_is_backend_unavailable(
    session_store: ModelStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the torch extra, the torch backend says which extra to install."""
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    with pytest.raises(BackendUnavailableError, match=r"facestream\[torch\]"):
        load_encoder(session_store, EngineSettings(backend="torch"))
