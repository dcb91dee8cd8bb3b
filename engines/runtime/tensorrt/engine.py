"""Run a TensorRT plan on one GPU with pinned buffers, and load (or first build) the plan of a
stored ONNX model.

``TrtEngine`` loads a plan only when its manifest matches the ONNX in the store, the installed
TensorRT and the GPU in use (``plans.check_plan_manifest``); otherwise ManifestMismatchError. A
batch is cut into chunks padded to a bucket (``profile.plan_chunks``); rows go through
page-locked host buffers, are copied on a CUDA stream and run with ``execute_async_v3``; padded
rows are never copied back. ``tensorrt`` and cuda-bindings are imported on use.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from engines.base import BaseEngine, TensorSpec
from engines.errors import (
    BackendUnavailableError,
    ConfigError,
    InputSpecError,
    ModelFileError,
)
from engines.runtime.tensorrt.build import build_engine
from engines.runtime.tensorrt.cuda import CudaRuntime, CudaStream, DeviceBuffer, PinnedHostBuffer
from engines.runtime.tensorrt.library import (
    KEPT_ERRORS,
    make_logger,
    recent_errors,
    require_tensorrt,
    tensorrt_version,
)
from engines.runtime.tensorrt.plans import (
    EngineTensor,
    check_engine_io,
    check_plan_manifest,
    device_label,
    plan_path_for,
)
from engines.runtime.tensorrt.profile import (
    BatchChunk,
    BatchProfile,
    TrtBuildSettings,
    fill_padded,
    plan_chunks,
)
from engines.store import ModelStore

if TYPE_CHECKING:
    import tensorrt

__all__ = ["TrtEngine", "load_or_build_plan"]

_log = logging.getLogger(__name__)


def _engine_tensors(engine: tensorrt.ICudaEngine) -> list[EngineTensor]:
    import tensorrt  # noqa: PLC0415

    tensors = []
    for index in range(engine.num_io_tensors):
        name = engine.get_tensor_name(index)
        tensors.append(
            EngineTensor(
                name=name,
                is_input=engine.get_tensor_mode(name) == tensorrt.TensorIOMode.INPUT,
                type_name=engine.get_tensor_dtype(name).name,
                shape=tuple(engine.get_tensor_shape(name)),
            )
        )
    return tensors


@dataclass(frozen=True, slots=True)
class _Binding:
    """One engine tensor's pinned host staging buffer and device buffer, ``max_batch`` rows."""

    spec: TensorSpec
    row_shape: tuple[int, ...]
    host: PinnedHostBuffer
    device: DeviceBuffer


