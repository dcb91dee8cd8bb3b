"""TensorRT INT8 entropy calibration of the face encoder, fed by ``FaceChipDataset``.

TensorRT's builder pulls calibration batches through an ``IInt8EntropyCalibrator2``: it asks for
the batch size, then calls ``get_batch`` until it returns None, each time expecting one device
pointer per input holding exactly ``batch_size`` rows. ``CalibrationBatches`` serves the chips
as such fixed-size batches (the pipeline's own preprocessing, from the dataset); a short last
batch is left out rather than padded, since padding rows would skew the activation histograms.

The calibration table TensorRT writes is cached in the store, keyed by the ONNX model's sha256
and the chips' fingerprint (``CalibrationCache``): a rebuild for another GPU or TensorRT version
reuses it and skips the calibration pass, and a changed model or calibration set never picks up
a stale table. Batching and caching are plain Python, tested without TensorRT; ``tensorrt`` and
CUDA are touched only by ``make_entropy_calibrator`` and ``build_int8_plan``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from engines.base import ModelManifest
from engines.errors import CalibrationSetError, ModelFileError
from engines.quantize import MIN_CALIBRATION_CHIPS, FaceChipDataset
from engines.runtime.tensorrt.build import build_engine
from engines.runtime.tensorrt.cuda import CudaRuntime, DeviceBuffer
from engines.runtime.tensorrt.library import tensorrt_version
from engines.store import ModelStore, StoredModel, atomic_write, safe_name

if TYPE_CHECKING:
    import tensorrt
    from _typeshed import ReadableBuffer

    from engines.runtime.tensorrt.profile import TrtBuildSettings

__all__ = [
    "CalibrationBatches",
    "CalibrationCache",
    "build_int8_plan",
    "calibration_cache_for",
    "make_entropy_calibrator",
]

_log = logging.getLogger(__name__)


class CalibrationBatches:
    """Fixed-size calibration batches of a dataset, float32 (batch_size, 3, 150, 150) each.

    ``next_batch`` returns the next full batch or None when no full batch is left; ``reset``
    starts over (TensorRT may run calibration more than once).
    """

    def __init__(self, dataset: FaceChipDataset, batch_size: int) -> None:
        if batch_size < 1:
            raise CalibrationSetError(f"calibration batch size must be >= 1, got {batch_size}")
        minimum = max(MIN_CALIBRATION_CHIPS, batch_size)
        dataset.require(minimum)
        self.dataset = dataset
        self.batch_size = batch_size
        self._next_start = 0

    def __len__(self) -> int:
        """Full batches in one pass (the remainder of the chips is left out)."""
        return len(self.dataset) // self.batch_size

    @property
    def batch_nbytes(self) -> int:
        """Bytes of one batch (float32)."""
        return int(self.dataset.batch(0, 1).nbytes) * self.batch_size

    def next_batch(self) -> npt.NDArray[np.float32] | None:
        """The next full batch, or None at the end of the pass."""
        start = self._next_start
        if start + self.batch_size > len(self.dataset):
            return None
        self._next_start = start + self.batch_size
        return self.dataset.batch(start, start + self.batch_size)

    def reset(self) -> None:
        """Start the next pass from the first chip."""
        self._next_start = 0


@dataclass(frozen=True, slots=True)
class CalibrationCache:
    """A TensorRT calibration table on disk; ``read`` gives None when there is none yet."""

    path: Path

    def read(self) -> bytes | None:
        """The cached table, or None (absent or empty: TensorRT then calibrates)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ModelFileError(
                f"{self.path}: cannot read the calibration cache: {exc.strerror}"
            ) from exc
        return data or None

    def write(self, data: bytes) -> None:
        """Replace the cached table atomically."""
        atomic_write(self.path, data)


def calibration_cache_for(
    store: ModelStore, onnx_manifest: ModelManifest, dataset: FaceChipDataset
) -> CalibrationCache:
    """The cache of ``onnx_manifest``'s model calibrated on ``dataset``:
    ``plans/<model_id>/int8-<model sha256[:16]>-<chips sha256[:12]>.calib``."""
    name = f"int8-{onnx_manifest.artifact_sha256[:16]}-{dataset.fingerprint[:12]}.calib"
    return CalibrationCache(store.plans_dir / safe_name(onnx_manifest.model_id) / name)


def make_entropy_calibrator(
    batches: CalibrationBatches,
    table_cache: CalibrationCache,
    device_buffer: DeviceBuffer,
    cuda: CudaRuntime,
) -> tensorrt.IInt8EntropyCalibrator2:
    """An ``IInt8EntropyCalibrator2`` that copies each of ``batches`` into ``device_buffer``
    (at least ``batches.batch_nbytes``) and keeps TensorRT's table in ``table_cache``.

    The caller owns the buffer and frees it after the build. Raises BackendUnavailableError
    without TensorRT.
    """
    tensorrt_version()  # BackendUnavailableError unless the real TensorRT is importable
    import tensorrt  # noqa: PLC0415

    if device_buffer.nbytes < batches.batch_nbytes:
        raise CalibrationSetError(
            f"the calibration device buffer holds {device_buffer.nbytes} bytes, a batch needs "
            f"{batches.batch_nbytes}"
        )
    stream = cuda.default_stream()

    class EntropyCalibrator(tensorrt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            tensorrt.IInt8EntropyCalibrator2.__init__(self)  # pybind11 needs the base __init__
            self._staged: npt.NDArray[np.float32] | None = None  # alive until its copy ends

        def get_batch_size(self) -> int:
            return batches.batch_size

        def get_batch(self, names: list[str]) -> list[int] | None:
            if len(names) != 1:
                raise ModelFileError(f"the face encoder has one input, TensorRT asks for {names}")
            batch = batches.next_batch()
            if batch is None:
                batches.reset()  # TensorRT may ask for another pass (a refused cache, a rebuild)
                return None
            self._staged = batch
            cuda.copy_to_device_async(device_buffer, batch, stream)
            cuda.synchronize(stream)
            return [device_buffer.address]

        def read_calibration_cache(self) -> bytes | None:
            data = table_cache.read()
            if data is not None:
                _log.info("using the INT8 calibration cache %s", table_cache.path)
            return data

        def write_calibration_cache(self, cache: ReadableBuffer) -> None:
            table_cache.write(bytes(cache))
            _log.info("wrote the INT8 calibration cache %s", table_cache.path)

    return EntropyCalibrator()


def build_int8_plan(
    onnx_path: Path,
    store: ModelStore,
    dataset: FaceChipDataset,
    settings: TrtBuildSettings,
    *,
    calibration_batch: int = 16,
    device_index: int = 0,
) -> StoredModel:
    """Build the INT8 TensorRT plan of the stored ONNX model at ``onnx_path``, calibrated on
    ``dataset`` (the table cached in the store), with ``settings.precision == "int8"``.

    Raises BackendUnavailableError without TensorRT or a GPU, CalibrationSetError when the
    dataset has fewer chips than ``MIN_CALIBRATION_CHIPS`` or one batch.
    """
    onnx = store.open(onnx_path)
    batches = CalibrationBatches(dataset, calibration_batch)
    cache = calibration_cache_for(store, onnx.manifest, dataset)
    cuda = CudaRuntime()
    cuda.select_device(device_index)
    device_buffer = cuda.allocate_device(batches.batch_nbytes)
    try:
        calibrator = make_entropy_calibrator(batches, cache, device_buffer, cuda)
        return build_engine(
            onnx_path, store, settings, calibrator=calibrator, device_index=device_index
        )
    finally:
        cuda.free(device_buffer)
