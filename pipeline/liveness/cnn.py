"""The anti-spoofing CNN cue: MiniFASNet crops of a face, scored through an ``Engine``.

The crops follow the authors' preprocessing (../shared/models/minifasnet/PROVENANCE.md): the
face box is enlarged by the input's scale around its centre (less when the image is too small
for it), shifted back inside the image rather than clipped, resized to 80x80, BGR, float 0..255,
channels first. The engine (``engines.models.antispoof.load_liveness_engine``) averages the two
models' softmax; class ``REAL_CLASS`` is a real face.
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from engines.base import Engine
from engines.models.antispoof import CROP_SIZE_PX, INPUT_SCALES, OUTPUT_NAME, REAL_CLASS

__all__ = ["cnn_crop", "cnn_live_probabilities"]


def cnn_crop(
    image_bgr: npt.NDArray[np.uint8], box: npt.NDArray[np.float32], scale: float
) -> npt.NDArray[np.float32]:
    """float32 (3, 80, 80) crop of ``box`` (x1 y1 x2 y2, frame pixels) enlarged ``scale`` times."""
    height, width = image_bgr.shape[:2]
    x1, y1, x2, y2 = (float(value) for value in box)
    box_width, box_height = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
    scale = min((height - 1) / box_height, (width - 1) / box_width, scale)
    crop_width, crop_height = box_width * scale, box_height * scale
    left = min(max((x1 + x2) / 2 - crop_width / 2, 0.0), width - crop_width)
    top = min(max((y1 + y2) / 2 - crop_height / 2, 0.0), height - crop_height)
    crop = image_bgr[int(top) : int(top + crop_height), int(left) : int(left + crop_width)]
    resized = cv2.resize(crop, (CROP_SIZE_PX, CROP_SIZE_PX), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(resized.transpose(2, 0, 1), dtype=np.float32)


def cnn_live_probabilities(
    engine: Engine, image_bgr: npt.NDArray[np.uint8], boxes: npt.NDArray[np.float32]
) -> npt.NDArray[np.float32]:
    """P(real face) of each box (float32 (N, 4) xyxy) in one engine call, float32 (N,)."""
    if not len(boxes):
        return np.zeros((0,), np.float32)
    batch = {
        name: np.stack([cnn_crop(image_bgr, box, scale) for box in boxes])
        for name, scale in INPUT_SCALES.items()
    }
    probabilities = engine.infer(batch)[OUTPUT_NAME]
    return np.ascontiguousarray(probabilities[:, REAL_CLASS], dtype=np.float32)
