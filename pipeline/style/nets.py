"""Feed-forward style transformers (Johnson et al. 2016) in PyTorch, and their ONNX export.

Two sizes share one layout: strided convolutions down, residual blocks, then nearest-neighbour
resize + convolution up (resize+conv instead of transposed convolution avoids checkerboard
artefacts), instance norm after every convolution but the last.

- ``full``: Johnson's net: 9x9 conv 32, 3x3/2 conv 64 and 128, five residual blocks of 128
  channels, two resize+conv steps and a 9x9 conv to RGB. Meant for a GPU.
- ``lite``: made for 2 CPU cores: three stride-2 convolutions (16, 32, 64 channels), so the
  residual blocks run at 1/8 resolution; depthwise-separable residual blocks; depthwise-
  separable up-sampling convolutions; a small 3x3 output conv.

Input and output of both: float32 (N, 3, H, W), **BGR 0-255** (the order OpenCV gives; the
loss network uses the same Caffe convention), H and W multiples of ``SIZE_MULTIPLE``. The output
is squashed into 0-255 by a scaled sigmoid. torch is the ``[torch]`` extra: import this module
only to train or export.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Literal

import onnx
import torch
from torch import nn
from torch.nn import functional

__all__ = [
    "INPUT_NAME",
    "NET_SPECS",
    "OUTPUT_NAME",
    "SIZE_MULTIPLE",
    "NetKind",
    "NetSpec",
    "StyleTransformer",
    "build_transformer",
    "export_onnx",
]

NetKind = Literal["full", "lite"]
INPUT_NAME = "frames"
OUTPUT_NAME = "stylized"
SIZE_MULTIPLE = 8  # three stride-2 steps in the lite net; the full net needs 4


@dataclass(frozen=True, slots=True)
class NetSpec:
    """Shape of a transformer: channels per down-sampling conv, residual blocks, conv kinds."""

    kind: NetKind
    down_channels: tuple[int, ...]
    down_kernels: tuple[int, ...]
    residual_blocks: int
    separable: bool  # depthwise-separable residual and up-sampling convolutions
    output_kernel: int


NET_SPECS: dict[NetKind, NetSpec] = {
    "full": NetSpec("full", (32, 64, 128), (9, 3, 3), 5, separable=False, output_kernel=9),
    "lite": NetSpec("lite", (16, 32, 64), (5, 3, 3), 4, separable=True, output_kernel=3),
}


class _ConvNorm(nn.Module):
    """Reflection-padded conv, optional instance norm and ReLU; depthwise-separable if asked."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int,
        *,
        stride: int = 1,
        separable: bool = False,
        norm: bool = True,
        relu: bool = True,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.ReflectionPad2d(kernel // 2)]
        if separable:
            layers += [
                nn.Conv2d(in_channels, in_channels, kernel, stride, groups=in_channels),
                nn.Conv2d(in_channels, out_channels, 1),
            ]
        else:
            layers.append(nn.Conv2d(in_channels, out_channels, kernel, stride))
        if norm:
            layers.append(nn.InstanceNorm2d(out_channels, affine=True))
        if relu:
            layers.append(nn.ReLU(inplace=True))
        self.layers = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = self.layers(features)
        return result


class _Residual(nn.Module):
    def __init__(self, channels: int, *, separable: bool) -> None:
        super().__init__()
        self.first = _ConvNorm(channels, channels, 3, separable=separable)
        self.second = _ConvNorm(channels, channels, 3, separable=separable, relu=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = features + self.second(self.first(features))
        return result


class _Upsample(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, *, separable: bool) -> None:
        super().__init__()
        self.conv = _ConvNorm(in_channels, out_channels, 3, separable=separable)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        result: torch.Tensor = self.conv(
            functional.interpolate(features, scale_factor=2.0, mode="nearest")
        )
        return result


class StyleTransformer(nn.Module):
    """Image transformer: float32 (N, 3, H, W) BGR 0-255 -> same shape, BGR 0-255."""

    def __init__(self, spec: NetSpec) -> None:
        super().__init__()
        self.spec = spec
        channels = spec.down_channels
        down: list[nn.Module] = []
        previous = 3
        for index, (width, kernel) in enumerate(zip(channels, spec.down_kernels, strict=True)):
            # the full net keeps its first 9x9 conv at full resolution, as Johnson's does
            stride = 1 if spec.kind == "full" and index == 0 else 2
            down.append(_ConvNorm(previous, width, kernel, stride=stride))
            previous = width
        self.down = nn.Sequential(*down)
        self.residuals = nn.Sequential(
            *(_Residual(previous, separable=spec.separable) for _ in range(spec.residual_blocks))
        )
        up: list[nn.Module] = []
        for width in reversed(channels[:-1]):
            up.append(_Upsample(previous, width, separable=spec.separable))
            previous = width
        if spec.kind == "lite":  # the lite net's first conv is strided too: one more step up
            up.append(_Upsample(previous, channels[0] // 2, separable=spec.separable))
            previous = channels[0] // 2
        self.up = nn.Sequential(*up)
        self.output = _ConvNorm(previous, 3, spec.output_kernel, norm=False, relu=False)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        features = self.up(self.residuals(self.down(frames / 127.5 - 1.0)))
        return torch.sigmoid(self.output(features)) * 255.0


def build_transformer(kind: NetKind) -> StyleTransformer:
    """A freshly initialised transformer of the given size."""
    return StyleTransformer(NET_SPECS[kind])


def export_onnx(model: StyleTransformer, *, height_px: int, width_px: int) -> onnx.ModelProto:
    """Export ``model`` for batch 1 at a fixed resolution (what the runtime feeds it).

    A fixed shape lets ONNX Runtime and TensorRT plan memory once; the runtime pads or resizes
    every frame to this size.
    """
    if height_px % SIZE_MULTIPLE or width_px % SIZE_MULTIPLE:
        raise ValueError(
            f"export size {width_px}x{height_px}: both sides must be multiples of {SIZE_MULTIPLE}"
        )
    model = model.eval()
    example = torch.zeros(1, 3, height_px, width_px)
    buffer = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(
            model,
            (example,),
            buffer,  # type: ignore[arg-type]  # torch accepts file objects; its stub says paths
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=17,
            dynamo=False,
        )
    proto = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(proto)
    return proto
