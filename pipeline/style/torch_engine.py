"""PyTorch backend for style models: the stored ONNX file's weights in the PyTorch net.

A style model ships as ONNX only. Its manifest names the net (``build["net"]``: lite or full)
and the exporter kept the PyTorch parameter names on the ONNX initializers, so this engine
builds that net (``pipeline.style.nets``) and loads every parameter from the ONNX file, by
name, strictly: a missing, extra or misshapen tensor is a ModelFileError. The file is read once
and its bytes checked against the manifest's sha256 before any weight is used. The result runs
the same weights as the ONNX Runtime engine (tests/test_style_backends.py compares them).

CPU (fp32) or CUDA (fp32 or fp16); ``torch`` is the ``[torch]`` extra, imported on use.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from engines.base import BaseEngine
from engines.errors import BackendUnavailableError, ConfigError, ModelFileError
from engines.runtime.torchrt import import_torch
from engines.store import ModelStore

__all__ = ["TorchStyleEngine", "TorchStyleSettings", "load_state", "read_onnx_weights"]


@dataclass(frozen=True, slots=True)
class TorchStyleSettings:
    """Device, precision and CPU threads (0 keeps torch's default) of the torch style engine."""

    device: Literal["cpu", "cuda"] = "cpu"
    precision: Literal["fp32", "fp16"] = "fp32"
    threads: int = 0

    def __post_init__(self) -> None:
        if self.device not in ("cpu", "cuda") or self.precision not in ("fp32", "fp16"):
            raise ConfigError(
                f"torch device {self.device!r} / precision {self.precision!r}: expected "
                "cpu|cuda and fp32|fp16"
            )
        if self.precision == "fp16" and self.device != "cuda":
            raise ConfigError("torch fp16 needs device 'cuda'")


def read_onnx_weights(data: bytes, source: Path) -> dict[str, npt.NDArray[np.float32]]:
    """Every float initializer of an ONNX model, by name; ModelFileError if it does not parse."""
    import onnx  # noqa: PLC0415  (a core dependency; kept local like the torch import)
    from onnx import numpy_helper  # noqa: PLC0415

    try:
        model = onnx.load_from_string(data)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise ModelFileError(f"{source}: not an ONNX model: {exc}") from exc
    return {
        item.name: np.asarray(numpy_helper.to_array(item), dtype=np.float32)
        for item in model.graph.initializer
        if item.data_type == onnx.TensorProto.FLOAT
    }


class TorchStyleEngine(BaseEngine):
    """A stored style model run by PyTorch; ``backend`` is ``torch-<device>-<precision>``.

    Input and output are those of the ONNX model: float32 (1, 3, H, W) BGR 0-255.
    """

    def __init__(self, model_path: Path, store: ModelStore, settings: TorchStyleSettings) -> None:
        stored = store.open(model_path)
        if stored.manifest.format != "onnx":
            raise ModelFileError(f"{model_path}: is {stored.manifest.format}, not an ONNX model")
        weights = read_onnx_weights(stored.read_verified(), model_path)
        torch = import_torch()
        if settings.device == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailableError("torch reports no CUDA device; use device 'cpu'")
        from pipeline.style.nets import NET_SPECS, StyleTransformer  # noqa: PLC0415  (torch)

        kind = stored.manifest.build.get("net", "")
        if kind not in NET_SPECS:
            raise ModelFileError(
                f"{model_path}: manifest build['net'] is {kind!r}, need one of "
                f"{', '.join(NET_SPECS)} to rebuild the PyTorch net"
            )
        module = StyleTransformer(NET_SPECS[kind])
        load_state(module, weights, model_path, torch)
        if settings.threads:
            torch.set_num_threads(settings.threads)
        self._torch = torch
        self._device = torch.device(settings.device)
        self._dtype = torch.float16 if settings.precision == "fp16" else torch.float32
        self._module = module.to(self._device, self._dtype).eval()
        super().__init__(
            backend=f"torch-{settings.device}-{settings.precision}",
            model_id=stored.manifest.model_id,
            inputs=stored.manifest.input_specs(),
            outputs=stored.manifest.output_specs(),
        )

    def _run(self, batch: Mapping[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
        (input_name,) = self.inputs
        (output_name,) = self.outputs
        with self._torch.inference_mode():
            frames = self._torch.from_numpy(batch[input_name]).to(self._device, self._dtype)
            result = self._module(frames).float().cpu().numpy()
        return {output_name: np.asarray(result, dtype=np.float32)}

    def _close(self) -> None:
        del self._module


def load_state(
    module: Any, weights: Mapping[str, npt.NDArray[np.float32]], source: Path, torch: Any
) -> None:
    """Copy ``weights`` into ``module`` (a ``StyleTransformer``) by parameter name; every name
    and shape must match, else ModelFileError naming the file and the net's kind."""
    state = module.state_dict()
    missing = sorted(set(state) - set(weights))
    extra = sorted(set(weights) - set(state))
    wrong = sorted(
        name
        for name in set(state) & set(weights)
        if tuple(state[name].shape) != weights[name].shape
    )
    if missing or wrong:
        raise ModelFileError(
            f"{source}: its weights do not fit the PyTorch {module.spec.kind} net: "
            f"missing {missing[:3]}, misshapen {wrong[:3]} "
            f"({len(missing)} missing, {len(wrong)} misshapen)"
        )
    if extra:  # constants the exporter folded (none in the shipped models) would land here
        raise ModelFileError(f"{source}: initializers the PyTorch net lacks: {extra[:3]}")
    module.load_state_dict({name: torch.from_numpy(weights[name].copy()) for name in state})
