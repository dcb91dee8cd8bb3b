"""Batch profiles of TensorRT plans and how a batch is cut to fit one (plain Python).

A plan has one optimization profile over the batch axis: ``min_batch``..``max_batch`` rows per
engine call, with kernels tuned for ``opt_batch``. At run time a batch is cut into chunks of at
most ``max_batch`` rows and each chunk is zero-padded up to the next bucket (``min_batch``,
``opt_batch``, ``max_batch`` and the powers of two between), so the engine sees few distinct
shapes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import numpy.typing as npt

from engines.base import ModelManifest, Precision
from engines.errors import ConfigError, InputSpecError, ModelFileError

__all__ = [
    "MAX_BATCH_LIMIT",
    "BatchChunk",
    "BatchProfile",
    "ProfileShapes",
    "TrtBuildSettings",
    "fill_padded",
    "plan_chunks",
    "profile_shapes",
]

MAX_BATCH_LIMIT = 1024  # rows per engine call; the encoder's pinned input is 270 KB per row
_MIN_WORKSPACE_BYTES = 1 << 20
_MAX_WORKSPACE_BYTES = 1 << 40
_PRECISIONS: tuple[str, ...] = get_args(Precision)


def _require_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"tensorrt {name} must be an integer, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class BatchProfile:
    """The batch sizes one optimization profile covers: ``min_batch``..``max_batch`` rows per
    engine call, with kernels tuned for ``opt_batch`` rows."""

    min_batch: int
    opt_batch: int
    max_batch: int

    def __post_init__(self) -> None:
        for name in ("min_batch", "opt_batch", "max_batch"):
            _require_int(name, getattr(self, name))
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch <= MAX_BATCH_LIMIT:
            raise ConfigError(
                f"tensorrt batch sizes must satisfy 1 <= min_batch ({self.min_batch}) <= "
                f"opt_batch ({self.opt_batch}) <= max_batch ({self.max_batch}) <= "
                f"{MAX_BATCH_LIMIT}"
            )

    @property
    def buckets(self) -> tuple[int, ...]:
        """Row counts a chunk is padded to: min, opt, max and the powers of two between."""
        sizes = {self.min_batch, self.opt_batch, self.max_batch}
        power = 1
        while power < self.max_batch:
            if power > self.min_batch:
                sizes.add(power)
            power *= 2
        return tuple(sorted(sizes))

    def bucket_for(self, rows: int) -> int:
        """The smallest bucket that holds ``rows`` (1..max_batch) rows."""
        if not 1 <= rows <= self.max_batch:
            raise InputSpecError(f"a chunk of {rows} rows is outside 1..{self.max_batch}")
        return next(size for size in self.buckets if size >= rows)

    def to_build(self) -> dict[str, str]:
        """The profile as manifest ``build`` entries (strings)."""
        return {
            "min_batch": str(self.min_batch),
            "opt_batch": str(self.opt_batch),
            "max_batch": str(self.max_batch),
        }

    @classmethod
    def from_manifest(cls, manifest: ModelManifest, artifact: Path) -> BatchProfile:
        """Read the profile a plan was built with; ModelFileError names ``artifact`` if absent."""
        try:
            return cls(
                min_batch=int(manifest.build["min_batch"]),
                opt_batch=int(manifest.build["opt_batch"]),
                max_batch=int(manifest.build["max_batch"]),
            )
        except (KeyError, ValueError) as exc:  # ConfigError is a ValueError too
            raise ModelFileError(
                f"{artifact}: manifest has no valid batch profile "
                f"(min_batch/opt_batch/max_batch): {exc}"
            ) from exc


@dataclass(frozen=True, slots=True)
class TrtBuildSettings:
    """How to build a TensorRT plan.

    precision: fp32, fp16 or int8 (int8 needs a calibrator, and lets layers fall back to fp16);
    min/opt/max_batch: rows per engine call the plan accepts and is tuned for;
    workspace_bytes: GPU scratch memory TensorRT may use while choosing kernels, in bytes.
    """

    precision: Precision = "fp16"
    min_batch: int = 1
    opt_batch: int = 16
    max_batch: int = 64
    workspace_bytes: int = 1 << 30

    def __post_init__(self) -> None:
        if self.precision not in _PRECISIONS:
            raise ConfigError(
                f"tensorrt precision {self.precision!r}: expected one of {', '.join(_PRECISIONS)}"
            )
        _require_int("workspace_bytes", self.workspace_bytes)
        if not _MIN_WORKSPACE_BYTES <= self.workspace_bytes <= _MAX_WORKSPACE_BYTES:
            raise ConfigError(
                f"tensorrt workspace_bytes must be in {_MIN_WORKSPACE_BYTES}.."
                f"{_MAX_WORKSPACE_BYTES}, got {self.workspace_bytes}"
            )
        _ = self.batch_profile  # validates the batch sizes

    @property
    def batch_profile(self) -> BatchProfile:
        """The batch sizes as a ``BatchProfile``."""
        return BatchProfile(self.min_batch, self.opt_batch, self.max_batch)


@dataclass(frozen=True, slots=True)
class ProfileShapes:
    """min/opt/max shapes of one input in an optimization profile."""

    minimum: tuple[int, ...]
    optimum: tuple[int, ...]
    maximum: tuple[int, ...]


def profile_shapes(
    input_name: str, shape: Sequence[int], profile: BatchProfile
) -> ProfileShapes | None:
    """Profile shapes for a network input of ``shape`` (TensorRT's, ``-1`` = dynamic).

    Axis 0 is the batch axis and takes min/opt/max_batch; an input with no dynamic axis needs no
    profile (None). A dynamic axis other than 0 is a ModelFileError: only the batch may vary.
    """
    dims = tuple(int(dim) for dim in shape)
    dynamic = [axis for axis, dim in enumerate(dims) if dim < 0]
    if not dynamic:
        return None
    if dynamic != [0]:
        raise ModelFileError(
            f"input {input_name!r} has shape {dims}: only the batch axis (0) may be dynamic"
        )
    rest = dims[1:]
    return ProfileShapes(
        minimum=(profile.min_batch, *rest),
        optimum=(profile.opt_batch, *rest),
        maximum=(profile.max_batch, *rest),
    )


@dataclass(frozen=True, slots=True)
class BatchChunk:
    """Rows ``start``..``stop`` of a batch, run as one engine call padded to ``padded_rows``."""

    start: int
    stop: int
    padded_rows: int

    @property
    def rows(self) -> slice:
        """The chunk's rows in the whole batch."""
        return slice(self.start, self.stop)

    @property
    def row_count(self) -> int:
        """Real (unpadded) rows in the chunk."""
        return self.stop - self.start


def plan_chunks(total_rows: int, profile: BatchProfile) -> list[BatchChunk]:
    """Split ``total_rows`` into chunks of at most ``max_batch`` rows, each padded to a bucket.

    Full chunks of ``max_batch`` come first; the remainder is padded to the smallest bucket that
    holds it (at least ``min_batch``). Chunks cover every row exactly once, in order.
    """
    if total_rows < 0:
        raise InputSpecError(f"a batch cannot have {total_rows} rows")
    chunks = []
    for start in range(0, total_rows, profile.max_batch):
        stop = min(start + profile.max_batch, total_rows)
        chunks.append(BatchChunk(start, stop, profile.bucket_for(stop - start)))
    return chunks


def fill_padded(destination: npt.NDArray[Any], rows: npt.NDArray[Any]) -> None:
    """Copy ``rows`` into the first rows of ``destination`` and zero the rest (the padding).

    destination: (P, ...) with P >= len(rows) and the same trailing shape as ``rows``.
    """
    count = rows.shape[0]
    if destination.shape[1:] != rows.shape[1:] or destination.shape[0] < count:
        raise InputSpecError(f"cannot pad rows of shape {rows.shape} into {destination.shape}")
    destination[:count] = rows
    destination[count:] = 0
