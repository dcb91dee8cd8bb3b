"""The passive anti-spoofing CNN (MiniFASNet ensemble): building its ONNX into a ModelStore and
loading it on an explicit backend.

Like the detectors (``engines.models.detector``), the model is converted by our own converter
(``engines.convert.minifasnet``) from the MiniFASNet weights in ``../shared/models/minifasnet``
(Apache-2.0, Minivision), written atomically with a manifest recording the sources' sha256, and
rebuilt only when a source changes. The licence text and the attribution are written beside the
converted model (``models/minifasnet.LICENSE``, ``models/minifasnet.NOTICE``)::

    python -c "from pathlib import Path; from engines.models.antispoof import build_liveness_onnx; \
        from engines.store import ModelStore; build_liveness_onnx(ModelStore(Path('data')))"

The weights are not on PyPI, so the conversion ships inside the package (``engines.bundled``)
and ``build_liveness_onnx`` installs it from there; ``convert_liveness_onnx`` converts again from
the .pth files (``default_minifasnet_dir``: ../shared/models/minifasnet beside a checkout).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import onnx

from engines.base import Engine, ModelManifest, TensorSpecModel
from engines.bundled import install_bundled
from engines.convert.minifasnet import (
    CROP_SIZE_PX,
    INPUT_SCALES,
    MINIFASNET_FILES,
    ONNX_OPSET,
    OUTPUT_NAME,
    REAL_CLASS,
)
from engines.errors import ModelFileError
from engines.models.settings import NetworkEngineSettings
from engines.runtime.onnxrt import OrtEngine, OrtSettings
from engines.runtime.tensorrt.profile import TrtBuildSettings
from engines.store import ModelStore, StoredModel, atomic_write, sha256_file

__all__ = [
    "CROP_SIZE_PX",
    "INPUT_SCALES",
    "LIVENESS_BACKENDS",
    "LIVENESS_MODEL_NAME",
    "OUTPUT_NAME",
    "REAL_CLASS",
    "LivenessEngineSettings",
    "build_liveness_onnx",
    "convert_liveness_onnx",
    "default_minifasnet_dir",
    "liveness_model_id",
    "load_liveness_engine",
]

_log = logging.getLogger(__name__)

LIVENESS_MODEL_NAME = "minifasnet_ensemble"
ATTRIBUTION = "Silent-Face-Anti-Spoofing, Copyright 2020 Minivision, Apache License 2.0"
_LICENCE_FILE = "LICENSE"
_MAX_BATCH = 16  # faces scored in one call; a TensorRT plan is built for 1..16


def default_minifasnet_dir() -> Path:
    """``../shared/models/minifasnet`` next to the repository this package runs from."""
    return Path(__file__).resolve().parents[3] / "shared" / "models" / "minifasnet"


def _sources_sha256(digests: list[str]) -> str:
    """One digest for the ensemble: sha256 over the two files' hex digests, in input order."""
    return hashlib.sha256("".join(digests).encode()).hexdigest()


def liveness_model_id(source_sha256: str) -> str:
    """Model id of the ensemble converted from sources with this combined sha256."""
    return f"{LIVENESS_MODEL_NAME}-{source_sha256[:12]}"


def _spec(value: onnx.ValueInfoProto) -> TensorSpecModel:
    dims = value.type.tensor_type.shape.dim
    shape = tuple(int(dim.dim_value) if dim.HasField("dim_value") else None for dim in dims)
    return TensorSpecModel(name=value.name, dtype="float32", shape=shape)


def _checked_sources(source_dir: Path) -> list[str]:
    """sha256 of each expected file; ModelFileError when one is missing or is another file."""
    digests = []
    for item in MINIFASNET_FILES:
        path = source_dir / item.file_name
        if not path.is_file():
            raise ModelFileError(
                f"{path}: MiniFASNet weights not found (expected {item.file_name} in "
                f"{source_dir}; see its PROVENANCE.md)"
            )
        digest = sha256_file(path)
        if digest != item.sha256:
            raise ModelFileError(f"{path}: sha256 is {digest}, the released file has {item.sha256}")
        digests.append(digest)
    return digests


def build_liveness_onnx(
    store: ModelStore, *, source_dir: Path | None = None, force: bool = False
) -> StoredModel:
    """The MiniFASNet ensemble in ``store``: the shipped conversion (``engines.bundled``), or,
    with ``source_dir``, our converter's output from the .pth files there."""
    if source_dir is None:
        return install_bundled(store, LIVENESS_MODEL_NAME, force=force)
    return convert_liveness_onnx(store, source_dir=source_dir, force=force)


