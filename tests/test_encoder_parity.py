"""Acceptance test of the converter: our engines reproduce dlib's descriptors on real faces."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from engines.convert.parity import DlibOracle, compare_with_dlib, encode_chips
from engines.models.encoder import EngineSettings, load_encoder
from engines.runtime.onnxrt import OrtEngine
from engines.store import ModelStore

TOLERANCE = 1e-4  # max |difference| per component and Euclidean distance per face


@pytest.mark.parametrize("batch_size", [1, 7, 32])
def test_onnx_matches_dlib_on_real_faces(
    ort_engine: OrtEngine,
    oracle: DlibOracle,
    face_chips: list[npt.NDArray[np.uint8]],
    batch_size: int,
) -> None:
    """On >= 30 real chips, ONNX Runtime descriptors are within 1e-4 of dlib's, at each batch."""
    report = compare_with_dlib(ort_engine, oracle, face_chips, batch_size=batch_size)
    assert report.n_faces >= 30
    assert report.max_abs_diff <= TOLERANCE
    assert report.max_euclidean <= TOLERANCE


def test_onnx_matches_dlib_on_astronaut(
    ort_engine: OrtEngine, oracle: DlibOracle, astronaut_chips: list[npt.NDArray[np.uint8]]
) -> None:
    """Parity on a public-domain photo that ships with scikit-image (no shared data needed)."""
    report = compare_with_dlib(ort_engine, oracle, astronaut_chips, batch_size=1)
    assert report.max_abs_diff <= TOLERANCE
    assert report.max_euclidean <= TOLERANCE


def test_descriptors_separate_people(
    ort_engine: OrtEngine, face_chips: list[npt.NDArray[np.uint8]]
) -> None:
    """A chip is at distance 0 from itself and far (> 0.3) from most other chips: the output is
    a real descriptor, not a constant."""
    descriptors = encode_chips(ort_engine, face_chips, batch_size=16)
    distances = np.linalg.norm(descriptors[:, None] - descriptors[None], axis=2)
    assert np.allclose(np.diag(distances), 0.0)
    off_diagonal = distances[~np.eye(len(face_chips), dtype=bool)]
    assert np.median(off_diagonal) > 0.3


def test_torch_engine_matches_dlib(
    session_store: ModelStore, oracle: DlibOracle, face_chips: list[npt.NDArray[np.uint8]]
) -> None:
    """The PyTorch build of the same weights matches dlib within the same tolerance."""
    pytest.importorskip("torch", reason="torch is the optional facestream[torch] extra")
    engine = load_encoder(session_store, EngineSettings(backend="torch"))
    try:
        assert engine.backend == "torch-cpu-fp32"
        report = compare_with_dlib(engine, oracle, face_chips[:32], batch_size=7)
    finally:
        engine.close()
    assert report.max_abs_diff <= TOLERANCE
    assert report.max_euclidean <= TOLERANCE