class TrtEngine(BaseEngine):
    """A TensorRT plan running on one GPU; ``backend`` is ``tensorrt-<precision>``.

    The plan at ``plan_path`` loads only if its manifest matches: the ONNX model at
    ``onnx_path`` (its sha256), the installed TensorRT version and GPU ``device_index``; any
    difference is a ManifestMismatchError naming the plan file and what differs. Batches of
    any size are split into chunks of at most ``max_batch`` rows and padded to a bucket; calls
    are serialized by a lock, as one execution context runs one batch at a time.
    """

    def __init__(
        self, plan_path: Path, store: ModelStore, *, onnx_path: Path, device_index: int = 0
    ) -> None:
        plan = store.open(plan_path)
        onnx = store.open(onnx_path)
        require_tensorrt()
        import tensorrt  # noqa: PLC0415

        cuda = CudaRuntime()
        device = cuda.select_device(device_index)
        check_plan_manifest(
            plan, onnx.manifest, tensorrt_version=tensorrt.__version__, device=device
        )
        self._profile = BatchProfile.from_manifest(plan.manifest, plan.path)
        self._errors: deque[str] = deque(maxlen=KEPT_ERRORS)
        self._logger = make_logger(self._errors)  # TensorRT needs it alive as long as the engine
        self._runtime = tensorrt.Runtime(self._logger)
        engine = self._runtime.deserialize_cuda_engine(plan.read_verified())
        if engine is None:
            raise ModelFileError(
                f"{plan_path}: TensorRT {tensorrt.__version__} cannot "
                f"deserialize it: {recent_errors(self._errors)}"
            )
        check_engine_io(plan.path, plan.manifest, _engine_tensors(engine))
        context = engine.create_execution_context()
        if context is None:
            raise BackendUnavailableError(
                f"{plan_path}: TensorRT could not create an execution "
                f"context on {device.name}: {recent_errors(self._errors)}"
            )
        self._engine = engine
        self._context = context
        self._cuda = cuda
        self._device_index = device_index
        self._lock = threading.Lock()
        self._resources: list[DeviceBuffer | PinnedHostBuffer | CudaStream] = []
        self._input_rows: dict[str, int] = {}
        try:
            self._stream = cuda.create_stream()
            self._resources.append(self._stream)
            self._inputs = {
                name: self._bind(spec, plan_path)
                for name, spec in plan.manifest.input_specs().items()
            }
            self._outputs = {
                name: self._bind(spec, plan_path)
                for name, spec in plan.manifest.output_specs().items()
            }
        except BaseException:
            self._release()
            raise
        super().__init__(
            backend=f"tensorrt-{plan.manifest.precision}",
            model_id=plan.manifest.model_id,
            inputs=plan.manifest.input_specs(),
            outputs=plan.manifest.output_specs(),
        )
        _log.info(
            "loaded TensorRT plan %s on %s (batch %d..%d, buckets %s)",
            plan_path,
            device_label(device),
            self._profile.min_batch,
            self._profile.max_batch,
            self._profile.buckets,
        )

    def _bind(self, spec: TensorSpec, plan_path: Path) -> _Binding:
        """Allocate ``max_batch`` rows of pinned and device memory for ``spec`` and bind them."""
        row_shape = tuple(dim for dim in spec.shape[1:] if dim is not None)
        if len(row_shape) != len(spec.shape) - 1:
            raise ModelFileError(f"{plan_path}: {spec.name!r} has a dynamic axis besides the batch")
        host = self._cuda.allocate_pinned((self._profile.max_batch, *row_shape), spec.dtype)
        self._resources.append(host)
        device = self._cuda.allocate_device(host.nbytes)
        self._resources.append(device)
        if not self._context.set_tensor_address(spec.name, device.address):
            raise ModelFileError(
                f"{plan_path}: TensorRT refused an address for {spec.name!r}: "
                f"{recent_errors(self._errors)}"
            )
        return _Binding(spec, row_shape, host, device)

    def _run(self, batch: Mapping[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
        total_rows = next(iter(batch.values())).shape[0]
        results = {
            name: np.empty((total_rows, *binding.row_shape), dtype=binding.spec.dtype)
            for name, binding in self._outputs.items()
        }
        with self._lock:
            self._require_open()  # closed while this call waited for the lock: buffers freed
            self._cuda.set_device(self._device_index)  # the calling thread may be new to CUDA
            for chunk in plan_chunks(total_rows, self._profile):
                self._run_chunk(batch, chunk, results)
        return results

    def _run_chunk(
        self,
        batch: Mapping[str, npt.NDArray[Any]],
        chunk: BatchChunk,
        results: dict[str, npt.NDArray[Any]],
    ) -> None:
        for name, binding in self._inputs.items():
            staged = binding.host.array[: chunk.padded_rows]
            fill_padded(staged, batch[name][chunk.rows])
            if self._input_rows.get(name) != chunk.padded_rows:
                self._input_rows.pop(name, None)
                if not self._context.set_input_shape(name, (chunk.padded_rows, *binding.row_shape)):
                    raise InputSpecError(
                        f"TensorRT refused {chunk.padded_rows} rows for input "
                        f"{name!r}: {recent_errors(self._errors)}"
                    )
                self._input_rows[name] = chunk.padded_rows
            self._cuda.copy_to_device_async(binding.device, staged, self._stream)
        if not self._context.execute_async_v3(self._stream.handle):
            raise BackendUnavailableError(
                f"{self.backend} engine for {self.model_id} failed to run: "
                f"{recent_errors(self._errors)}"
            )
        for binding in self._outputs.values():  # only real rows come back, not the padding
            self._cuda.copy_to_host_async(
                binding.host.array[: chunk.row_count], binding.device, self._stream
            )
        self._cuda.synchronize(self._stream)
        for name, binding in self._outputs.items():
            results[name][chunk.rows] = binding.host.array[: chunk.row_count]

    def _release(self) -> None:
        """Free buffers and the stream, newest first; a failure is logged, the rest still freed."""
        while self._resources:
            resource = self._resources.pop()
            try:
                self._cuda.free(resource)
            except BackendUnavailableError as exc:
                _log.warning("could not free a CUDA resource of the TensorRT engine: %s", exc)

    def _close(self) -> None:
        with self._lock:
            del self._context  # the execution context goes before the engine it came from
            del self._engine
            self._release()


def load_or_build_plan(
    onnx_path: Path, store: ModelStore, build: TrtBuildSettings, *, device_index: int = 0
) -> TrtEngine:
    """The stored ONNX model at ``onnx_path`` as a TrtEngine on GPU ``device_index``, building
    its plan first if none in ``store`` fits.

    A plan fits when its manifest matches the ONNX model, TensorRT and GPU, and its batch
    profile is the one in ``build``; a plan that does not fit is rebuilt (and the reason
    logged), except int8 plans, which need calibration data: ConfigError then. Raises
    BackendUnavailableError, naming the extra to install, without TensorRT or a GPU.
    """
    onnx = store.open(onnx_path)
    version = tensorrt_version()
    device = CudaRuntime().select_device(device_index)
    path = plan_path_for(
        store, onnx.manifest, build.precision, tensorrt_version=version, device=device
    )
    if path.exists():
        try:
            stored = store.open(path)
            check_plan_manifest(stored, onnx.manifest, tensorrt_version=version, device=device)
            if BatchProfile.from_manifest(stored.manifest, path) == build.batch_profile:
                return TrtEngine(path, store, onnx_path=onnx_path, device_index=device_index)
            _log.warning("rebuilding %s: its batch profile differs from the configured one", path)
        except ModelFileError as exc:  # ManifestMismatchError included
            _log.warning("rebuilding %s: %s", path, exc)
    if build.precision == "int8":
        raise ConfigError(
            f"no usable int8 plan at {path}: int8 plans are built with calibration "
            "data (build_engine(..., calibrator=...))"
        )
    build_engine(onnx_path, store, build, device_index=device_index)
    return TrtEngine(path, store, onnx_path=onnx_path, device_index=device_index)
