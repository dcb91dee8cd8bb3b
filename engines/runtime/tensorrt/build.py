"""Compile a stored ONNX model into a TensorRT plan and store it with its manifest.

``build_engine`` parses the ONNX model, adds one optimization profile over the batch axis of
every dynamic input (``min_batch``..``max_batch`` rows, tuned for ``opt_batch``), sets the FP16
or INT8 flags, reuses the store's timing cache, and writes the serialized plan with a manifest
naming the ONNX file it came from, the TensorRT version and the GPU (``plans``).
"""

from __future__ import annotations

import hashlib
import logging
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from engines.errors import ConfigError, ModelFileError
from engines.runtime.tensorrt.cuda import CudaRuntime
from engines.runtime.tensorrt.library import (
    KEPT_ERRORS,
    make_logger,
    recent_errors,
    require_tensorrt,
)
from engines.runtime.tensorrt.plans import device_label, plan_manifest, plan_path_for
from engines.runtime.tensorrt.profile import BatchProfile, TrtBuildSettings, profile_shapes
from engines.store import ModelStore, StoredModel, atomic_write

if TYPE_CHECKING:
    import tensorrt

__all__ = ["build_engine"]

_log = logging.getLogger(__name__)


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
    require_tensorrt()
    import tensorrt  # noqa: PLC0415

    device = CudaRuntime().select_device(device_index)
    errors: deque[str] = deque(maxlen=KEPT_ERRORS)
    logger = make_logger(errors)
    builder = tensorrt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10 networks are always explicit-batch
    parser = tensorrt.OnnxParser(network, logger)  # holds the weights: keep it through the build
    if not parser.parse(onnx_bytes, str(onnx_path)):
        details = "; ".join(parser.get_error(index).desc() for index in range(parser.num_errors))
        raise ModelFileError(
            f"{onnx_path}: TensorRT {tensorrt.__version__} cannot parse it: "
            f"{details or recent_errors(errors)}"
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
            f"{settings.batch_profile}: {recent_errors(errors)}"
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
            f"{recent_errors(errors)}"
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
