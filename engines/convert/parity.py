"""Parity of an engine with dlib's own encoder on real face chips (dlib is the oracle).

dlib is needed only here, in tests and in benchmarks (``facestream[dev]``): chips are cut with
dlib's HOG detector, 5-point predictor and ``get_face_chip``, so both sides see the same pixels.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from engines.base import Engine
from engines.convert.dlib_resnet import CHIP_SIZE_PX
from engines.errors import ModelFileError
from engines.runtime.dlibrt import import_dlib

__all__ = [
    "DlibOracle",
    "ParityReport",
    "astronaut_rgb",
    "compare_with_dlib",
    "encode_chips",
    "image_files",
    "read_rgb",
]

_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


@dataclass(frozen=True, slots=True)
class ParityReport:
    """Largest differences between an engine's descriptors and dlib's, over ``n_faces`` chips."""

    n_faces: int
    max_abs_diff: float
    max_euclidean: float
    backend: str

    def as_dict(self) -> dict[str, float | int | str]:
        """JSON-ready form."""
        return {
            "n_faces": self.n_faces,
            "max_abs_diff": self.max_abs_diff,
            "max_euclidean": self.max_euclidean,
            "backend": self.backend,
        }


class DlibOracle:
    """dlib's detector, 5-point aligner and encoder, loaded from the installed model wheel."""

    def __init__(self, *, encoder_path: Path, predictor_path: Path) -> None:
        dlib = import_dlib("parity needs dlib")
        self._dlib = dlib
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(predictor_path))
        self._encoder = dlib.face_recognition_model_v1(str(encoder_path))

    def chips(
        self, image: npt.NDArray[np.uint8], *, upsample: int = 1
    ) -> list[npt.NDArray[np.uint8]]:
        """Every face in ``image`` (RGB uint8 HxWx3) as a 150x150 RGB chip."""
        return [
            np.asarray(
                self._dlib.get_face_chip(image, self._predictor(image, box), CHIP_SIZE_PX, 0.25),
                dtype=np.uint8,
            )
            for box in self._detector(image, upsample)
        ]

    def descriptors(self, chips: Sequence[npt.NDArray[np.uint8]]) -> npt.NDArray[np.float64]:
        """dlib's descriptors for aligned chips, float64 (N, 128)."""
        return np.array([np.asarray(self._encoder.compute_face_descriptor(chip)) for chip in chips])


def read_rgb(path: Path) -> npt.NDArray[np.uint8]:
    """An image file as RGB uint8 HxWx3, EXIF orientation applied, alpha dropped."""
    from PIL import Image, ImageOps, UnidentifiedImageError  # noqa: PLC0415

    try:
        with Image.open(path) as image:
            return np.asarray(ImageOps.exif_transpose(image).convert("RGB"), dtype=np.uint8)
    except (OSError, UnidentifiedImageError) as exc:
        raise ModelFileError(f"{path}: not a readable image: {exc}") from exc


def astronaut_rgb() -> npt.NDArray[np.uint8]:
    """scikit-image's astronaut photo (NASA, public domain), RGB uint8 512x512x3."""
    from skimage import data  # noqa: PLC0415  (dev extra: a face every machine has)

    return np.asarray(data.astronaut(), dtype=np.uint8)  # type: ignore[no-untyped-call]


def image_files(paths: Iterable[Path]) -> list[Path]:
    """Image files among ``paths``; folders are searched recursively, sorted by name."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.suffix.lower() in _IMAGE_SUFFIXES))
        elif path.suffix.lower() in _IMAGE_SUFFIXES:
            found.append(path)
    return found


def encode_chips(
    engine: Engine, chips: Sequence[npt.NDArray[np.uint8]], *, batch_size: int
) -> npt.NDArray[np.float32]:
    """Run RGB uint8 150x150x3 chips through ``engine`` in batches; float32 (N, 128)."""
    (input_name,) = engine.inputs
    (output_name,) = engine.outputs
    results = []
    for start in range(0, len(chips), batch_size):
        batch = np.stack(chips[start : start + batch_size]).astype(np.float32).transpose(0, 3, 1, 2)
        results.append(engine.infer({input_name: np.ascontiguousarray(batch)})[output_name])
    return np.concatenate(results).astype(np.float32)


def compare_with_dlib(
    engine: Engine,
    oracle: DlibOracle,
    chips: Sequence[npt.NDArray[np.uint8]],
    *,
    batch_size: int = 16,
) -> ParityReport:
    """Encode ``chips`` with ``engine`` and with dlib and report the largest differences."""
    if not chips:
        raise ModelFileError("parity needs at least one face chip; no face was found")
    ours = encode_chips(engine, chips, batch_size=batch_size).astype(np.float64)
    reference = oracle.descriptors(chips)
    return ParityReport(
        n_faces=len(chips),
        max_abs_diff=float(np.abs(ours - reference).max()),
        max_euclidean=float(np.linalg.norm(ours - reference, axis=1).max()),
        backend=engine.backend,
    )
