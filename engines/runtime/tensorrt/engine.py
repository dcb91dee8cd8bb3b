"""TensorRT backend: build a plan from the stored ONNX model; run it with pinned buffers.

``build_engine`` parses the ONNX model, adds one optimization profile over the batch axis of
every dynamic input (``min_batch``..``max_batch`` rows, tuned for ``opt_batch``), sets the FP16
or INT8 flags, reuses the store's timing cache, and writes the serialized plan with a manifest
naming the ONNX file it came from, the TensorRT version and the GPU. A plan is only valid for
all three, so ``TrtEngine`` loads one only when its manifest matches the ONNX in the store, the
installed TensorRT and the GPU in use; otherwise it raises ManifestMismatchError.

At run time a batch is cut into chunks of at most ``max_batch`` rows and each chunk is zero-padded
up to the next bucket (``min_batch``, ``opt_batch``, ``max_batch`` and the powers of two between),
so the engine sees few distinct shapes. Rows go through page-locked host buffers, are copied on a
CUDA stream and run with ``execute_async_v3``; padded rows are never copied back.

``tensorrt`` (and cuda-python, through ``engines.runtime.tensorrt.cuda``) are imported inside
the functions that need them; everything else here (settings, profile shapes, batch planning,
manifest checks, device keys, plan paths) is plain Python, tested on machines without a GPU.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

import numpy as np
import numpy.typing as npt

from engines.base import BaseEngine, ModelManifest, Precision, TensorSpec
from engines.errors import (
    BackendUnavailableError,
    ConfigError,
    InputSpecError,
    ModelFileError,
)
from engines.runtime.tensorrt.cuda import (
    CudaRuntime,
    CudaStream,
    DeviceBuffer,
    GpuDevice,
    PinnedHostBuffer,
)
from engines.store import ModelStore, StoredModel, atomic_write

if TYPE_CHECKING:
    import tensorrt

    from engines.models.encoder import EngineSettings

__all__ = [
    "MAX_BATCH_LIMIT",
    "PLAN_FORMAT",
    "BatchChunk",
    "BatchProfile",
    "EngineTensor",
    "ProfileShapes",
    "TrtBuildSettings",
    "TrtEngine",
    "build_engine",
    "check_engine_io",
    "check_plan_manifest",
    "device_key",
    "device_label",
    "fill_padded",
    "load_or_build_encoder_plan",
    "load_or_build_plan",
    "plan_chunks",
    "plan_expectations",
    "plan_manifest",
    "plan_path_for",
    "profile_shapes",
    "python_log_level",
    "tensorrt_version",
]

_log = logging.getLogger(__name__)

PLAN_FORMAT = "tensorrt-plan"
MAX_BATCH_LIMIT = 1024  # rows per engine call; the encoder's pinned input is 270 KB per row
_MIN_WORKSPACE_BYTES = 1 << 20
_MAX_WORKSPACE_BYTES = 1 << 40
_PRECISIONS: tuple[str, ...] = get_args(Precision)
_INSTALL_HINT = (
    "install facestream[tensorrt] (NVIDIA TensorRT 10 and cuda-bindings) on a "
    "machine with an NVIDIA GPU"
)
# TensorRT DataType names -> numpy dtype names, for the I/O types an engine can have here
_NUMPY_DTYPES = {
    "FLOAT": "float32",
    "HALF": "float16",
    "INT8": "int8",
    "INT32": "int32",
    "INT64": "int64",
    "BOOL": "bool",
    "UINT8": "uint8",
}
# TensorRT ILogger.Severity values (INTERNAL_ERROR=0 .. VERBOSE=4) -> logging levels; TensorRT's
# INFO is build chatter, so it goes to DEBUG
_LOG_LEVELS = {0: logging.CRITICAL, 1: logging.ERROR, 2: logging.WARNING, 3: logging.DEBUG}
_VERBOSE = 4
_KEPT_ERRORS = 20


# ---------------------------------------------------------------------------------------------
# Settings and batch planning (pure)


def _require_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"tensorrt {name} must be an integer, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class BatchProfile:
    """The batch sizes one optimization profile covers: ``min_batch``..``max_batch`` rows per
    engine call, with kernels tuned for ``opt_batch`` rows."""

    min_batch: int
    opt_batch: int
    max_batch: int

    def __post_init__(self) -> None:
        for name in ("min_batch", "opt_batch", "max_batch"):
            _require_int(name, getattr(self, name))
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch <= MAX_BATCH_LIMIT:
            raise ConfigError(
                f"tensorrt batch sizes must satisfy 1 <= min_batch ({self.min_batch}) <= "
                f"opt_batch ({self.opt_batch}) <= max_batch ({self.max_batch}) <= "
                f"{MAX_BATCH_LIMIT}"
            )

    @property
    def buckets(self) -> tuple[int, ...]:
        """Row counts a chunk is padded to: min, opt, max and the powers of two between."""
        sizes = {self.min_batch, self.opt_batch, self.max_batch}
        power = 1
        while power < self.max_batch:
            if power > self.min_batch:
                sizes.add(power)
            power *= 2
        return tuple(sorted(sizes))

    def bucket_for(self, rows: int) -> int:
        """The smallest bucket that holds ``rows`` (1..max_batch) rows."""
        if not 1 <= rows <= self.max_batch:
            raise InputSpecError(f"a chunk of {rows} rows is outside 1..{self.max_batch}")
        return next(size for size in self.buckets if size >= rows)

    def to_build(self) -> dict[str, str]:
        """The profile as manifest ``build`` entries (strings)."""
        return {
            "min_batch": str(self.min_batch),
            "opt_batch": str(self.opt_batch),
            "max_batch": str(self.max_batch),
        }

    @classmethod
    def from_manifest(cls, manifest: ModelManifest, artifact: Path) -> BatchProfile:
        """Read the profile a plan was built with; ModelFileError names ``artifact`` if absent."""
        try:
            return cls(
                min_batch=int(manifest.build["min_batch"]),
                opt_batch=int(manifest.build["opt_batch"]),
                max_batch=int(manifest.build["max_batch"]),
            )
        except (KeyError, ValueError) as exc:  # ConfigError is a ValueError too
            raise ModelFileError(
                f"{artifact}: manifest has no valid batch profile "
                f"(min_batch/opt_batch/max_batch): {exc}"
            ) from exc


@dataclass(frozen=True, slots=True)
class TrtBuildSettings:
    """How to build a TensorRT plan.

    precision: fp32, fp16 or int8 (int8 needs a calibrator, and lets layers fall back to fp16);
    min/opt/max_batch: rows per engine call the plan accepts and is tuned for;
    workspace_bytes: GPU scratch memory TensorRT may use while choosing kernels, in bytes.
    """

    precision: Precision = "fp16"
    min_batch: int = 1
    opt_batch: int = 16
    max_batch: int = 64
    workspace_bytes: int = 1 << 30

    def __post_init__(self) -> None:
        if self.precision not in _PRECISIONS:
            raise ConfigError(
                f"tensorrt precision {self.precision!r}: expected one of {', '.join(_PRECISIONS)}"
            )
        _require_int("workspace_bytes", self.workspace_bytes)
        if not _MIN_WORKSPACE_BYTES <= self.workspace_bytes <= _MAX_WORKSPACE_BYTES:
            raise ConfigError(
                f"tensorrt workspace_bytes must be in {_MIN_WORKSPACE_BYTES}.."
                f"{_MAX_WORKSPACE_BYTES}, got {self.workspace_bytes}"
            )
        _ = self.batch_profile  # validates the batch sizes

    @property
    def batch_profile(self) -> BatchProfile:
        """The batch sizes as a ``BatchProfile``."""
        return BatchProfile(self.min_batch, self.opt_batch, self.max_batch)


@dataclass(frozen=True, slots=True)
class ProfileShapes:
    """min/opt/max shapes of one input in an optimization profile."""

    minimum: tuple[int, ...]
    optimum: tuple[int, ...]
    maximum: tuple[int, ...]


def profile_shapes(
    input_name: str, shape: Sequence[int], profile: BatchProfile
) -> ProfileShapes | None:
    """Profile shapes for a network input of ``shape`` (TensorRT's, ``-1`` = dynamic).

    Axis 0 is the batch axis and takes min/opt/max_batch; an input with no dynamic axis needs no
    profile (None). A dynamic axis other than 0 is a ModelFileError: only the batch may vary.
    """
    dims = tuple(int(dim) for dim in shape)
    dynamic = [axis for axis, dim in enumerate(dims) if dim < 0]
    if not dynamic:
        return None
    if dynamic != [0]:
        raise ModelFileError(
            f"input {input_name!r} has shape {dims}: only the batch axis (0) may be dynamic"
        )
    rest = dims[1:]
    return ProfileShapes(
        minimum=(profile.min_batch, *rest),
        optimum=(profile.opt_batch, *rest),
        maximum=(profile.max_batch, *rest),
    )


@dataclass(frozen=True, slots=True)
class BatchChunk:
    """Rows ``start``..``stop`` of a batch, run as one engine call padded to ``padded_rows``."""

    start: int
    stop: int
    padded_rows: int

    @property
    def rows(self) -> slice:
        """The chunk's rows in the whole batch."""
        return slice(self.start, self.stop)

    @property
    def row_count(self) -> int:
        """Real (unpadded) rows in the chunk."""
        return self.stop - self.start


def plan_chunks(total_rows: int, profile: BatchProfile) -> list[BatchChunk]:
    """Split ``total_rows`` into chunks of at most ``max_batch`` rows, each padded to a bucket.

    Full chunks of ``max_batch`` come first; the remainder is padded to the smallest bucket that
    holds it (at least ``min_batch``). Chunks cover every row exactly once, in order.
    """
    if total_rows < 0:
        raise InputSpecError(f"a batch cannot have {total_rows} rows")
    chunks = []
    for start in range(0, total_rows, profile.max_batch):
        stop = min(start + profile.max_batch, total_rows)
        chunks.append(BatchChunk(start, stop, profile.bucket_for(stop - start)))
    return chunks


def fill_padded(destination: npt.NDArray[Any], rows: npt.NDArray[Any]) -> None:
    """Copy ``rows`` into the first rows of ``destination`` and zero the rest (the padding).

    destination: (P, ...) with P >= len(rows) and the same trailing shape as ``rows``.
    """
    count = rows.shape[0]
    if destination.shape[1:] != rows.shape[1:] or destination.shape[0] < count:
        raise InputSpecError(f"cannot pad rows of shape {rows.shape} into {destination.shape}")
    destination[:count] = rows
    destination[count:] = 0


# ---------------------------------------------------------------------------------------------
# Devices, paths and manifests (pure)


def device_label(device: GpuDevice) -> str:
    """The GPU as recorded in a plan's manifest: ``NVIDIA H100 80GB HBM3 (compute 9.0)``."""
    return f"{device.name} (compute {device.major}.{device.minor})"


def device_key(device: GpuDevice) -> str:
    """The GPU as part of a plan's file name: ``NVIDIA H100 80GB HBM3 sm90``."""
    return f"{device.name} sm{device.major}{device.minor}"


def plan_path_for(
    store: ModelStore,
    onnx_manifest: ModelManifest,
    precision: Precision,
    *,
    tensorrt_version: str,
    device: GpuDevice,
) -> Path:
    """Where the plan of this model, precision, TensorRT version and GPU lives in ``store``."""
    return store.plan_path(
        model_id=onnx_manifest.model_id,
        precision=precision,
        device_key=device_key(device),
        library_version=tensorrt_version,
    )


def plan_manifest(
    onnx_manifest: ModelManifest,
    settings: TrtBuildSettings,
    *,
    plan_sha256: str,
    tensorrt_version: str,
    device: GpuDevice,
) -> ModelManifest:
    """The manifest of a plan built from the ONNX model described by ``onnx_manifest``."""
    return ModelManifest(
        model_id=onnx_manifest.model_id,
        format=PLAN_FORMAT,
        precision=settings.precision,
        source_sha256=onnx_manifest.source_sha256,
        artifact_sha256=plan_sha256,
        inputs=onnx_manifest.inputs,
        outputs=onnx_manifest.outputs,
        library_versions={"tensorrt": tensorrt_version},
        device=device_label(device),
        build={"onnx_sha256": onnx_manifest.artifact_sha256, **settings.batch_profile.to_build()},
    )


def plan_expectations(
    onnx_manifest: ModelManifest, *, tensorrt_version: str, device: GpuDevice
) -> dict[str, object]:
    """What a plan's manifest must say to be loaded here (``ModelManifest.require_match`` keys)."""
    return {
        "format": PLAN_FORMAT,
        "model_id": onnx_manifest.model_id,
        "source_sha256": onnx_manifest.source_sha256,
        "build": {"onnx_sha256": onnx_manifest.artifact_sha256},
        "library_versions": {"tensorrt": tensorrt_version},
        "device": device_label(device),
    }


def check_plan_manifest(
    plan: StoredModel, onnx_manifest: ModelManifest, *, tensorrt_version: str, device: GpuDevice
) -> None:
    """ManifestMismatchError, naming the plan file and each difference, unless the plan was
    built from this ONNX file, by this TensorRT version, for this GPU."""
    plan.manifest.require_match(
        artifact=plan.path,
        **plan_expectations(onnx_manifest, tensorrt_version=tensorrt_version, device=device),
    )


@dataclass(frozen=True, slots=True)
class EngineTensor:
    """One I/O tensor of a deserialized engine: name, direction, TensorRT type name
    (``FLOAT``, ``HALF``...) and shape (``-1`` on dynamic axes)."""

    name: str
    is_input: bool
    type_name: str
    shape: tuple[int, ...]


def check_engine_io(
    plan_path: Path, manifest: ModelManifest, tensors: Sequence[EngineTensor]
) -> None:
    """ModelFileError unless the engine's tensors are the manifest's: same names, direction,
    dtype and shape, with the batch axis (0) dynamic on every one of them."""
    expected = {
        **{name: (True, spec) for name, spec in manifest.input_specs().items()},
        **{name: (False, spec) for name, spec in manifest.output_specs().items()},
    }
    found = {tensor.name: tensor for tensor in tensors}
    problems = [f"{name!r} is missing from the plan" for name in sorted(set(expected) - set(found))]
    problems += [
        f"the plan has a tensor {name!r} the manifest does not list"
        for name in sorted(set(found) - set(expected))
    ]
    for name in sorted(set(expected) & set(found)):
        is_input, spec = expected[name]
        tensor = found[name]
        if tensor.is_input != is_input:
            problems.append(
                f"{name!r} is an {'input' if tensor.is_input else 'output'} in the plan"
            )
        dtype = _NUMPY_DTYPES.get(tensor.type_name, tensor.type_name)
        if dtype != spec.dtype:
            problems.append(f"{name!r} has type {dtype}, need {spec.dtype}")
        if not spec.shape or spec.shape[0] is not None:
            problems.append(f"{name!r} has no dynamic batch axis in the manifest ({spec.shape})")
        wanted = tuple(-1 if dim is None else dim for dim in spec.shape)
        if tensor.shape != wanted:
            problems.append(f"{name!r} has shape {tensor.shape}, need {wanted}")
    if problems:
        raise ModelFileError(
            f"{plan_path}: the engine does not match its manifest: " + "; ".join(problems)
        )


def python_log_level(severity: int) -> int:
    """The ``logging`` level for a TensorRT ``ILogger.Severity`` value (0 = INTERNAL_ERROR)."""
    return _LOG_LEVELS.get(severity, logging.DEBUG)


# ---------------------------------------------------------------------------------------------
# TensorRT itself (imported on use)


def _require_tensorrt() -> None:
    """Raise BackendUnavailableError unless the real TensorRT is importable."""
    try:
        import tensorrt  # noqa: PLC0415  (optional dependency, imported on use)
    except ImportError as exc:
        raise BackendUnavailableError(f"TensorRT is not installed: {_INSTALL_HINT}") from exc
    if not hasattr(tensorrt, "Builder"):  # import alone succeeds for an empty stub package
        where = getattr(tensorrt, "__file__", None) or "an unknown location"
        raise BackendUnavailableError(
            f"the 'tensorrt' package at {where} is not NVIDIA TensorRT (it has no Builder; "
            f"tensorrt-stubs installs such an empty package): {_INSTALL_HINT}"
        )


def tensorrt_version() -> str:
    """The installed TensorRT version; BackendUnavailableError when TensorRT is missing."""
    _require_tensorrt()
    import tensorrt  # noqa: PLC0415

    return tensorrt.__version__


def _make_logger(errors: deque[str]) -> tensorrt.ILogger:
    """A TensorRT logger that forwards to ``logging`` and keeps recent errors in ``errors``."""
    import tensorrt  # noqa: PLC0415

    class ForwardingLogger(tensorrt.ILogger):
        def __init__(self) -> None:
            tensorrt.ILogger.__init__(self)  # pybind11 requires the explicit base __init__

        def log(self, severity: tensorrt.ILogger.Severity, msg: str) -> None:
            value = int(severity)
            if value >= _VERBOSE:
                return
            level = python_log_level(value)
            if level >= logging.ERROR:
                errors.append(msg)
            _log.log(level, "TensorRT: %s", msg)

    return ForwardingLogger()


def _recent(errors: deque[str]) -> str:
    return "; ".join(errors) if errors else "see the TensorRT log"


def _check_calibrator(
    settings: TrtBuildSettings, calibrator: tensorrt.IInt8Calibrator | None
) -> None:
    if settings.precision == "int8" and calibrator is None:
        raise ConfigError(
            "tensorrt int8 needs a calibrator fed with real face chips; pass "
            "calibrator= (see the calibration package)"
        )
    if settings.precision != "int8" and calibrator is not None:
        raise ConfigError(f"a calibrator is used only for int8 plans, not {settings.precision}")


def _make_profile(
    builder: tensorrt.Builder,
    inputs: Mapping[str, tuple[int, ...]],
    batch_profile: BatchProfile,
    onnx_path: Path,
) -> tensorrt.IOptimizationProfile:
    profile = builder.create_optimization_profile()
    for name, shape in inputs.items():
        try:
            shapes = profile_shapes(name, shape, batch_profile)
        except ModelFileError as exc:
            raise ModelFileError(f"{onnx_path}: {exc}") from exc
        if shapes is not None:
            profile.set_shape(name, shapes.minimum, shapes.optimum, shapes.maximum)
    return profile


def _attach_calibrator(
    builder: tensorrt.Builder,
    config: tensorrt.IBuilderConfig,
    calibrator: tensorrt.IInt8Calibrator,
    inputs: Mapping[str, tuple[int, ...]],
    onnx_path: Path,
) -> None:
    """Give the INT8 calibrator to ``config`` with a fixed-shape profile of its batch size."""
    rows = calibrator.get_batch_size()
    config.int8_calibrator = calibrator
    calibration = _make_profile(builder, inputs, BatchProfile(rows, rows, rows), onnx_path)
    if not config.set_calibration_profile(calibration):
        raise ConfigError(f"TensorRT refused a calibration profile of {rows} rows for {onnx_path}")


def _attach_timing_cache(config: tensorrt.IBuilderConfig, store: ModelStore) -> None:
    path = store.timing_cache_path
    try:
        serialized = path.read_bytes()
    except FileNotFoundError:
        serialized = b""
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read the timing cache: {exc.strerror}") from exc
    cache = config.create_timing_cache(serialized)
    # a cache from another TensorRT version or GPU is refused; a corrupt one may come back None
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        _log.warning(
            "timing cache %s is corrupt or from another TensorRT or GPU; starting empty", path
        )
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)


