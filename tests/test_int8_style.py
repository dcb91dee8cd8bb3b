"""INT8 style networks: the encoder's ONNX Runtime QDQ path applied to a shipped style model."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import onnx
import pytest

from engines.errors import CalibrationSetError, ConfigError
from engines.quantize import (
    MIN_STYLE_FRAMES,
    ArrayCalibrationReader,
    StyleFrameDataset,
    quantize_style_model,
)
from engines.store import ModelStore, StoredModel
from pipeline.style.engine import StyleCatalog, StyleEngineSettings, load_style_network
from pipeline.style.frames import Letterbox

STYLE = "udnie"


def _shipped() -> StoredModel:
    catalog = StyleCatalog()
    return catalog.store.open(catalog.path(STYLE))


def _video_frames(path: Path, count: int, size: tuple[int, int]) -> list[npt.NDArray[np.uint8]]:
    """``count`` evenly spaced frames of ``path``, fitted to ``size`` (height, width) as the
    style runtime fits them."""
    capture = cv2.VideoCapture(str(path))
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    frames = []
    for index in np.linspace(0, total - 1, count).astype(int):
        capture.set(cv2.CAP_PROP_POS_FRAMES, int(index))
        ok, frame = capture.read()
        assert ok, f"{path}: frame {index} not read"
        image = np.asarray(frame, np.uint8)
        frames.append(Letterbox(image.shape[1], image.shape[0], size[1], size[0]).fit(image))
    capture.release()
    return frames


def _psnr(reference: npt.NDArray[np.uint8], candidate: npt.NDArray[np.uint8]) -> float:
    mse = float(np.mean((reference.astype(np.float64) - candidate.astype(np.float64)) ** 2))
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


def test_array_reader_serves_each_batch_once_then_rewinds() -> None:
    """The calibration reader yields {input: batch} per batch, None at the end, and the same
    batches again after rewind (the entropy method reads the data twice)."""
    batches = [np.full((1, 3, 8, 8), value, np.float32) for value in (0.0, 1.0)]
    reader = ArrayCalibrationReader("frames", batches)
    served = [reader.get_next(), reader.get_next()]
    assert reader.get_next() is None
    assert [item["frames"][0, 0, 0, 0] for item in served if item is not None] == [0.0, 1.0]
    reader.rewind()
    again = reader.get_next()
    assert again is not None
    np.testing.assert_array_equal(again["frames"], batches[0])


def test_style_frames_are_checked_before_quantising(tmp_path: Path) -> None:
    """Too few frames, or frames of another size than the network's, are a
    CalibrationSetError (a ConfigError) naming the minimum or both sizes; nothing is stored."""
    fp32 = _shipped()
    store = ModelStore(tmp_path)
    few = StyleFrameDataset(np.zeros((MIN_STYLE_FRAMES - 1, 360, 640, 3), np.uint8))
    with pytest.raises(CalibrationSetError, match=f"at least {MIN_STYLE_FRAMES}"):
        quantize_style_model(store, fp32, few)
    wrong = StyleFrameDataset(np.zeros((MIN_STYLE_FRAMES, 480, 640, 3), np.uint8))
    with pytest.raises(CalibrationSetError, match=r"640x480.*640x360"):
        quantize_style_model(store, fp32, wrong)
    with pytest.raises(CalibrationSetError, match="BGR uint8"):
        StyleFrameDataset(np.zeros((8, 360, 640), np.uint8))
    assert issubclass(CalibrationSetError, ConfigError)
    assert not store.models_dir.exists() or not any(store.models_dir.glob("*.onnx"))


@pytest.mark.slow
def test_int8_style_network_stays_close_to_fp32(tmp_path: Path, shared_data: Path) -> None:
    """Calibrated on 8 frames of two videos, the int8 udnie network is a QDQ model with an
    int8 manifest under its own model id; loaded by the style runtime, its output on held-out
    frames of a third video is within 30 dB PSNR of fp32's (measured: ~38 dB)."""
    fp32 = _shipped()
    size = (360, 640)
    videos = shared_data / "video"
    calibration = _video_frames(videos / "faces" / "facenet_pytorch_crowd_walk.mp4", 4, size)
    calibration += _video_frames(videos / "nonface" / "MOT20-05-raw_even_shorter.mp4", 4, size)
    held_out = _video_frames(videos / "faces" / "short_hamilton_clip.mp4", 3, size)
    frames = StyleFrameDataset(np.stack(calibration))

    int8 = quantize_style_model(ModelStore(tmp_path), fp32, frames)

    assert int8.manifest.precision == "int8"
    assert int8.manifest.model_id.startswith(f"{fp32.manifest.model_id}-int8-percentile-")
    assert int8.manifest.build["calibration_frames"] == str(MIN_STYLE_FRAMES)
    assert int8.manifest.build["calibration_sha256"] == frames.fingerprint
    assert int8.path.stem == f"{STYLE}_int8"
    ops = {node.op_type for node in onnx.load(str(int8.path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    settings = StyleEngineSettings(threads=2)
    reference = load_style_network(fp32.path, settings)
    quantized = load_style_network(int8.path, settings)
    try:
        assert quantized.model_id == int8.manifest.model_id
        psnrs = [_psnr(reference.stylize(f), quantized.stylize(f)) for f in held_out]
    finally:
        reference.close()
        quantized.close()
    assert min(psnrs) >= 30.0, psnrs
