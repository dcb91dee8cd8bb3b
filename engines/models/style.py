"""Style models on TensorRT, through ``engines.runtime.tensorrt``'s plan building.

``engines.runtime.tensorrt`` builds plans for models whose batch axis is dynamic (its engines
check the manifest for it) with one optimization profile over that axis. A style model is
exported for a fixed (1, 3, H, W). So the model is first copied with only the batch axis of its
input and output renamed to a symbolic ``batch`` (weights and every node unchanged), stored in
the writable ``plan_dir`` store with a manifest saying where it came from, and the plan is built
from that copy with a fixed-shape profile: min = opt = max = 1 frame. Plans are cached in the
same store (per model, precision, TensorRT version and GPU) and rebuilt when any of these
changes.

Everything up to ``load_or_build_plan`` is plain Python (tested without TensorRT); tensorrt and
cuda-python are imported by ``engines.runtime.tensorrt`` only when a plan is built or loaded.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import onnx

from engines.base import Engine, ModelManifest, TensorSpecModel
from engines.errors import ModelFileError
from engines.store import ModelStore, StoredModel

__all__ = ["BATCH_AXIS_NAME", "batch_axis_copy", "load_style_plan", "store_batch_axis_copy"]

_log = logging.getLogger(__name__)
BATCH_AXIS_NAME = "batch"
_FROM_KEY = "batch_axis_copy_of"  # manifest build key: sha256 of the fixed-shape ONNX file


def batch_axis_copy(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with axis 0 of its input and output made symbolic (``batch``).

    The input must be a fixed (1, 3, H, W) (ModelFileError otherwise); the output, which a style
    net gives the input's shape, is declared (batch, 3, H, W) too (the exporter leaves it
    partly symbolic).
    """
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    graph = copy.graph
    if len(graph.input) != 1 or len(graph.output) != 1:
        raise ModelFileError("a style model has one input and one output")
    dims = graph.input[0].type.tensor_type.shape.dim
    shape = [dim.dim_value for dim in dims]
    if len(dims) != 4 or shape[0] != 1 or shape[1] != 3 or 0 in shape:
        raise ModelFileError(
            f"style model input {graph.input[0].name!r}: expected a fixed (1, 3, H, W), got "
            f"{[dim.dim_value or dim.dim_param for dim in dims]}"
        )
    output = graph.output[0].type.tensor_type
    output.shape.Clear()
    for size in shape:
        output.shape.dim.add().dim_value = size
    for tensor in (graph.input[0].type.tensor_type, output):
        tensor.shape.dim[0].Clear()
        tensor.shape.dim[0].dim_param = BATCH_AXIS_NAME
    onnx.checker.check_model(copy)
    return copy


def _copy_manifest(original: ModelManifest, data: bytes) -> ModelManifest:
    def open_batch(spec: TensorSpecModel) -> TensorSpecModel:
        return TensorSpecModel(name=spec.name, dtype=spec.dtype, shape=(None, *spec.shape[1:]))

    return ModelManifest(
        model_id=original.model_id,  # the same weights: the same model
        format="onnx",
        precision=original.precision,
        source_sha256=original.source_sha256,
        artifact_sha256=hashlib.sha256(data).hexdigest(),
        inputs=tuple(open_batch(spec) for spec in original.inputs),
        outputs=tuple(open_batch(spec) for spec in original.outputs),
        library_versions={**original.library_versions, "onnx": onnx.__version__},
        build={**original.build, _FROM_KEY: original.artifact_sha256},
    )


def store_batch_axis_copy(model_path: Path, store: ModelStore) -> StoredModel:
    """The batch-axis copy of the stored style model at ``model_path``, in ``store``
    (``models/<name>.onnx``); an intact copy of the same file is reused."""
    original = ModelStore(model_path.parent.parent).open(model_path)
    target = store.model_path(model_path.stem)
    if target.resolve() == model_path.resolve():
        raise ModelFileError(f"{model_path}: plan_dir must be another store than the model's")
    if target.exists():
        try:
            current = store.open(target)
        except ModelFileError as exc:
            _log.warning("rewriting %s: %s", target, exc)
        else:
            if current.manifest.build.get(_FROM_KEY) == original.manifest.artifact_sha256:
                return current
    data = original.read_verified()
    try:
        proto = onnx.load_from_string(data)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise ModelFileError(f"{model_path}: not an ONNX model: {exc}") from exc
    copy = batch_axis_copy(proto).SerializeToString()
    stored = store.save(target, copy, _copy_manifest(original.manifest, copy))
    _log.info("stored the batch-axis copy of %s as %s", model_path, target)
    return stored


def load_style_plan(model_path: Path, store: ModelStore, *, precision: str) -> Engine:
    """The style model at ``model_path`` as a TensorRT engine on GPU 0 (fp32 or fp16), its plan
    built into ``store`` on first use. BackendUnavailableError without TensorRT or a GPU."""
    from engines.runtime.tensorrt.engine import load_or_build_plan  # noqa: PLC0415  (on use)
    from engines.runtime.tensorrt.profile import TrtBuildSettings  # noqa: PLC0415

    copy = store_batch_axis_copy(model_path, store)
    build = TrtBuildSettings(
        precision="fp16" if precision == "fp16" else "fp32", min_batch=1, opt_batch=1, max_batch=1
    )
    return load_or_build_plan(copy.path, store, build)
