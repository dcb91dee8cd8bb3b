"""The few CUDA runtime calls the TensorRT engine needs: buffers, a stream, async copies.

Pinned (page-locked) host buffers, device buffers, one stream, host-to-device and device-to-host
copies queued on that stream, synchronize, free. Each call checks the ``cudaError_t`` that
cuda-python returns; on a machine without an NVIDIA driver or GPU every call raises
``BackendUnavailableError`` naming the CUDA error, never a bare tuple or a crash.

Why cuda-python (``cuda.bindings.runtime``, package ``cuda-bindings``) and not pycuda: pycuda is
an sdist that compiles against ``cuda.h`` and links ``-lcuda``, so it cannot even be installed on
a machine without the CUDA driver library (our CI and development machines); cuda-bindings is a
binary wheel that installs and imports anywhere and only fails, catchably, when a call reaches
the missing driver. That keeps this module importable and its failure path testable everywhere.

The package is imported when a ``CudaRuntime`` is made, not when this module is imported.
"""

from __future__ import annotations

import ctypes
import importlib
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from engines.errors import BackendUnavailableError, EngineStateError, InputSpecError

__all__ = [
    "CudaRuntime",
    "CudaStream",
    "DeviceBuffer",
    "GpuDevice",
    "PinnedHostBuffer",
    "cuda_failure_message",
]

_INSTALL_HINT = "install facestream[tensorrt] or facestream[gpu] (the cuda-bindings wheel)"
# cudaError_t names that mean "no usable GPU or driver here", not "this call was wrong"
_NO_DEVICE_ERRORS = frozenset(
    {
        "cudaErrorCallRequiresNewerDriver",
        "cudaErrorDevicesUnavailable",
        "cudaErrorInitializationError",
        "cudaErrorInsufficientDriver",
        "cudaErrorNoDevice",
        "cudaErrorStubLibrary",
        "cudaErrorSystemDriverMismatch",
    }
)


def cuda_failure_message(call: str, error_name: str, description: str) -> str:
    """The message for a failed CUDA call: what was called, the error, and what to do."""
    if error_name in _NO_DEVICE_ERRORS:
        return (
            f"{call}: no usable NVIDIA GPU or driver on this machine ({error_name}: "
            f"{description}); the tensorrt backend needs one"
        )
    return f"{call} failed: {error_name}: {description}"


@dataclass(frozen=True, slots=True)
class GpuDevice:
    """One GPU: its index, name (``NVIDIA H100 80GB HBM3``) and compute capability major.minor."""

    index: int
    name: str
    major: int
    minor: int


class CudaStream:
    """A CUDA stream; ``handle`` is the integer TensorRT's ``execute_async_v3`` takes."""

    __slots__ = ("_handle", "_stream")

    def __init__(self, stream: Any) -> None:
        self._stream = stream  # cuda.bindings.runtime.cudaStream_t
        self._handle: int | None = int(stream)

    @property
    def handle(self) -> int:
        """The stream as an integer (0 is the legacy default stream)."""
        if self._handle is None:
            raise EngineStateError("CUDA stream used after it was destroyed")
        return self._handle

    @property
    def native(self) -> Any:
        """The ``cudaStream_t`` object cuda-python calls take."""
        self.handle  # noqa: B018  (raises once destroyed)
        return self._stream


class DeviceBuffer:
    """``nbytes`` bytes of GPU memory at ``address`` (from ``cudaMalloc``)."""

    __slots__ = ("_address", "nbytes")

    def __init__(self, address: int, nbytes: int) -> None:
        self._address: int | None = address
        self.nbytes = nbytes

    @property
    def address(self) -> int:
        """Device pointer as an integer, for ``set_tensor_address``."""
        if self._address is None:
            raise EngineStateError("device buffer used after it was freed")
        return self._address


class PinnedHostBuffer:
    """Page-locked host memory (``cudaMallocHost``) seen as a numpy array of ``shape``/``dtype``.

    Copies from and to pinned memory run asynchronously at full bus speed. ``array`` is a view
    of that memory: do not keep it past ``CudaRuntime.free``.
    """

    __slots__ = ("_address", "_array", "nbytes")

    def __init__(self, address: int, shape: tuple[int, ...], dtype: npt.DTypeLike) -> None:
        element = np.dtype(dtype)
        self.nbytes = math.prod(shape) * element.itemsize
        raw = (ctypes.c_ubyte * self.nbytes).from_address(address)
        self._address: int | None = address
        self._array: npt.NDArray[Any] | None = (
            np.ctypeslib.as_array(raw).view(element).reshape(shape)
        )

    @property
    def address(self) -> int:
        """Host pointer as an integer."""
        if self._address is None:
            raise EngineStateError("pinned host buffer used after it was freed")
        return self._address

    @property
    def array(self) -> npt.NDArray[Any]:
        """The whole buffer as a writable numpy array."""
        if self._array is None:
            raise EngineStateError("pinned host buffer used after it was freed")
        return self._array


def _import_runtime() -> Any:
    try:
        # cuda-bindings ships compiled modules without type information, hence Any here
        return importlib.import_module("cuda.bindings.runtime")
    except ImportError as exc:
        raise BackendUnavailableError(f"cuda-python is not installed: {_INSTALL_HINT}") from exc


def _host_address(array: npt.NDArray[Any]) -> int:
    if not array.flags.c_contiguous:
        raise InputSpecError("CUDA copies need a C-contiguous host array")
    return int(array.ctypes.data)


