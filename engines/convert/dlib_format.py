"""Reader for dlib's binary serialization format (dlib/serialize.h, dlib/dnn/tensor.h).

Facts of the format this reader relies on:

* an integer is one control byte, whose low nibble is the number of value bytes and whose
  bit 7 marks a negative number, followed by that many little-endian magnitude bytes;
* a float is two integers, a mantissa and a base-2 exponent (value = mantissa * 2**exponent);
* a string is its length (an integer) followed by that many bytes;
* a ``bool`` inside a network record is one ASCII byte, ``'0'`` or ``'1'``;
* a tensor (version 2) is its shape (num_samples, k, nr, nc as integers) followed by the
  values as little-endian IEEE float32;
* an alias tensor (version 1) is a shape only: a view into a layer's parameter tensor.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from engines.errors import ModelFileError

__all__ = ["AliasShape", "DlibReader"]

_TENSOR_VERSION = 2
_ALIAS_TENSOR_VERSION = 1


@dataclass(frozen=True, slots=True)
class AliasShape:
    """Shape of a dlib ``alias_tensor``: (num_samples, k, nr, nc)."""

    num_samples: int
    k: int
    nr: int
    nc: int

    @property
    def size(self) -> int:
        """Number of values the alias covers."""
        return self.num_samples * self.k * self.nr * self.nc


class DlibReader:
    """Sequential reader over the bytes of one dlib-serialized file.

    Every read checks bounds; errors are ``ModelFileError`` naming the file and byte offset.
    """

    def __init__(self, data: bytes, *, source: Path | str) -> None:
        self._data = memoryview(data)
        self._offset = 0
        self.source = str(source)

    @property
    def offset(self) -> int:
        """Byte offset of the next read."""
        return self._offset

    @property
    def remaining(self) -> int:
        """Bytes left after the current offset."""
        return len(self._data) - self._offset

    def error(self, what: str) -> ModelFileError:
        """Build an error naming the file and the current offset."""
        return ModelFileError(f"{self.source}: at byte {self._offset}: {what}")

    def _take(self, count: int, what: str) -> memoryview:
        if count < 0 or self._offset + count > len(self._data):
            raise self.error(
                f"file ends while reading {what} ({count} bytes needed, "
                f"{self.remaining} left); the file is truncated"
            )
        chunk = self._data[self._offset : self._offset + count]
        self._offset += count
        return chunk

    def read_int(self, what: str = "an integer") -> int:
        """Read one integer (control byte + little-endian magnitude)."""
        control = self._take(1, what)[0]
        size = control & 0x0F
        if size > 8 or control & 0x70:
            raise self.error(f"invalid integer control byte 0x{control:02x} while reading {what}")
        magnitude = int.from_bytes(self._take(size, what), "little")
        return -magnitude if control & 0x80 else magnitude

    def read_float(self, what: str = "a float") -> float:
        """Read one float stored as (mantissa, exponent) integers."""
        mantissa = self.read_int(what)
        exponent = self.read_int(what)
        return float(np.ldexp(float(mantissa), exponent))

    def read_string(self, what: str = "a string", *, max_length: int = 256) -> str:
        """Read a length-prefixed ASCII string."""
        length = self.read_int(what)
        if not 0 <= length <= max_length:
            raise self.error(f"string length {length} out of range 0..{max_length} for {what}")
        raw = bytes(self._take(length, what))
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError as exc:
            raise self.error(f"{what} is not ASCII: {raw[:32]!r}") from exc

    def expect_string(self, expected: str) -> None:
        """Read a string and fail unless it equals ``expected`` (a layer or format tag)."""
        start = self._offset
        found = self.read_string(f"the tag {expected!r}")
        if found != expected:
            self._offset = start
            raise self.error(f"expected the record {expected!r}, found {found!r}")

    def peek_string(self) -> str | None:
        """Return the string at the current offset without consuming it, or None if none fits."""
        start = self._offset
        try:
            return self.read_string()
        except ModelFileError:
            return None
        finally:
            self._offset = start

    def read_bool_char(self, what: str = "a flag") -> bool:
        """Read one ``'0'``/``'1'`` flag byte."""
        byte = self._take(1, what)[0]
        if byte not in (0x30, 0x31):
            raise self.error(f"expected '0' or '1' for {what}, found 0x{byte:02x}")
        return byte == 0x31

    def read_tensor(self, what: str = "a tensor") -> npt.NDArray[np.float32]:
        """Read a version-2 tensor; returns float32 of shape (num_samples, k, nr, nc)."""
        version = self.read_int(what)
        if version != _TENSOR_VERSION:
            raise self.error(
                f"unsupported tensor version {version} for {what} "
                f"(this reader knows version {_TENSOR_VERSION})"
            )
        shape = tuple(self.read_int(what) for _ in range(4))
        if any(dim < 0 for dim in shape):
            raise self.error(f"negative tensor dimension {shape} for {what}")
        count = shape[0] * shape[1] * shape[2] * shape[3]
        raw = self._take(count * 4, what)
        values = np.frombuffer(raw, dtype="<f4").astype(np.float32)
        if not np.all(np.isfinite(values)):
            raise self.error(f"{what} holds NaN or infinite values")
        return values.reshape(shape)

    def read_alias(self, what: str = "an alias tensor") -> AliasShape:
        """Read a version-1 alias tensor (a shape into a parameter tensor)."""
        version = self.read_int(what)
        if version != _ALIAS_TENSOR_VERSION:
            raise self.error(f"unsupported alias_tensor version {version} for {what}")
        dims = [self.read_int(what) for _ in range(4)]
        if any(dim < 0 for dim in dims):
            raise self.error(f"negative alias dimension {dims} for {what}")
        return AliasShape(*dims)
