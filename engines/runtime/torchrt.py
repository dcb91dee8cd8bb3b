"""PyTorch backend: the same encoder built from the same dlib weights, on CPU or CUDA.

It is the GPU path that can be measured without TensorRT, and the base for fine-tuning. On CUDA
it runs in fp16 and can replay CUDA graphs captured once per batch size. ``torch`` is an optional
extra (``facestream[torch]``) and is imported only when this engine is built.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from engines.base import BaseEngine
from engines.convert.dlib_resnet import ConvWeights, EncoderNetwork, read_dlib_resnet
from engines.errors import BackendUnavailableError, ConfigError
from engines.store import ModelStore

__all__ = ["TorchEngine", "TorchSettings", "build_torch_encoder", "import_torch"]


@dataclass(frozen=True, slots=True)
class TorchSettings:
    """Device and precision for the PyTorch encoder; fp16 and CUDA graphs need ``cuda``."""

    device: Literal["cpu", "cuda"] = "cpu"
    precision: Literal["fp32", "fp16"] = "fp32"
    cuda_graphs: bool = False
    threads: int = 0  # CPU threads for torch (0 keeps torch's default)

    def __post_init__(self) -> None:
        if self.device not in ("cpu", "cuda") or self.precision not in ("fp32", "fp16"):
            raise ConfigError(
                f"torch device {self.device!r} / precision {self.precision!r}: "
                "expected cpu|cuda and fp32|fp16"
            )
        if self.device == "cpu" and (self.precision == "fp16" or self.cuda_graphs):
            raise ConfigError("torch fp16 and CUDA graphs need device 'cuda'")


def import_torch() -> Any:
    """The torch module, or BackendUnavailableError naming the extra to install."""
    try:
        import torch  # noqa: PLC0415  (optional dependency, imported on use)
    except ImportError as exc:
        raise BackendUnavailableError("torch is not installed: install facestream[torch]") from exc
    return torch


def build_torch_encoder(network: EncoderNetwork) -> Any:
    """An ``nn.Module`` computing the encoder: float32 (N, 3, 150, 150) RGB 0-255 -> (N, 128)."""
    import_torch()  # a clear BackendUnavailableError when the extra is missing
    import torch  # noqa: PLC0415  (optional dependency, imported on use)
    from torch.nn import functional  # noqa: PLC0415

    def conv_module(conv: ConvWeights) -> torch.nn.Conv2d:
        out_channels, in_channels, kernel, _ = conv.weights.shape
        module = torch.nn.Conv2d(
            in_channels, out_channels, kernel, stride=conv.stride, padding=conv.padding
        )
        module.weight = torch.nn.Parameter(
            torch.from_numpy(conv.weights.copy()), requires_grad=False
        )
        module.bias = torch.nn.Parameter(torch.from_numpy(conv.bias.copy()), requires_grad=False)
        return module

    shapes = [
        (block.downsample, branch, shortcut)
        for block, _, branch, shortcut in network.block_shapes()
    ]

    class DlibResNet(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("mean", torch.from_numpy(network.input_mean.reshape(1, 3, 1, 1)))
            self.stem = conv_module(network.stem)
            self.first_convs = torch.nn.ModuleList(conv_module(b.first) for b in network.blocks)
            self.second_convs = torch.nn.ModuleList(conv_module(b.second) for b in network.blocks)
            self.fc = torch.nn.Parameter(torch.from_numpy(network.fc.copy()), requires_grad=False)

        def forward(self, chips: Any) -> Any:
            features = self.stem((chips - self.mean) * network.input_scale).relu()
            features = functional.max_pool2d(features, network.pool_kernel, network.pool_stride)
            for first, second, (downsample, branch_size, shortcut_size) in zip(
                self.first_convs, self.second_convs, shapes, strict=True
            ):
                branch = second(first(features).relu())
                shortcut = features
                if downsample:  # dlib adds tensors of unequal shape with zeros for the missing part
                    shortcut = functional.avg_pool2d(features, 2, 2)
                    extra_channels = branch.shape[1] - shortcut.shape[1]
                    shortcut = functional.pad(shortcut, (0, 0, 0, 0, 0, extra_channels))
                grow = abs(branch_size - shortcut_size)
                if branch_size < shortcut_size:
                    branch = functional.pad(branch, (0, grow, 0, grow))
                elif shortcut_size < branch_size:
                    shortcut = functional.pad(shortcut, (0, grow, 0, grow))
                features = (branch + shortcut).relu()
            return features.mean(dim=(2, 3)) @ self.fc

    return DlibResNet()


class TorchEngine(BaseEngine):
    """The encoder in PyTorch; ``backend`` is ``torch-<device>-<precision>``.

    The weights are read from dlib's file and must be the ones the stored ONNX was made from.
    """

    def __init__(
        self, model_path: Path, store: ModelStore, *, source: Path, settings: TorchSettings
    ) -> None:
        stored = store.open(model_path)
        torch = import_torch()
        if settings.device == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailableError("torch reports no CUDA device; use device 'cpu'")
        network = read_dlib_resnet(source)
        stored.manifest.require_match(artifact=source, source_sha256=network.source_sha256)
        if settings.threads:
            torch.set_num_threads(settings.threads)
        dtype = torch.float16 if settings.precision == "fp16" else torch.float32
        self._torch = torch
        self._device = torch.device(settings.device)
        self._dtype = dtype
        self._module = build_torch_encoder(network).to(self._device, dtype).eval()
        self._graphs: dict[int, tuple[Any, Any, Any]] = {}
        self._use_graphs = settings.cuda_graphs
        # a CUDA graph replays into shared static buffers: one call at a time (the service
        # encodes from the recognition thread and from API threads)
        self._graph_lock = threading.Lock()
        super().__init__(
            backend=f"torch-{settings.device}-{settings.precision}",
            model_id=stored.manifest.model_id,
            inputs=stored.manifest.input_specs(),
            outputs=stored.manifest.output_specs(),
        )

    def _forward(self, chips: Any) -> Any:
        if not self._use_graphs:
            return self._module(chips)
        size = int(chips.shape[0])
        if size not in self._graphs:  # capture once per batch size, then replay
            static_input = chips.clone()
            stream = self._torch.cuda.Stream()
            stream.wait_stream(self._torch.cuda.current_stream())
            with self._torch.cuda.stream(stream):
                self._module(static_input)  # warm-up outside the graph, as CUDA graphs require
            self._torch.cuda.current_stream().wait_stream(stream)
            graph = self._torch.cuda.CUDAGraph()
            with self._torch.cuda.graph(graph):
                static_output = self._module(static_input)
            self._graphs[size] = (graph, static_input, static_output)
        graph, static_input, static_output = self._graphs[size]
        static_input.copy_(chips)
        graph.replay()
        return static_output

    def _run(self, batch: Mapping[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
        (input_name,) = self.inputs
        (output_name,) = self.outputs
        with self._torch.inference_mode():
            chips = self._torch.from_numpy(batch[input_name]).to(self._device, self._dtype)
            if self._use_graphs:
                with self._graph_lock:
                    result = self._forward(chips).float().cpu().numpy()
            else:
                result = self._forward(chips).float().cpu().numpy()
        return {output_name: np.asarray(result, dtype=np.float32)}

    def _close(self) -> None:
        self._graphs.clear()
        del self._module
