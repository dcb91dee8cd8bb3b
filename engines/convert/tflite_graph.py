"""Read a TensorFlow Lite flatbuffer into plain, typed records (tensors, operators, options).

Parsing uses the schema bindings of the ``tflite`` PyPI package (generated from TensorFlow's
``schema.fbs``); nothing here runs the model. Only the first subgraph is read, and only the
options of the operators the BlazeFace face detectors use are decoded; any other operator is
kept by name so the converter can refuse it with a clear message.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from engines.errors import BackendUnavailableError, ModelFileError

__all__ = ["TfliteGraph", "TfliteOperator", "TfliteTensor", "read_tflite"]

_FILE_IDENTIFIER = b"TFL3"
# TensorType enum of schema.fbs -> numpy dtype, for the types a float model holds.
_DTYPES: dict[int, np.dtype[Any]] = {
    0: np.dtype(np.float32),
    1: np.dtype(np.float16),
    2: np.dtype(np.int32),
    3: np.dtype(np.uint8),
    4: np.dtype(np.int64),
    9: np.dtype(np.int8),
}
_ACTIVATIONS = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH"}
_PADDINGS = {0: "SAME", 1: "VALID"}


@dataclass(frozen=True, slots=True)
class TfliteTensor:
    """One tensor: ``shape`` as stored (NHWC for images); ``data`` only for constants."""

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    data: npt.NDArray[Any] | None


@dataclass(frozen=True, slots=True)
class TfliteOperator:
    """One operator: builtin name, tensor indices (-1 = optional input absent), options.

    ``options`` holds the decoded builtin options of the supported operators, e.g.
    ``{"padding": "SAME", "stride_h": 2, "activation": "RELU"}``.
    """

    kind: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    options: dict[str, int | str | bool] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TfliteGraph:
    """The first subgraph of a .tflite file, in execution order."""

    source: Path
    description: str
    tensors: tuple[TfliteTensor, ...]
    operators: tuple[TfliteOperator, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


def _import_tflite() -> Any:
    try:
        import tflite  # noqa: PLC0415  (no stubs; build time)
    except ImportError as exc:
        raise BackendUnavailableError(
            "converting .tflite models needs the schema bindings: pip install tflite==2.18.0"
        ) from exc
    return tflite


def _buffer_data(raw: bytes, buffer: Any) -> bytes:
    """Bytes of one buffer: inline in the flatbuffer, or (large models) at an offset after it."""
    offset, size = int(buffer.Offset()), int(buffer.Size())
    if offset > 1:  # 0 and 1 both mean "no external data" in schema.fbs
        return raw[offset : offset + size]
    if buffer.DataIsNone() or buffer.DataLength() == 0:
        return b""
    return bytes(buffer.DataAsNumpy().tobytes())


def _read_tensor(raw: bytes, model: Any, subgraph: Any, index: int) -> TfliteTensor:
    tensor = subgraph.Tensors(index)
    type_code = int(tensor.Type())
    if type_code not in _DTYPES:
        raise ValueError(f"tensor {index} has unsupported TensorType {type_code}")
    dtype = _DTYPES[type_code]
    shape = tuple(int(dim) for dim in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()
    data_bytes = _buffer_data(raw, model.Buffers(tensor.Buffer()))
    data = None
    if data_bytes:
        data = np.frombuffer(data_bytes, dtype=dtype).reshape(shape).copy()
    return TfliteTensor(index, tensor.Name().decode("utf-8"), shape, dtype, data)


def _options(tflite: Any, operator: Any, kind: str) -> dict[str, int | str | bool]:
    table = operator.BuiltinOptions()
    if table is None:
        return {}
    classes = {
        "CONV_2D": tflite.Conv2DOptions,
        "DEPTHWISE_CONV_2D": tflite.DepthwiseConv2DOptions,
        "MAX_POOL_2D": tflite.Pool2DOptions,
        "ADD": tflite.AddOptions,
        "CONCATENATION": tflite.ConcatenationOptions,
        "RESIZE_BILINEAR": tflite.ResizeBilinearOptions,
    }
    if kind not in classes:
        return {}
    options = classes[kind]()
    options.Init(table.Bytes, table.Pos)
    decoded: dict[str, int | str | bool] = {}
    if kind in ("CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D"):
        decoded["padding"] = _PADDINGS.get(int(options.Padding()), "UNKNOWN")
        decoded["stride_h"] = int(options.StrideH())
        decoded["stride_w"] = int(options.StrideW())
    if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        decoded["dilation_h"] = int(options.DilationHFactor())
        decoded["dilation_w"] = int(options.DilationWFactor())
    if kind == "DEPTHWISE_CONV_2D":
        decoded["depth_multiplier"] = int(options.DepthMultiplier())
    if kind == "MAX_POOL_2D":
        decoded["filter_h"] = int(options.FilterHeight())
        decoded["filter_w"] = int(options.FilterWidth())
    if kind == "CONCATENATION":
        decoded["axis"] = int(options.Axis())
    if kind == "RESIZE_BILINEAR":
        decoded["align_corners"] = bool(options.AlignCorners())
        decoded["half_pixel_centers"] = bool(options.HalfPixelCenters())
    else:
        decoded["activation"] = _ACTIVATIONS.get(int(options.FusedActivationFunction()), "?")
    return decoded


def _parse(raw: bytes, source: Path) -> TfliteGraph:
    tflite = _import_tflite()
    names = tflite.utils.BUILTIN_OPCODE2NAME
    model = tflite.Model.GetRootAs(raw, 0)
    if model.SubgraphsLength() < 1:
        raise ValueError("the model has no subgraph")
    subgraph = model.Subgraphs(0)
    tensors = tuple(
        _read_tensor(raw, model, subgraph, index) for index in range(subgraph.TensorsLength())
    )
    operators = []
    for position in range(subgraph.OperatorsLength()):
        operator = subgraph.Operators(position)
        code = model.OperatorCodes(operator.OpcodeIndex())
        # schema v3a moved opcodes above 127 to builtin_code; the larger field is the real one
        kind = names.get(max(int(code.BuiltinCode()), int(code.DeprecatedBuiltinCode())), "CUSTOM")
        operators.append(
            TfliteOperator(
                kind=kind,
                inputs=tuple(int(i) for i in operator.InputsAsNumpy()),
                outputs=tuple(int(i) for i in operator.OutputsAsNumpy()),
                options=_options(tflite, operator, kind),
            )
        )
    description = model.Description()
    return TfliteGraph(
        source=source,
        description=description.decode("utf-8", "replace") if description else "",
        tensors=tensors,
        operators=tuple(operators),
        inputs=tuple(int(i) for i in subgraph.InputsAsNumpy()),
        outputs=tuple(int(i) for i in subgraph.OutputsAsNumpy()),
    )


def read_tflite(source: Path) -> TfliteGraph:
    """Parse the .tflite file at ``source``.

    Raises ModelFileError naming the file when it is missing, unreadable, not a TFLite
    flatbuffer (identifier ``TFL3``), or truncated/corrupt.
    """
    try:
        raw = source.read_bytes()
    except OSError as exc:
        raise ModelFileError(f"{source}: cannot read the .tflite model: {exc.strerror}") from exc
    if len(raw) < 8 or raw[4:8] != _FILE_IDENTIFIER:
        raise ModelFileError(
            f"{source}: not a TensorFlow Lite model (file identifier {raw[4:8]!r}, "
            f"expected {_FILE_IDENTIFIER!r})"
        )
    try:
        return _parse(raw, source)
    except (struct.error, IndexError, ValueError, TypeError, OverflowError, AttributeError) as exc:
        raise ModelFileError(f"{source}: corrupt or truncated .tflite model: {exc}") from exc
