"""Loading style models: the installed catalogue, and an engine for one model on one backend.

A style model is an ONNX file with a manifest (``engines.store``) under ``<store>/models``;
the project ships some in ``pipeline/style/models``. Loading checks the file's sha256 against
its manifest first, so a truncated or altered model is a ModelFileError, never a crash later.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from engines.base import Engine
from engines.errors import ConfigError, InputSpecError
from engines.onnxrt import OrtEngine, OrtSettings
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


@dataclass(frozen=True, slots=True)
class StyleEngineSettings:
    """Backend for style networks. Only ONNX Runtime (CPU or CUDA) runs them today.

    threads: ONNX Runtime intra-op threads (0: one per core).
    """

    backend: Literal["onnxruntime"] = "onnxruntime"
    device: Literal["cpu", "cuda"] = "cpu"
    threads: int = 0

    def __post_init__(self) -> None:
        if self.backend != "onnxruntime":
            raise ConfigError(f"style backend {self.backend!r}: only 'onnxruntime' is available")


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
        if len(shape) != 4 or shape[0] != 1 or shape[1] != 3 or None in shape:
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
        return np.ascontiguousarray(np.clip(result[0].transpose(1, 2, 0), 0, 255).astype(np.uint8))

    def close(self) -> None:
        """Release the engine."""
        self.engine.close()


def load_style_network(path: Path, settings: StyleEngineSettings) -> StyleNetwork:
    """Check ``path`` against its manifest and load it on the configured backend.

    Raises ModelFileError (missing, corrupt, hash mismatch) or BackendUnavailableError.
    """
    store = ModelStore(path.parent.parent)
    engine = OrtEngine(
        path, store, OrtSettings(device=settings.device, intra_op_threads=settings.threads)
    )
    _log.info("style model %s loaded on %s", engine.model_id, engine.backend)
    return StyleNetwork(path.stem, engine)