class CudaRuntime:
    """cuda-python's runtime API, narrowed to what the TensorRT engine needs.

    Making one imports ``cuda.bindings.runtime`` (BackendUnavailableError when the package is
    missing). Every method raises BackendUnavailableError when its CUDA call fails.
    """

    def __init__(self) -> None:
        self._runtime = _import_runtime()

    def _checked(self, call: str, result: tuple[Any, ...]) -> Any:
        """The value of a cuda-python call (``(error, value...)``), or raise on an error."""
        error = result[0]
        if error != self._runtime.cudaError_t.cudaSuccess:
            described = self._runtime.cudaGetErrorString(error)
            text = described[1].decode() if len(described) > 1 else "no description"
            raise BackendUnavailableError(cuda_failure_message(call, error.name, text))
        return result[1] if len(result) > 1 else None

    def set_device(self, index: int) -> None:
        """Make GPU ``index`` current for this host thread (cheap; call before each use)."""
        self._checked(f"cudaSetDevice({index})", self._runtime.cudaSetDevice(index))

    def select_device(self, index: int = 0) -> GpuDevice:
        """Make GPU ``index`` current and return its name and compute capability."""
        self.set_device(index)
        properties = self._checked(
            f"cudaGetDeviceProperties({index})", self._runtime.cudaGetDeviceProperties(index)
        )
        raw_name = properties.name
        name = raw_name.split(b"\0", 1)[0].decode() if isinstance(raw_name, bytes) else raw_name
        return GpuDevice(
            index=index,
            name=str(name).strip(),
            major=int(properties.major),
            minor=int(properties.minor),
        )

    def create_stream(self) -> CudaStream:
        """A new stream that does not synchronize with the legacy default stream."""
        stream = self._checked(
            "cudaStreamCreateWithFlags",
            self._runtime.cudaStreamCreateWithFlags(self._runtime.cudaStreamNonBlocking),
        )
        return CudaStream(stream)

    def default_stream(self) -> CudaStream:
        """The legacy default stream (handle 0); it needs no creation and is never destroyed."""
        return CudaStream(self._runtime.cudaStream_t(0))

    def allocate_device(self, nbytes: int) -> DeviceBuffer:
        """``nbytes`` (> 0) of GPU memory."""
        if nbytes <= 0:
            raise InputSpecError(f"device buffer size must be > 0 bytes, got {nbytes}")
        address = self._checked(f"cudaMalloc({nbytes})", self._runtime.cudaMalloc(nbytes))
        return DeviceBuffer(int(address), nbytes)

    def allocate_pinned(self, shape: tuple[int, ...], dtype: npt.DTypeLike) -> PinnedHostBuffer:
        """Page-locked host memory for an array of ``shape`` and ``dtype``."""
        nbytes = math.prod(shape) * np.dtype(dtype).itemsize
        if nbytes <= 0:
            raise InputSpecError(f"pinned buffer of shape {shape} would hold no bytes")
        address = self._checked(f"cudaMallocHost({nbytes})", self._runtime.cudaMallocHost(nbytes))
        return PinnedHostBuffer(int(address), shape, dtype)

    def copy_to_device_async(
        self, destination: DeviceBuffer, source: npt.NDArray[Any], stream: CudaStream
    ) -> None:
        """Queue a copy of ``source`` (C-contiguous, ideally pinned) into ``destination``."""
        if source.nbytes > destination.nbytes:
            raise InputSpecError(
                f"cannot copy {source.nbytes} bytes into a device buffer of {destination.nbytes}"
            )
        self._checked(
            "cudaMemcpyAsync(host to device)",
            self._runtime.cudaMemcpyAsync(
                destination.address,
                _host_address(source),
                source.nbytes,
                self._runtime.cudaMemcpyKind.cudaMemcpyHostToDevice,
                stream.native,
            ),
        )

    def copy_to_host_async(
        self, destination: npt.NDArray[Any], source: DeviceBuffer, stream: CudaStream
    ) -> None:
        """Queue a copy of the first ``destination.nbytes`` of ``source`` into ``destination``.

        ``destination`` must stay alive and untouched until the stream is synchronized.
        """
        if destination.nbytes > source.nbytes:
            raise InputSpecError(
                f"cannot copy {destination.nbytes} bytes out of a device buffer of {source.nbytes}"
            )
        self._checked(
            "cudaMemcpyAsync(device to host)",
            self._runtime.cudaMemcpyAsync(
                _host_address(destination),
                source.address,
                destination.nbytes,
                self._runtime.cudaMemcpyKind.cudaMemcpyDeviceToHost,
                stream.native,
            ),
        )

    def synchronize(self, stream: CudaStream) -> None:
        """Wait until everything queued on ``stream`` has finished."""
        self._checked("cudaStreamSynchronize", self._runtime.cudaStreamSynchronize(stream.native))

    def free(self, resource: DeviceBuffer | PinnedHostBuffer | CudaStream) -> None:
        """Release a buffer or stream; freeing one twice does nothing."""
        if isinstance(resource, DeviceBuffer):
            if resource._address is not None:
                self._checked("cudaFree", self._runtime.cudaFree(resource._address))
                resource._address = None
        elif isinstance(resource, PinnedHostBuffer):
            if resource._address is not None:
                resource._array = None
                self._checked("cudaFreeHost", self._runtime.cudaFreeHost(resource._address))
                resource._address = None
        elif resource._handle is not None:
            if resource._handle != 0:  # the default stream is not ours to destroy
                self._checked(
                    "cudaStreamDestroy", self._runtime.cudaStreamDestroy(resource._stream)
                )
            resource._handle = None
