"""Reading and decoding user images (uploads, enrolment photos, image files named on the
command line) safely into RGB uint8 arrays: the project's one image reader.

Everything a user may send is handled here, once: corrupt or empty files, non-images, huge
dimensions (decompression bombs: the pixel count is capped before decoding), grayscale, RGBA,
16-bit and palette images, and EXIF orientation.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps, UnidentifiedImageError

from pipeline.errors import ImageDecodeError

__all__ = ["MAX_IMAGE_PIXELS", "decode_image", "read_image", "read_image_bgr"]

MAX_IMAGE_PIXELS = 40_000_000  # 40 MP: larger images are refused before decoding


def decode_image(
    data: bytes, *, name: str = "image", max_pixels: int = MAX_IMAGE_PIXELS
) -> npt.NDArray[np.uint8]:
    """Decode image bytes into RGB uint8 (H, W, 3); ImageDecodeError says what is wrong."""
    if not data:
        raise ImageDecodeError(f"{name}: the file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise ImageDecodeError(
                        f"{name}: {width}x{height} is {width * height} pixels, more than the "
                        f"{max_pixels} allowed"
                    )
                image.load()
                upright = ImageOps.exif_transpose(image)
                if upright.mode in ("I;16", "I;16B", "I;16L", "I"):
                    # 16/32-bit grey: scale to 8 bits by the image's own range
                    grey = np.asarray(upright, dtype=np.float64)
                    top = max(float(grey.max()), 1.0)
                    rgb = np.repeat((grey / top * 255).astype(np.uint8)[..., None], 3, axis=2)
                    return np.ascontiguousarray(rgb)
                return np.asarray(upright.convert("RGB"), dtype=np.uint8)
    except ImageDecodeError:
        raise
    except (
        UnidentifiedImageError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as exc:
        raise ImageDecodeError(f"{name}: not a supported image ({exc})") from exc
    except (OSError, ValueError, SyntaxError) as exc:  # Pillow's errors for truncated files
        raise ImageDecodeError(f"{name}: the image is corrupt or truncated ({exc})") from exc


def read_image(path: Path, *, max_pixels: int = MAX_IMAGE_PIXELS) -> npt.NDArray[np.uint8]:
    """Read and decode the image file at ``path`` into RGB uint8 (H, W, 3); ImageDecodeError
    names the file when it cannot be read or decoded."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageDecodeError(f"{path}: cannot read: {exc.strerror}") from exc
    return decode_image(data, name=str(path), max_pixels=max_pixels)


def read_image_bgr(path: Path, *, max_pixels: int = MAX_IMAGE_PIXELS) -> npt.NDArray[np.uint8]:
    """``read_image`` in OpenCV's channel order: BGR uint8 (H, W, 3), contiguous."""
    return np.ascontiguousarray(read_image(path, max_pixels=max_pixels)[:, :, ::-1])
