"""The Engine protocol every backend implements, the checks they share, and model manifests.

An engine object exists only once its model is loaded and checked: it can ``infer`` or it does
not exist. ``BaseEngine.infer`` validates names, dtypes and shapes against the specs, then calls
the backend's ``_run``; backends never repeat those checks.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Protocol, Self

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engines.errors import EngineStateError, InputSpecError, ManifestMismatchError, ModelFileError

__all__ = [
    "BaseEngine",
    "Engine",
    "ModelManifest",
    "Precision",
    "TensorSpec",
    "TensorSpecModel",
]

Precision = Literal["fp32", "fp16", "int8"]
ArtifactFormat = Literal["onnx", "tensorrt-plan", "torch-state"]


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """Name, dtype and shape of one engine input or output; ``None`` marks a dynamic axis."""

    name: str
    dtype: str
    shape: tuple[int | None, ...]

    def check(self, array: npt.NDArray[Any]) -> None:
        """Raise InputSpecError unless ``array`` has this spec's dtype and shape."""
        if not isinstance(array, np.ndarray):
            raise InputSpecError(
                f"input {self.name!r}: expected a numpy array, got {type(array).__name__}"
            )
        if array.dtype != np.dtype(self.dtype):
            raise InputSpecError(
                f"input {self.name!r}: expected dtype {self.dtype}, got {array.dtype}"
            )
        if len(array.shape) != len(self.shape) or any(
            want is not None and want != got
            for want, got in zip(self.shape, array.shape, strict=True)
        ):
            raise InputSpecError(
                f"input {self.name!r}: expected shape {self.shape_text()}, got {tuple(array.shape)}"
            )

    def shape_text(self) -> str:
        """The shape with ``N`` for dynamic axes, e.g. ``(N, 3, 150, 150)``."""
        return "(" + ", ".join("N" if dim is None else str(dim) for dim in self.shape) + ")"


class Engine(Protocol):
    """What the pipeline needs of a model runtime."""

    backend: str  # "onnxruntime-cpu", "tensorrt-fp16", ...: metric label and /healthz
    model_id: str
    inputs: Mapping[str, TensorSpec]
    outputs: Mapping[str, TensorSpec]

    def infer(self, batch: Mapping[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
        """Run one batch; keys are input names, values arrays matching the specs."""
        ...

    def close(self) -> None:
        """Release the runtime's resources; later ``infer`` calls raise EngineStateError."""
        ...


class BaseEngine(ABC):
    """Template for backends: public ``infer`` checks, the backend's ``_run`` computes."""

    backend: str
    model_id: str
    inputs: Mapping[str, TensorSpec]
    outputs: Mapping[str, TensorSpec]

    def __init__(
        self,
        *,
        backend: str,
        model_id: str,
        inputs: Mapping[str, TensorSpec],
        outputs: Mapping[str, TensorSpec],
    ) -> None:
        self.backend = backend
        self.model_id = model_id
        self.inputs = dict(inputs)
        self.outputs = dict(outputs)
        self._closed = False

    def infer(self, batch: Mapping[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
        """Check ``batch`` against the input specs, run it, and return outputs by name."""
        self._require_open()
        if set(batch) != set(self.inputs):
            raise InputSpecError(f"expected inputs {sorted(self.inputs)}, got {sorted(batch)}")
        sizes = set()
        for name, spec in self.inputs.items():
            spec.check(batch[name])
            sizes.add(batch[name].shape[0] if batch[name].ndim else 0)
        if len(sizes) > 1:
            raise InputSpecError(f"inputs disagree on batch size: {sorted(sizes)}")
        if 0 in sizes:
            raise InputSpecError("empty batch: at least one item is needed")
        return self._run(batch)

    @abstractmethod
    def _run(self, batch: Mapping[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
        """Backend inference on an already checked batch."""

    def _require_open(self) -> None:
        """EngineStateError once ``close`` was called (a backend that frees under a lock checks
        again under it)."""
        if self._closed:
            raise EngineStateError(f"{self.backend} engine for {self.model_id} is closed")

    def close(self) -> None:
        """Release resources once; safe to call again."""
        if not self._closed:
            self._closed = True
            self._close()

    def _close(self) -> None:  # noqa: B027  (optional hook: most backends hold nothing)
        """Backend cleanup; the default holds nothing to release."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorSpecModel(_Strict):
    """A ``TensorSpec`` as stored in a manifest."""

    name: str
    dtype: str
    shape: tuple[int | None, ...]

    @classmethod
    def from_spec(cls, spec: TensorSpec) -> TensorSpecModel:
        """Copy a runtime spec into its stored form."""
        return cls(name=spec.name, dtype=spec.dtype, shape=spec.shape)

    def to_spec(self) -> TensorSpec:
        """The runtime spec this record describes."""
        return TensorSpec(self.name, self.dtype, self.shape)


class ModelManifest(_Strict):
    """What a stored model or compiled plan is, written beside it as ``<file>.manifest.json``.

    An artifact is used only when its manifest matches what the caller expects (source weights,
    precision, library versions, GPU); see ``require_match``.
    """

    model_id: str = Field(description="identity of the embedding space; embeddings carry it")
    format: ArtifactFormat
    precision: Precision
    source_sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of source weights")
    artifact_sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of this file")
    inputs: tuple[TensorSpecModel, ...]
    outputs: tuple[TensorSpecModel, ...]
    library_versions: dict[str, str] = Field(default_factory=dict)
    device: str | None = Field(default=None, description="GPU name and compute capability")
    build: dict[str, str] = Field(default_factory=dict, description="builder settings")

    def input_specs(self) -> dict[str, TensorSpec]:
        """Input specs by name."""
        return {item.name: item.to_spec() for item in self.inputs}

    def output_specs(self) -> dict[str, TensorSpec]:
        """Output specs by name."""
        return {item.name: item.to_spec() for item in self.outputs}

    @classmethod
    def read(cls, path: Path) -> ModelManifest:
        """Load and validate a manifest file; ModelFileError names the file and the fault."""
        try:
            return cls.model_validate(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError as exc:
            raise ModelFileError(f"{path}: manifest not found") from exc
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelFileError(f"{path}: manifest is unreadable: {exc}") from exc
        except ValidationError as exc:
            raise ModelFileError(
                f"{path}: manifest is invalid: {exc.errors()[0]['msg']} at {exc.errors()[0]['loc']}"
            ) from exc

    def to_json(self) -> str:
        """Stable, human-readable JSON."""
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"

    def require_match(self, *, artifact: Path, **expected: object) -> None:
        """Raise ManifestMismatchError listing every field that differs from ``expected``.

        ``library_versions`` and ``build`` compare only the keys given.
        """
        differences = []
        for field, want in expected.items():
            have = getattr(self, field)
            if isinstance(want, Mapping) and isinstance(have, Mapping):
                for key, value in want.items():
                    if have.get(key) != value:
                        differences.append(f"{field}[{key}] is {have.get(key)!r}, need {value!r}")
            elif have != want:
                differences.append(f"{field} is {have!r}, need {want!r}")
        if differences:
            raise ManifestMismatchError(
                f"{artifact}: "
                + "; ".join(differences)
                + " (rebuild it with `facestream engines build`)"
            )