def _save_timing_cache(config: tensorrt.IBuilderConfig, store: ModelStore) -> None:
    cache = config.get_timing_cache()
    if cache is not None:
        atomic_write(store.timing_cache_path, bytes(cache.serialize()))


def build_engine(
    onnx_path: Path,
    store: ModelStore,
    settings: TrtBuildSettings,
    *,
    calibrator: tensorrt.IInt8Calibrator | None = None,
    device_index: int = 0,
) -> StoredModel:
    """Compile the stored ONNX model at ``onnx_path`` into a TensorRT plan for GPU ``device_index``.

    The plan is written into ``store`` (``plan_path_for``) with its manifest and returned. The
    model's inputs must be (N, ...) with only N dynamic; ``calibrator`` is required for, and
    only allowed with, int8. Raises BackendUnavailableError without TensorRT or a GPU, and
    ModelFileError when TensorRT cannot parse the model or build the plan.
    """
    _check_calibrator(settings, calibrator)
    onnx = store.open(onnx_path)
    if onnx.manifest.format != "onnx":
        raise ModelFileError(f"{onnx_path}: is a {onnx.manifest.format} file, not an ONNX model")
    onnx_bytes = onnx.read_verified()
    _require_tensorrt()
    import tensorrt  # noqa: PLC0415

    device = CudaRuntime().select_device(device_index)
    errors: deque[str] = deque(maxlen=_KEPT_ERRORS)
    logger = _make_logger(errors)
    builder = tensorrt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10 networks are always explicit-batch
    parser = tensorrt.OnnxParser(network, logger)  # holds the weights: keep it through the build
    if not parser.parse(onnx_bytes, str(onnx_path)):
        details = "; ".join(parser.get_error(index).desc() for index in range(parser.num_errors))
        raise ModelFileError(
            f"{onnx_path}: TensorRT {tensorrt.__version__} cannot parse it: "
            f"{details or _recent(errors)}"
        )
    inputs = {
        tensor.name: tuple(tensor.shape)
        for tensor in (network.get_input(index) for index in range(network.num_inputs))
    }
    config = builder.create_builder_config()
    config.set_memory_pool_limit(tensorrt.MemoryPoolType.WORKSPACE, settings.workspace_bytes)
    profile = _make_profile(builder, inputs, settings.batch_profile, onnx_path)
    if config.add_optimization_profile(profile) < 0:
        raise ModelFileError(
            f"{onnx_path}: TensorRT refused the batch profile "
            f"{settings.batch_profile}: {_recent(errors)}"
        )
    if settings.precision in ("fp16", "int8"):  # int8 layers that cannot quantize run in fp16
        config.set_flag(tensorrt.BuilderFlag.FP16)
    if calibrator is not None:
        config.set_flag(tensorrt.BuilderFlag.INT8)
        _attach_calibrator(builder, config, calibrator, inputs, onnx_path)
    _attach_timing_cache(config, store)
    _log.info(
        "building a TensorRT %s %s plan of %s for %s",
        tensorrt.__version__,
        settings.precision,
        onnx_path,
        device_label(device),
    )
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ModelFileError(
            f"{onnx_path}: TensorRT {tensorrt.__version__} could not build a "
            f"{settings.precision} plan on {device_label(device)}: "
            f"{_recent(errors)}"
        )
    _save_timing_cache(config, store)
    data = bytes(plan)
    manifest = plan_manifest(
        onnx.manifest,
        settings,
        plan_sha256=hashlib.sha256(data).hexdigest(),
        tensorrt_version=tensorrt.__version__,
        device=device,
    )
    path = plan_path_for(
        store,
        onnx.manifest,
        settings.precision,
        tensorrt_version=tensorrt.__version__,
        device=device,
    )
    stored = store.save(path, data, manifest)
    _log.info("wrote TensorRT plan %s (%d bytes)", path, len(data))
    return stored


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
        _require_tensorrt()
        import tensorrt  # noqa: PLC0415

        cuda = CudaRuntime()
        device = cuda.select_device(device_index)
        check_plan_manifest(
            plan, onnx.manifest, tensorrt_version=tensorrt.__version__, device=device
        )
        self._profile = BatchProfile.from_manifest(plan.manifest, plan.path)
        self._errors: deque[str] = deque(maxlen=_KEPT_ERRORS)
        self._logger = _make_logger(self._errors)  # TensorRT needs it alive as long as the engine
        self._runtime = tensorrt.Runtime(self._logger)
        engine = self._runtime.deserialize_cuda_engine(plan.read_verified())
        if engine is None:
            raise ModelFileError(
                f"{plan_path}: TensorRT {tensorrt.__version__} cannot "
                f"deserialize it: {_recent(self._errors)}"
            )
        check_engine_io(plan.path, plan.manifest, _engine_tensors(engine))
        context = engine.create_execution_context()
        if context is None:
            raise BackendUnavailableError(
                f"{plan_path}: TensorRT could not create an execution "
                f"context on {device.name}: {_recent(self._errors)}"
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
                f"{_recent(self._errors)}"
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
                        f"{name!r}: {_recent(self._errors)}"
                    )
                self._input_rows[name] = chunk.padded_rows
            self._cuda.copy_to_device_async(binding.device, staged, self._stream)
        if not self._context.execute_async_v3(self._stream.handle):
            raise BackendUnavailableError(
                f"{self.backend} engine for {self.model_id} failed to run: {_recent(self._errors)}"
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


def load_or_build_encoder_plan(
    onnx_path: Path, store: ModelStore, settings: EngineSettings
) -> TrtEngine:
    """The encoder as a TrtEngine on GPU 0, building its plan first if none fits
    (``load_or_build_plan`` with the precision and batch sizes of ``settings``).

    ``settings.device`` must be ``cuda``: ConfigError otherwise, before anything is loaded.
    """
    if settings.device != "cuda":
        raise ConfigError(f"the tensorrt backend runs on device 'cuda', not {settings.device!r}")
    build = TrtBuildSettings(
        precision=settings.precision,
        min_batch=settings.min_batch,
        opt_batch=settings.opt_batch,
        max_batch=settings.max_batch,
    )
    return load_or_build_plan(onnx_path, store, build)