def convert_liveness_onnx(
    store: ModelStore, *, source_dir: Path, force: bool = False
) -> StoredModel:
    """Convert the MiniFASNet ensemble into ``store`` unless an up-to-date copy is there.

    ``source_dir`` holds the two released .pth files (sha256-pinned) and their LICENSE
    (``default_minifasnet_dir()`` in a checkout). Needs torch (facestream[torch]).
    """
    digests = _checked_sources(source_dir)
    source_sha256 = _sources_sha256(digests)
    path = store.model_path(LIVENESS_MODEL_NAME)
    current = None if force else store.up_to_date(path, source_sha256=source_sha256)
    if current is not None:
        return current
    import torch  # noqa: PLC0415  (only for its version in the manifest)

    from engines.convert.minifasnet import convert_minifasnet_ensemble  # noqa: PLC0415  (torch)

    model = convert_minifasnet_ensemble(source_dir)
    data = model.SerializeToString()
    manifest = ModelManifest(
        model_id=liveness_model_id(source_sha256),
        format="onnx",
        precision="fp32",
        source_sha256=source_sha256,
        artifact_sha256=hashlib.sha256(data).hexdigest(),
        inputs=tuple(_spec(value) for value in model.graph.input),
        outputs=tuple(_spec(value) for value in model.graph.output),
        library_versions={
            "onnx": onnx.__version__,
            "opset": str(ONNX_OPSET),
            "torch": str(torch.__version__),
        },
        build={
            "converter": "engines.convert.minifasnet",
            "sources": ", ".join(
                f"{item.file_name}={digest}"
                for item, digest in zip(MINIFASNET_FILES, digests, strict=True)
            ),
            "weights_licence": "Apache-2.0",
            "attribution": ATTRIBUTION,
        },
    )
    licence = source_dir / _LICENCE_FILE
    if licence.is_file():  # the Apache licence travels with every copy of the weights
        atomic_write(path.with_name("minifasnet.LICENSE"), licence.read_bytes())
    atomic_write(path.with_name("minifasnet.NOTICE"), (ATTRIBUTION + "\n").encode())
    stored = store.save(path, data, manifest)
    _log.info("built %s from %s (model id %s)", path, source_dir, manifest.model_id)
    return stored


@dataclass(frozen=True, slots=True)
class LivenessEngineSettings(NetworkEngineSettings):
    """Which backend runs the anti-spoofing CNN (see ``NetworkEngineSettings``); one CPU
    thread by default: the CNN runs beside the detector and encoder on every door's frames."""

    role: ClassVar[str] = "liveness"

    threads: int = 1


def _load_onnxruntime(path: Path, store: ModelStore, settings: LivenessEngineSettings) -> Engine:
    ort_settings = OrtSettings(
        device=settings.device, intra_op_threads=settings.threads, device_id=settings.device_index
    )
    return OrtEngine(path, store, ort_settings)


def _load_tensorrt(path: Path, store: ModelStore, settings: LivenessEngineSettings) -> Engine:
    from engines.runtime.tensorrt.engine import load_or_build_plan  # noqa: PLC0415  (on use)

    build = TrtBuildSettings(
        precision=settings.precision, min_batch=1, opt_batch=1, max_batch=_MAX_BATCH
    )
    return load_or_build_plan(path, store, build, device_index=settings.device_index)


LIVENESS_BACKENDS: dict[str, Callable[[Path, ModelStore, LivenessEngineSettings], Engine]] = {
    "onnxruntime": _load_onnxruntime,
    "tensorrt": _load_tensorrt,
}
"""Liveness CNN backends by name: each loads the stored ensemble ONNX as an ``Engine``."""


def load_liveness_engine(
    store: ModelStore,
    settings: LivenessEngineSettings | None = None,
    *,
    source_dir: Path | None = None,
) -> Engine:
    """Build (if needed) and load the MiniFASNet ensemble on the backend ``settings`` names.

    The engine's inputs are named by ``INPUT_SCALES`` (float32 (N, 3, 80, 80) BGR 0..255 crops
    of the face box enlarged by that scale); its output ``probabilities`` is float32 (N, 3),
    class ``REAL_CLASS`` meaning a real face. A backend that cannot load raises; nothing here
    tries another one.
    """
    resolved = settings if settings is not None else LivenessEngineSettings()
    stored = build_liveness_onnx(store, source_dir=source_dir)
    engine = LIVENESS_BACKENDS[resolved.backend](stored.path, store, resolved)
    expected = dict.fromkeys(INPUT_SCALES, (None, 3, CROP_SIZE_PX, CROP_SIZE_PX))
    found = {name: spec.shape for name, spec in engine.inputs.items()}
    if found != expected or OUTPUT_NAME not in engine.outputs:
        engine.close()
        raise ModelFileError(f"{stored.path}: inputs {found}, expected {expected}")
    _log.info("liveness CNN loaded: backend %s, model %s", engine.backend, engine.model_id)
    return engine
