"""The table of encoder backends, ``auto`` resolution, and building the encoder's ONNX file.

Backends come from the hand-written ``BACKENDS`` table below, never from a subclass scan. A
backend that fails to load raises; nothing here tries another one in its place. ``auto`` is
resolved once, at start, by what the machine has, and the choice is logged.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import onnx

from engines.base import Engine, ModelManifest, Precision, TensorSpecModel
from engines.convert.dlib_resnet import (
    CHIP_SIZE_PX,
    DESCRIPTOR_SIZE,
    INPUT_NAME,
    OUTPUT_NAME,
    convert_dlib_resnet,
)
from engines.errors import ConfigError
from engines.store import (
    ENCODER_NAME,
    ModelStore,
    StoredModel,
    default_encoder_source,
    encoder_model_id,
    sha256_file,
)

if TYPE_CHECKING:
    from engines.runtime.tensorrt.engine import TrtEngine

__all__ = [
    "BACKENDS",
    "EngineSettings",
    "build_encoder_onnx",
    "encoder_manifest",
    "encoder_onnx",
    "load_encoder",
    "load_or_build_encoder_plan",
    "resolve_backend",
]

_log = logging.getLogger(__name__)

BackendName = Literal["onnxruntime", "tensorrt", "torch"]


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """Which backend runs the encoder, and how.

    backend: a key of ``BACKENDS`` or ``auto``; device: ``cpu`` or ``cuda``;
    threads: CPU threads per engine (0: the library's default); batch sizes: faces per call.
    """

    backend: str = "onnxruntime"
    device: Literal["cpu", "cuda"] = "cpu"
    precision: Precision = "fp32"
    threads: int = 0
    min_batch: int = 1
    opt_batch: int = 16
    max_batch: int = 64
    source: Path | None = field(default=None)  # dlib .dat; None: the installed wheel's file
    adapter: Path | None = field(default=None)  # head from `facestream train adapter`

    def __post_init__(self) -> None:
        valid = [*BACKENDS, "auto"]
        if self.backend not in valid:
            raise ConfigError(f"unknown engine backend {self.backend!r}; valid: {', '.join(valid)}")
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise ConfigError(
                f"batch sizes must satisfy 1 <= min ({self.min_batch}) <= opt "
                f"({self.opt_batch}) <= max ({self.max_batch})"
            )
        if self.adapter is not None and (self.backend == "torch" or self.precision == "int8"):
            raise ConfigError(
                "an adapter runs appended to the fp32/fp16 ONNX encoder: use the onnxruntime "
                "or tensorrt backend, not torch or int8"
            )

    @property
    def source_path(self) -> Path:
        """The dlib weights the encoder is converted from."""
        return self.source if self.source is not None else default_encoder_source()


def encoder_manifest(model: onnx.ModelProto, data: bytes, *, source_sha256: str) -> ModelManifest:
    """Manifest of the converted encoder ONNX (fp32, dynamic batch)."""
    import hashlib  # noqa: PLC0415  (kept local: only this helper hashes bytes in memory)

    return ModelManifest(
        model_id=encoder_model_id(source_sha256),
        format="onnx",
        precision="fp32",
        source_sha256=source_sha256,
        artifact_sha256=hashlib.sha256(data).hexdigest(),
        inputs=(
            TensorSpecModel(
                name=INPUT_NAME, dtype="float32", shape=(None, 3, CHIP_SIZE_PX, CHIP_SIZE_PX)
            ),
        ),
        outputs=(
            TensorSpecModel(name=OUTPUT_NAME, dtype="float32", shape=(None, DESCRIPTOR_SIZE)),
        ),
        library_versions={"onnx": onnx.__version__, "opset": str(model.opset_import[0].version)},
        build={"converter": "engines.convert.dlib_resnet"},
    )


def build_encoder_onnx(
    store: ModelStore, *, source: Path | None = None, force: bool = False
) -> StoredModel:
    """Convert dlib's encoder into ``store`` unless an up-to-date copy is there already.

    An existing model is kept when its manifest names the same source sha256 and the file's
    hash matches; otherwise (or with ``force``) it is rebuilt atomically.
    """
    source = source if source is not None else default_encoder_source()
    source_sha256 = sha256_file(source)
    path = store.model_path(ENCODER_NAME)
    current = None if force else store.up_to_date(path, source_sha256=source_sha256)
    if current is not None:
        return current
    model = convert_dlib_resnet(source, model_id=encoder_model_id(source_sha256))
    data = model.SerializeToString()
    stored = store.save(path, data, encoder_manifest(model, data, source_sha256=source_sha256))
    _log.info("built %s from %s (model id %s)", path, source, stored.manifest.model_id)
    return stored


def encoder_onnx(store: ModelStore, settings: EngineSettings) -> StoredModel:
    """The fp32 encoder ONNX the settings describe: dlib's, with the adapter head if any."""
    encoder = build_encoder_onnx(store, source=settings.source)
    if settings.adapter is None:
        return encoder
    from engines.models.adapter import build_adapted_encoder  # noqa: PLC0415

    return build_adapted_encoder(store, encoder, settings.adapter)


def _load_onnxruntime(store: ModelStore, settings: EngineSettings) -> Engine:
    from engines.runtime.onnxrt import OrtEngine, OrtSettings  # noqa: PLC0415

    if settings.precision == "fp16":
        raise ConfigError("onnxruntime runs the encoder in fp32 or int8, not fp16")
    path = encoder_onnx(store, settings).path
    if settings.precision == "int8":
        path = _int8_encoder_path(store, settings)
    return OrtEngine(
        path, store, OrtSettings(device=settings.device, intra_op_threads=settings.threads)
    )


def _int8_encoder_path(store: ModelStore, settings: EngineSettings) -> Path:
    """The stored INT8 encoder, checked to come from the configured dlib weights."""
    from engines.quantize import ENCODER_INT8_NAME  # noqa: PLC0415

    path = store.model_path(ENCODER_INT8_NAME)
    if not path.exists():
        raise ConfigError(
            f"no int8 encoder at {path}: build one from real face photos with "
            "`facestream engines build --precision int8 --calib DIR`"
        )
    stored = store.open(path)
    stored.manifest.require_match(
        artifact=path, precision="int8", source_sha256=sha256_file(settings.source_path)
    )
    return path


def _load_torch(store: ModelStore, settings: EngineSettings) -> Engine:
    from engines.runtime.torchrt import TorchEngine, TorchSettings  # noqa: PLC0415

    if settings.precision == "int8":
        raise ConfigError("torch backend runs fp32 or fp16, not int8")
    path = build_encoder_onnx(store, source=settings.source).path
    torch_settings = TorchSettings(
        device=settings.device, precision=settings.precision, threads=settings.threads
    )
    return TorchEngine(path, store, source=settings.source_path, settings=torch_settings)


def _load_tensorrt(store: ModelStore, settings: EngineSettings) -> Engine:
    onnx_path = encoder_onnx(store, settings).path
    return load_or_build_encoder_plan(onnx_path, store, settings)


def load_or_build_encoder_plan(
    onnx_path: Path, store: ModelStore, settings: EngineSettings
) -> TrtEngine:
    """The encoder as a TrtEngine on GPU 0, building its plan first if none fits
    (``load_or_build_plan`` with the precision and batch sizes of ``settings``).

    ``settings.device`` must be ``cuda``: ConfigError otherwise, before anything is loaded.
    """
    from engines.runtime.tensorrt.engine import load_or_build_plan  # noqa: PLC0415
    from engines.runtime.tensorrt.profile import TrtBuildSettings  # noqa: PLC0415

    if settings.device != "cuda":
        raise ConfigError(f"the tensorrt backend runs on device 'cuda', not {settings.device!r}")
    build = TrtBuildSettings(
        precision=settings.precision,
        min_batch=settings.min_batch,
        opt_batch=settings.opt_batch,
        max_batch=settings.max_batch,
    )
    return load_or_build_plan(onnx_path, store, build)


BACKENDS: dict[str, Callable[[ModelStore, EngineSettings], Engine]] = {
    "onnxruntime": _load_onnxruntime,
    "tensorrt": _load_tensorrt,
    "torch": _load_torch,
}


def _has_tensorrt() -> bool:
    if importlib.util.find_spec("tensorrt") is None:
        return False
    import tensorrt  # noqa: PLC0415

    return hasattr(tensorrt, "Builder")  # an empty stub package is not TensorRT


def resolve_backend(settings: EngineSettings) -> EngineSettings:
    """Turn ``auto`` into a concrete backend by what this machine has; log the choice.

    tensorrt when TensorRT is importable and the device is cuda, otherwise onnxruntime.
    """
    if settings.backend != "auto":
        return settings
    chosen = "tensorrt" if settings.device == "cuda" and _has_tensorrt() else "onnxruntime"
    _log.info("engine backend auto resolved to %s on %s", chosen, settings.device)
    return dataclasses.replace(settings, backend=chosen)


def load_encoder(store: ModelStore, settings: EngineSettings) -> Engine:
    """Build (if needed) and load the face encoder with the configured backend."""
    resolved = resolve_backend(settings)
    engine = BACKENDS[resolved.backend](store, resolved)
    _log.info("face encoder loaded: backend %s, model %s", engine.backend, engine.model_id)
    return engine
