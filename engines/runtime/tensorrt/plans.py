"""Plan bookkeeping (plain Python): where a plan lives in the store, what its manifest says,
and the checks that a plan fits the ONNX model, the TensorRT version and the GPU in use.

A plan is only valid for the ONNX file it was built from, the TensorRT version that built it and
the GPU it was built on, so its manifest names all three and a plan is loaded only when they
match; otherwise ManifestMismatchError.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from engines.base import ModelManifest, Precision
from engines.errors import ModelFileError
from engines.runtime.tensorrt.cuda import GpuDevice
from engines.runtime.tensorrt.profile import TrtBuildSettings
from engines.store import ModelStore, StoredModel

__all__ = [
    "PLAN_FORMAT",
    "EngineTensor",
    "check_engine_io",
    "check_plan_manifest",
    "device_key",
    "device_label",
    "plan_expectations",
    "plan_manifest",
    "plan_path_for",
]

PLAN_FORMAT = "tensorrt-plan"
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
