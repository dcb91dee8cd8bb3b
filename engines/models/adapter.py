"""A site adapter: a linear head on the frozen face encoder, appended to its ONNX graph.

The head maps the encoder's 128-d descriptor x to ``scale * normalize(W x + b)``. ``W`` and
``b`` are trained with the triplet loss on a site's own faces (calibration/adapter.py,
``facestream train adapter``); ``scale`` is the median descriptor norm of the training faces,
so distances keep roughly the encoder's units and a tau near the old one is a sane start (the
adapted model still needs its own calibration: it has a new model id).

The head is stored as a small ONNX file whose metadata names the encoder model id it was
trained on; ``append_adapter`` refuses any other encoder. ``build_adapted_encoder`` appends
it to the stored encoder graph and saves the result under
``models/dlib_resnet_v1_adapter-<head sha256[:12]>.onnx`` with model id
``<encoder model id>+adapter-<head sha256[:12]>``, so every backend that takes the ONNX file
runs encoder and head as one model, and embeddings of the two spaces are never compared.
The ops used (MatMul, Add, Mul, Sqrt, Max, Div) mean the same in every opset from 8 on.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
import onnx
from google.protobuf.message import DecodeError  # type: ignore[import-untyped]
from onnx import TensorProto, helper, numpy_helper

from engines.base import ModelManifest, TensorSpecModel
from engines.errors import ModelFileError
from engines.store import ModelStore, StoredModel

__all__ = [
    "ADAPTER_INPUT",
    "ADAPTER_OUTPUT",
    "AdapterHead",
    "adapted_model_id",
    "adapter_head_onnx",
    "append_adapter",
    "apply_head",
    "build_adapted_encoder",
    "read_adapter",
]

ADAPTER_INPUT: Final = "descriptor"
ADAPTER_OUTPUT: Final = "adapted"
BASE_MODEL_KEY: Final = "facestream.base_model_id"
_PREFIX: Final = "adapter/"
_EPSILON: Final = 1e-12
_HEAD_OPSET: Final = 13
_log = logging.getLogger(__name__)


def adapter_head_onnx(
    weight: npt.NDArray[np.float32],
    bias: npt.NDArray[np.float32],
    *,
    scale: float,
    base_model_id: str,
) -> onnx.ModelProto:
    """The head ``scale * normalize(x @ weight + bias)`` as an ONNX model (dynamic batch).

    weight: (D, D') float32, applied as ``x @ weight`` (rows of x are descriptors);
    bias: (D',); base_model_id: the encoder the head was trained on.
    """
    weight = np.asarray(weight, np.float32)
    bias = np.asarray(bias, np.float32)
    if weight.ndim != 2 or bias.shape != (weight.shape[1],):
        raise ModelFileError(
            f"adapter weight must be (D, D') with bias (D',); got {weight.shape} and {bias.shape}"
        )
    if not np.isfinite(weight).all() or not np.isfinite(bias).all() or not scale > 0:
        raise ModelFileError("adapter weights must be finite and its scale positive")
    size_in, size_out = weight.shape
    initializers = [
        numpy_helper.from_array(weight, "weight"),
        numpy_helper.from_array(bias, "bias"),
        numpy_helper.from_array(np.ones((size_out, 1), np.float32), "ones"),
        numpy_helper.from_array(np.array(_EPSILON, np.float32), "epsilon"),
        numpy_helper.from_array(np.array(scale, np.float32), "scale"),
    ]
    nodes = [
        helper.make_node("MatMul", [ADAPTER_INPUT, "weight"], ["projected"]),
        helper.make_node("Add", ["projected", "bias"], ["shifted"]),
        helper.make_node("Mul", ["shifted", "shifted"], ["squared"]),
        helper.make_node("MatMul", ["squared", "ones"], ["sum_squared"]),  # (N, 1)
        helper.make_node("Max", ["sum_squared", "epsilon"], ["safe_sum_squared"]),
        helper.make_node("Sqrt", ["safe_sum_squared"], ["norm"]),
        helper.make_node("Div", ["shifted", "norm"], ["unit"]),
        helper.make_node("Mul", ["unit", "scale"], [ADAPTER_OUTPUT]),
    ]
    graph = helper.make_graph(
        nodes,
        "facestream_adapter",
        [helper.make_tensor_value_info(ADAPTER_INPUT, TensorProto.FLOAT, ["batch", size_in])],
        [helper.make_tensor_value_info(ADAPTER_OUTPUT, TensorProto.FLOAT, ["batch", size_out])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _HEAD_OPSET)])
    helper.set_model_props(model, {BASE_MODEL_KEY: base_model_id})
    onnx.checker.check_model(model)
    return model


def apply_head(
    descriptors: npt.NDArray[np.float32],
    weight: npt.NDArray[np.float32],
    bias: npt.NDArray[np.float32],
    scale: float,
) -> npt.NDArray[np.float32]:
    """``scale * normalize(descriptors @ weight + bias)`` row by row, as the head's graph does."""
    shifted = np.asarray(descriptors, np.float32) @ weight + bias
    norms = np.sqrt(np.maximum((shifted * shifted).sum(axis=1, keepdims=True), _EPSILON))
    return np.asarray(shifted / norms * scale, np.float32)


@dataclass(frozen=True, slots=True)
class AdapterHead:
    """A head file read from disk: its model, sha256, the encoder it was trained on, and its
    weights (read once from the model's initializers)."""

    path: Path
    model: onnx.ModelProto
    sha256: str
    base_model_id: str
    weight: npt.NDArray[np.float32]
    bias: npt.NDArray[np.float32]
    scale: float

    def apply(self, descriptors: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """The head on descriptors (N, D) -> (N, D')."""
        return apply_head(descriptors, self.weight, self.bias, self.scale)


def read_adapter(path: Path) -> AdapterHead:
    """Load a head written by ``facestream train adapter``; ModelFileError says what is wrong."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read the adapter: {exc.strerror}") from exc
    try:
        model = onnx.load_from_string(data)
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, DecodeError, ValueError) as exc:
        raise ModelFileError(f"{path}: not a valid ONNX adapter: {exc}") from exc
    properties = {item.key: item.value for item in model.metadata_props}
    inputs = [item.name for item in model.graph.input]
    outputs = [item.name for item in model.graph.output]
    names = {item.name for item in model.graph.initializer}
    if (
        BASE_MODEL_KEY not in properties
        or inputs != [ADAPTER_INPUT]
        or outputs != [ADAPTER_OUTPUT]
        or not {"weight", "bias", "scale"} <= names
    ):
        raise ModelFileError(
            f"{path}: not a facestream adapter head (expected input {ADAPTER_INPUT!r}, output "
            f"{ADAPTER_OUTPUT!r} and metadata {BASE_MODEL_KEY!r}); make one with "
            "`facestream train adapter`"
        )
    weights = {item.name: numpy_helper.to_array(item) for item in model.graph.initializer}
    return AdapterHead(
        path,
        model,
        hashlib.sha256(data).hexdigest(),
        properties[BASE_MODEL_KEY],
        weight=np.asarray(weights["weight"], np.float32),
        bias=np.asarray(weights["bias"], np.float32),
        scale=float(weights["scale"]),
    )


def adapted_model_id(base_model_id: str, head_sha256: str) -> str:
    """Model id of ``base_model_id``'s encoder with the head of this sha256 appended."""
    return f"{base_model_id}+adapter-{head_sha256[:12]}"


def append_adapter(
    encoder: onnx.ModelProto, head: AdapterHead, *, encoder_output: str, base_model_id: str
) -> onnx.ModelProto:
    """One graph: ``encoder`` then ``head`` on its ``encoder_output``, whose name it keeps.

    ModelFileError when the head was trained on another encoder than ``base_model_id``.
    """
    if head.base_model_id != base_model_id:
        raise ModelFileError(
            f"{head.path}: this adapter was trained on encoder {head.base_model_id!r}, the "
            f"configured encoder is {base_model_id!r}: train it again on this encoder"
        )
    head_model = onnx.ModelProto()
    head_model.CopyFrom(head.model)
    del head_model.opset_import[:]
    head_model.opset_import.extend(encoder.opset_import)  # the head's ops mean the same in each
    head_model.ir_version = encoder.ir_version
    head_model = onnx.compose.add_prefix(head_model, _PREFIX)
    body = onnx.ModelProto()
    body.CopyFrom(encoder)
    inner = _PREFIX + "encoder_" + encoder_output
    _rename_tensor(body.graph, encoder_output, inner)
    merged = onnx.compose.merge_models(
        body,
        head_model,
        io_map=[(inner, _PREFIX + ADAPTER_INPUT)],
        outputs=[_PREFIX + ADAPTER_OUTPUT],
    )
    # callers see the encoder's own output name, so engines and specs stay unchanged
    _rename_tensor(merged.graph, _PREFIX + ADAPTER_OUTPUT, encoder_output)
    onnx.checker.check_model(merged)
    return merged


def _rename_tensor(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Rename tensor ``old`` to ``new`` wherever the graph produces, uses or outputs it."""
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]
    for value in graph.output:
        if value.name == old:
            value.name = new


def build_adapted_encoder(store: ModelStore, encoder: StoredModel, head_path: Path) -> StoredModel:
    """The stored encoder with the head at ``head_path`` appended, built unless up to date."""
    head = read_adapter(head_path)
    base = encoder.manifest
    model_id = adapted_model_id(base.model_id, head.sha256)
    path = store.model_path(f"{encoder.path.stem}+adapter-{head.sha256[:12]}")
    current = store.up_to_date(path, source_sha256=base.source_sha256)
    if current is not None and current.manifest.model_id == model_id:
        return current
    (output,) = base.outputs
    merged = append_adapter(
        onnx.load(str(encoder.path)),
        head,
        encoder_output=output.name,
        base_model_id=base.model_id,
    )
    data = merged.SerializeToString()
    (head_output,) = head.model.graph.output
    size = head_output.type.tensor_type.shape.dim[1].dim_value
    manifest = ModelManifest(
        model_id=model_id,
        format="onnx",
        precision=base.precision,
        source_sha256=base.source_sha256,
        artifact_sha256=hashlib.sha256(data).hexdigest(),
        inputs=base.inputs,
        outputs=(TensorSpecModel(name=output.name, dtype="float32", shape=(None, size)),),
        library_versions=base.library_versions,
        build={
            **base.build,
            "base_model_id": base.model_id,
            "adapter_sha256": head.sha256,
            "adapter": str(head_path),
        },
    )
    stored = store.save(path, data, manifest)
    _log.info("built %s: encoder with adapter %s (model id %s)", path, head_path, model_id)
    return stored
