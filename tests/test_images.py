"""decode_image: every kind of bad or unusual upload gives RGB uint8 or a clear error."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from pipeline.errors import ImageDecodeError
from pipeline.images import decode_image


def _encode(image: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` (a decompression-bomb shape)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        body = kind + payload
        return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"this is plain text, not an image", "not a supported image"),
        (_png_header_only(7_000, 7_000), "49000000 pixels, more than the 40000000 allowed"),
        (_png_header_only(50_000, 50_000), "not a supported image"),  # Pillow's own bomb limit
    ],
)
def test_bad_uploads_are_clear_errors(data: bytes, message: str) -> None:
    """Empty data, non-images and bombs are refused before decoding, with the reason."""
    with pytest.raises(ImageDecodeError, match=message):
        decode_image(data, name="upload.bin")


def test_truncated_jpeg_is_refused() -> None:
    """A JPEG cut in half is reported as corrupt, never decoded into a half-grey face."""
    data = _encode(Image.new("RGB", (64, 64), (200, 30, 30)), "JPEG")
    with pytest.raises(ImageDecodeError, match="corrupt or truncated"):
        decode_image(data[: len(data) // 2])


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16", "RGB"])
def test_modes_become_rgb_uint8(mode: str) -> None:
    """Grayscale, RGBA, palette and 16-bit images all come out as RGB uint8 (H, W, 3)."""
    image = Image.new(mode, (40, 30))
    decoded = decode_image(_encode(image))
    assert decoded.shape == (30, 40, 3)
    assert decoded.dtype == np.uint8


def test_exif_orientation_is_applied() -> None:
    """A landscape image stored with EXIF orientation 6 (rotate 90) comes out portrait."""
    image = Image.new("RGB", (80, 40))
    exif = Image.Exif()
    exif[0x0112] = 6
    decoded = decode_image(_encode(image, "JPEG", exif=exif.tobytes()))
    assert decoded.shape[:2] == (80, 40)
