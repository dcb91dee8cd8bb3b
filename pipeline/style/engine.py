"""Loading style models: the installed catalogue, and an engine for one model on one backend.

A style model is an ONNX file with a manifest (``engines.store``) under ``<store>/models``;
the project ships some in ``pipeline/style/models``. Loading checks the file's sha256 against
its manifest first, so a truncated or altered model is a ModelFileError, never a crash later.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from engines.base import Engine
from engines.errors import ConfigError, InputSpecError
from engines.runtime.onnxrt import OrtEngine, OrtSettings
from engines.store import ModelStore
from pipeline.style.errors import UnknownStyleError

__all__ = [
    "SHIPPED_STORE",
    "StyleCatalog",
    "StyleEngineSettings",
    "StyleNetwork",
    "load_style_network",
]

_log = logging.getLogger(__name__)
SHIPPED_STORE = Path(__file__).resolve().parent  # pipeline/style/models/<name>.onnx


StyleBackend = Literal["onnxruntime", "torch", "tensorrt"]


@dataclass(frozen=True, slots=True)
class StyleEngineSettings:
    """Backend for style networks, chosen explicitly; a backend that cannot run raises, nothing
    takes its place.

    backend: onnxruntime (CPU, or CUDA with onnxruntime-gpu), torch (the weights of the stored
    ONNX file in the PyTorch net; CPU or CUDA) or tensorrt (CUDA; plans are compiled into
    ``plan_dir``). precision: fp16 only with torch or tensorrt on cuda. threads: CPU threads of
    onnxruntime or torch (0: the library's default).
    """

    backend: StyleBackend = "onnxruntime"
    device: Literal["cpu", "cuda"] = "cpu"
    threads: int = 0
    precision: Literal["fp32", "fp16"] = "fp32"
    plan_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.backend not in _LOADERS:
            raise ConfigError(
                f"style backend {self.backend!r}: expected one of {', '.join(_LOADERS)}"
            )
        if self.device not in ("cpu", "cuda") or self.precision not in ("fp32", "fp16"):
            raise ConfigError(
                f"style device {self.device!r} / precision {self.precision!r}: expected "
                "cpu|cuda and fp32|fp16"
            )
        if self.precision == "fp16" and (self.backend == "onnxruntime" or self.device != "cuda"):
            raise ConfigError("style precision fp16 needs backend torch or tensorrt on cuda")
        if self.backend == "tensorrt" and (self.device != "cuda" or self.plan_dir is None):
            raise ConfigError("style backend tensorrt needs device 'cuda' and a plan_dir")
        if self.threads < 0:
            raise ConfigError(f"style threads must be >= 0, got {self.threads}")


class StyleCatalog:
    """The style models in one store, by name (``<store>/models/<name>.onnx``)."""

    def __init__(self, store_dir: Path = SHIPPED_STORE) -> None:
        self.store = ModelStore(store_dir)

    def names(self) -> list[str]:
        """Installed style names, sorted."""
        folder = self.store.models_dir
        return sorted(path.stem for path in folder.glob("*.onnx")) if folder.is_dir() else []

    def path(self, name: str) -> Path:
        """The model file of ``name``; UnknownStyleError lists the installed names."""
        path = self.store.model_path(name)
        if path.stem != name or not path.is_file():
            raise UnknownStyleError(
                f"no style model {name!r} in {self.store.models_dir}; installed: "
                f"{', '.join(self.names()) or 'none'}"
            )
        return path


class StyleNetwork:
    """One loaded style model: BGR uint8 frames of its fixed size in, stylized BGR uint8 out."""

    def __init__(self, name: str, engine: Engine) -> None:
        (self._input_name,) = engine.inputs
        (self._output_name,) = engine.outputs
        shape = engine.inputs[self._input_name].shape
        # batch 1, or a batch axis left open (the TensorRT copy); H and W are fixed
        if len(shape) != 4 or shape[0] not in (1, None) or shape[1] != 3 or None in shape[1:]:
            raise InputSpecError(
                f"style model {engine.model_id}: expected a fixed input (1, 3, H, W), got {shape}"
            )
        self.name = name
        self.engine = engine
        self.height_px = int(shape[2] or 0)
        self.width_px = int(shape[3] or 0)

    @property
    def model_id(self) -> str:
        """The model's id from its manifest."""
        return self.engine.model_id

    def stylize(self, image: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
        """BGR uint8 (height_px, width_px, 3) -> stylized BGR uint8 of the same shape."""
        if image.shape != (self.height_px, self.width_px, 3) or image.dtype != np.uint8:
            raise InputSpecError(
                f"style model {self.model_id}: expected uint8 ({self.height_px}, "
                f"{self.width_px}, 3), got {image.dtype} {image.shape}"
            )
        batch = image.transpose(2, 0, 1)[None].astype(np.float32)
        result = self.engine.infer({self._input_name: batch})[self._output_name]
        # rounded, not truncated: truncation darkens every pixel by half a level on average
        levels = np.rint(np.clip(result[0].transpose(1, 2, 0), 0, 255))
        return np.ascontiguousarray(levels.astype(np.uint8))

    def close(self) -> None:
        """Release the engine."""
        self.engine.close()


def _load_onnxruntime(path: Path, settings: StyleEngineSettings) -> Engine:
    return OrtEngine(
        path,
        ModelStore(path.parent.parent),
        OrtSettings(device=settings.device, intra_op_threads=settings.threads),
    )


def _load_torch(path: Path, settings: StyleEngineSettings) -> Engine:
    from pipeline.style.torch_engine import TorchStyleEngine, TorchStyleSettings  # noqa: PLC0415

    torch_settings = TorchStyleSettings(
        device=settings.device, precision=settings.precision, threads=settings.threads
    )
    return TorchStyleEngine(path, ModelStore(path.parent.parent), torch_settings)


def _load_tensorrt(path: Path, settings: StyleEngineSettings) -> Engine:
    from engines.models.style import load_style_plan  # noqa: PLC0415  (TensorRT on use)

    if settings.plan_dir is None:  # checked by the settings; kept for the type checker
        raise ConfigError("style backend tensorrt needs a plan_dir")
    return load_style_plan(path, ModelStore(settings.plan_dir), precision=settings.precision)


_LOADERS: dict[str, Callable[[Path, StyleEngineSettings], Engine]] = {
    "onnxruntime": _load_onnxruntime,
    "torch": _load_torch,
    "tensorrt": _load_tensorrt,
}


def load_style_network(path: Path, settings: StyleEngineSettings) -> StyleNetwork:
    """Check ``path`` against its manifest and load it on the configured backend (from the
    ``_LOADERS`` table: no other backend is tried when this one fails).

    Raises ModelFileError (missing, corrupt, hash mismatch), BackendUnavailableError (the
    backend's library or device is missing) or ConfigError.
    """
    engine = _LOADERS[settings.backend](path, settings)
    _log.info("style model %s loaded on %s", engine.model_id, engine.backend)
    return StyleNetwork(path.stem, engine)
