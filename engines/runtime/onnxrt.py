"""ONNX Runtime backend: CPU by default, CUDA where onnxruntime-gpu is installed.

ONNX Runtime only *warns* when a requested execution provider is missing and then runs on the
CPU; ``OrtEngine`` checks ``session.get_providers()`` and raises instead, so the backend in use is
always the one that was asked for.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from engines.base import BaseEngine
from engines.errors import BackendUnavailableError, ConfigError, ModelFileError
from engines.store import ModelStore

if TYPE_CHECKING:
    import onnxruntime

__all__ = ["OrtEngine", "OrtSettings", "onnxruntime_version"]

_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


@dataclass(frozen=True, slots=True)
class OrtSettings:
    """How to run a model on ONNX Runtime.

    intra_op_threads: threads inside one operator (0 lets ONNX Runtime pick, one per core).
    allow_spinning: whether idle pool threads busy-wait for the next operator. Off by default:
    the service runs several engines (detector, encoder, liveness) and the capture on the same
    cores, and spinning threads take CPU from the ones doing work (docs/calibration.md,
    "Speed": on 2 loaded cores the int8 encoder ran 5.48 ms/face spinning, 3.04 not).
    """

    device: Literal["cpu", "cuda"] = "cpu"
    intra_op_threads: int = 0
    device_id: int = 0
    allow_spinning: bool = False

    def __post_init__(self) -> None:
        if self.device not in _PROVIDERS:
            raise ConfigError(
                f"onnxruntime device {self.device!r}: expected one of {sorted(_PROVIDERS)}"
            )
        if self.intra_op_threads < 0 or self.device_id < 0:
            raise ConfigError("onnxruntime intra_op_threads and device_id must be >= 0")


def _import_onnxruntime() -> Any:
    try:
        import onnxruntime  # noqa: PLC0415  (optional dependency, imported on use)
    except ImportError as exc:
        raise BackendUnavailableError(
            "onnxruntime is not installed: install facestream[cpu] (or facestream[gpu] for CUDA)"
        ) from exc
    return onnxruntime


def onnxruntime_version() -> str:
    """Installed ONNX Runtime version; BackendUnavailableError when it is missing."""
    return str(_import_onnxruntime().__version__)


class OrtEngine(BaseEngine):
    """A stored ONNX model in an ONNX Runtime session; ``backend`` is ``onnxruntime-<device>``."""

    def __init__(self, model_path: Path, store: ModelStore, settings: OrtSettings) -> None:
        stored = store.open(model_path)
        ort = _import_onnxruntime()
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = settings.intra_op_threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry(
            "session.intra_op.allow_spinning", "1" if settings.allow_spinning else "0"
        )
        options.log_severity_level = 3  # a missing provider is reported by our own check below
        provider = _PROVIDERS[settings.device]
        provider_options: dict[str, Any] = {}
        if settings.device == "cuda":
            provider_options = {"device_id": settings.device_id}
        if provider not in ort.get_available_providers():
            raise BackendUnavailableError(
                f"onnxruntime {ort.__version__} has no {provider} (available: "
                f"{', '.join(ort.get_available_providers())}); install facestream[gpu] for CUDA"
            )
        try:
            session: onnxruntime.InferenceSession = ort.InferenceSession(
                stored.read_verified(),  # the bytes checked, not the path (it may change)
                sess_options=options,
                providers=[(provider, provider_options)],
            )
        except Exception as exc:  # ORT raises its own untyped errors for bad models
            raise ModelFileError(f"{model_path}: onnxruntime cannot load it: {exc}") from exc
        if session.get_providers()[0] != provider:
            raise BackendUnavailableError(
                f"onnxruntime fell back to {session.get_providers()[0]} for {model_path} "
                f"although {provider} was requested"
            )
        self._session = session
        self._output_names = [item.name for item in stored.manifest.outputs]
        super().__init__(
            backend=f"onnxruntime-{settings.device}",
            model_id=stored.manifest.model_id,
            inputs=stored.manifest.input_specs(),
            outputs=stored.manifest.output_specs(),
        )

    def _run(self, batch: Mapping[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
        feeds = {name: np.ascontiguousarray(array) for name, array in batch.items()}
        results = self._session.run(self._output_names, feeds)
        return dict(zip(self._output_names, results, strict=True))

    def _close(self) -> None:
        del self._session
