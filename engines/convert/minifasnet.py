"""MiniFASNet anti-spoofing networks (PyTorch state dicts) -> one ONNX ensemble graph.

The weights are Minivision's Silent-Face-Anti-Spoofing release (Apache-2.0; see
../shared/models/minifasnet/PROVENANCE.md): MiniFASNetV2 scored on the face box enlarged 2.7x
and MiniFASNetV1SE on the box enlarged 4.0x, both 80x80 crops. The files are legacy pickles, so
they are read with ``torch.load(weights_only=True)`` only (never a plain unpickle).

The network is our own module, written from the architecture (MobileFaceNet-style
depthwise-separable bottlenecks with PReLU, ``Silent-Face`` paper). Its channel widths are not
listed here: ``MiniFasNet.from_state_dict`` reads them from the weight shapes, so V2 (pruned to
"1.8M_" widths), V1 and the squeeze-excitation variants all come out of the same code::

    stem      3x3/2 conv + BN + PReLU, then a 3x3 depthwise conv + BN + PReLU
    stage     [downsampling bottleneck (stride 2, no shortcut)] + N residual bottlenecks
              bottleneck = 1x1 expand (BN, PReLU) -> 3x3 depthwise (BN, PReLU) -> 1x1 project (BN)
              [+ squeeze-excitation on the projection of a stage's last block (the "SE" nets)]
              stages conv_23/conv_3, conv_34/conv_4, conv_45/conv_5 (sizes 80 > 40 > 20 > 10 > 5)
    head      1x1 conv to 512 (BN, PReLU) -> 5x5 depthwise "global" conv + BN -> flatten
              -> linear 512->128 -> BN1d -> linear 128->3 (dropout is inactive at inference)

The exported graph takes two inputs, one per model and crop scale (``INPUT_SCALES``), each
float32 (N, 3, 80, 80) BGR 0..255 (not divided by 255: as the authors feed it), and returns
``probabilities`` float32 (N, 3), the mean of the two softmaxes; class 1 is "real face".
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import onnx

from engines.errors import ModelFileError

if TYPE_CHECKING:
    import torch

__all__ = [
    "CROP_SIZE_PX",
    "INPUT_SCALES",
    "MINIFASNET_FILES",
    "ONNX_OPSET",
    "OUTPUT_NAME",
    "REAL_CLASS",
    "MiniFasNetFile",
    "build_minifasnet",
    "convert_minifasnet_ensemble",
    "load_minifasnet_state",
]

CROP_SIZE_PX = 80
OUTPUT_NAME = "probabilities"
REAL_CLASS = 1  # classes 0 and 2 are the two spoof classes of the authors' training labels
ONNX_OPSET = 17


@dataclass(frozen=True, slots=True)
class MiniFasNetFile:
    """One released MiniFASNet: its file, the ensemble input it feeds, crop scale and sha256."""

    input_name: str
    file_name: str
    crop_scale: float  # the face box is enlarged this many times before the 80x80 resize
    sha256: str


MINIFASNET_FILES: tuple[MiniFasNetFile, ...] = (
    MiniFasNetFile(
        "crops_scale_2_7",
        "2.7_80x80_MiniFASNetV2.pth",
        2.7,
        "a5eb02e1843f19b5386b953cc4c9f011c3f985d0ee2bb9819eea9a142099bec0",
    ),
    MiniFasNetFile(
        "crops_scale_4_0",
        "4_0_0_80x80_MiniFASNetV1SE.pth",
        4.0,
        "84ee1d37d96894d5e82de5a57df044ef80a58be2b218b5ed7cdfd875ec2f5990",
    ),
)
INPUT_SCALES: dict[str, float] = {item.input_name: item.crop_scale for item in MINIFASNET_FILES}
"""Ensemble input name -> how many times the face box is enlarged for that input's crops."""

_STAGES = (("conv_23", "conv_3"), ("conv_34", "conv_4"), ("conv_45", "conv_5"))


def _import_torch() -> object:
    try:
        import torch  # noqa: PLC0415  (build-time dependency: facestream[torch])
    except ImportError as exc:
        raise ModelFileError(
            "converting MiniFASNet needs torch: install facestream[torch]"
        ) from exc
    return torch


def load_minifasnet_state(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a MiniFASNet .pth, with DataParallel's ``module.`` prefix removed.

    Read with ``torch.load(weights_only=True)``: tensors and plain containers only.
    """
    _import_torch()
    import torch  # noqa: PLC0415

    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise ModelFileError(f"{path}: MiniFASNet weights not found") from exc
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError... for bad files
        raise ModelFileError(f"{path}: not a readable MiniFASNet state dict: {exc}") from exc
    if not isinstance(raw, dict) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise ModelFileError(f"{path}: expected a dict of tensors (a state dict)")
    return {key.removeprefix("module."): value for key, value in raw.items()}


def _require(state: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    if key not in state:
        raise ModelFileError(f"MiniFASNet state dict has no {key!r}")
    return state[key]


def build_minifasnet(state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """Our MiniFASNet module with the widths of ``state``, its weights loaded, in eval mode."""
    _import_torch()
    from torch import nn  # noqa: PLC0415

    class ConvUnit(nn.Module):
        """Conv (no bias) + BN, optionally PReLU; depthwise when the weight has 1 input chan."""

        def __init__(self, prefix: str, *, stride: int, activation: bool) -> None:
            super().__init__()
            weight = _require(state, f"{prefix}.conv.weight")
            out_channels, in_per_group, kernel, _ = weight.shape
            groups = out_channels if in_per_group == 1 and out_channels > 1 else 1
            in_channels = in_per_group * groups
            self.conv = nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size=kernel,
                stride=stride,
                # 3x3 convs keep the size ("same"); the 5x5 head conv reduces 5x5 to 1x1
                padding=1 if kernel == 3 else 0,
                groups=groups,
                bias=False,
            )
            self.bn = nn.BatchNorm2d(out_channels)
            self.prelu = nn.PReLU(out_channels) if activation else None

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.bn(self.conv(x))
            if self.prelu is not None:
                out = self.prelu(out)
            return out

    class SqueezeExcite(nn.Module):
        """Channel gates from the pooled projection: 1x1 down, ReLU, 1x1 up, sigmoid."""

        def __init__(self, prefix: str) -> None:
            super().__init__()
            reduced, channels = _require(state, f"{prefix}.fc1.weight").shape[:2]
            self.fc1 = nn.Conv2d(channels, reduced, kernel_size=1, bias=False)
            self.bn1 = nn.BatchNorm2d(reduced)
            self.fc2 = nn.Conv2d(reduced, channels, kernel_size=1, bias=False)
            self.bn2 = nn.BatchNorm2d(channels)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            pooled = x.mean(dim=(2, 3), keepdim=True)
            gates: torch.Tensor = self.bn2(self.fc2(self.bn1(self.fc1(pooled)).relu())).sigmoid()
            return x * gates

    class Bottleneck(nn.Module):
        """Expand, depthwise, project; a shortcut when the shape is kept (stride 1)."""

        def __init__(self, prefix: str, *, stride: int) -> None:
            super().__init__()
            self.conv = ConvUnit(f"{prefix}.conv", stride=1, activation=True)
            self.conv_dw = ConvUnit(f"{prefix}.conv_dw", stride=stride, activation=True)
            self.project = ConvUnit(f"{prefix}.project", stride=1, activation=False)
            self.residual = stride == 1
            has_gates = f"{prefix}.se_module.fc1.weight" in state
            self.se_module = SqueezeExcite(f"{prefix}.se_module") if has_gates else None

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.project(self.conv_dw(self.conv(x)))
            if self.se_module is not None:
                out = self.se_module(out)
            return x + out if self.residual else out

    class ResidualStage(nn.Module):
        """The stride-1 bottlenecks of one stage, as many as the state dict holds."""

        def __init__(self, prefix: str) -> None:
            super().__init__()
            count = 0
            while f"{prefix}.model.{count}.conv.conv.weight" in state:
                count += 1
            if count == 0:
                raise ModelFileError(f"MiniFASNet state dict has no blocks under {prefix!r}")
            self.model = nn.Sequential(
                *(Bottleneck(f"{prefix}.model.{index}", stride=1) for index in range(count))
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            result: torch.Tensor = self.model(x)
            return result

    class MiniFasNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = ConvUnit("conv1", stride=2, activation=True)
            self.conv2_dw = ConvUnit("conv2_dw", stride=1, activation=True)
            for down, residual in _STAGES:
                setattr(self, down, Bottleneck(down, stride=2))
                setattr(self, residual, ResidualStage(residual))
            self.conv_6_sep = ConvUnit("conv_6_sep", stride=1, activation=True)
            self.conv_6_dw = ConvUnit("conv_6_dw", stride=1, activation=False)
            embedding, features = _require(state, "linear.weight").shape
            classes = _require(state, "prob.weight").shape[0]
            self.linear = nn.Linear(features, embedding, bias=False)
            self.bn = nn.BatchNorm1d(embedding)
            self.prob = nn.Linear(embedding, classes, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.conv2_dw(self.conv1(x))
            for down, residual in _STAGES:
                x = getattr(self, residual)(getattr(self, down)(x))
            x = self.conv_6_dw(self.conv_6_sep(x)).flatten(1)
            logits: torch.Tensor = self.prob(self.bn(self.linear(x)))
            return logits

    network = MiniFasNet()
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # missing/unexpected keys or shape mismatches
        raise ModelFileError(f"MiniFASNet weights do not fit the network: {exc}") from exc
    return network.eval()


def convert_minifasnet_ensemble(source_dir: Path) -> onnx.ModelProto:
    """Both MiniFASNets of ``source_dir`` as one ONNX graph (see the module docstring).

    The caller checks the files' sha256 (``MINIFASNET_FILES``) before calling this.
    """
    _import_torch()
    import torch  # noqa: PLC0415

    networks = torch.nn.ModuleList(
        build_minifasnet(load_minifasnet_state(source_dir / item.file_name))
        for item in MINIFASNET_FILES
    )

    class Ensemble(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.networks = networks

        def forward(self, *crops: torch.Tensor) -> torch.Tensor:
            scores = [
                net(batch).softmax(dim=1) for net, batch in zip(self.networks, crops, strict=True)
            ]
            return torch.stack(scores).mean(dim=0)

    ensemble = Ensemble().eval()
    names = [item.input_name for item in MINIFASNET_FILES]
    examples = tuple(torch.zeros(1, 3, CROP_SIZE_PX, CROP_SIZE_PX) for _ in names)
    buffer = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(
            ensemble,
            examples,
            buffer,  # type: ignore[arg-type]  # torch accepts file objects; its stub says paths
            input_names=names,
            output_names=[OUTPUT_NAME],
            dynamic_axes={name: {0: "batch"} for name in [*names, OUTPUT_NAME]},
            opset_version=ONNX_OPSET,
            dynamo=False,
        )
    proto = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(proto)
    return proto
