"""BlazeFace's network input and output: the letterbox a frame is fitted into, the SSD anchors,
the decoding of the raw outputs into boxes, keypoints and scores, and MediaPipe's weighted NMS
(``pipeline.recognition.detect.blazeface`` runs them around the network).

Anchors follow MediaPipe's ``SsdAnchorsCalculator`` with the options of its face detection
graphs (``mediapipe/modules/face_detection/face_detection_{short,full}_range.pbtxt`` and the
back-camera graph): ``fixed_anchor_size: true`` (every anchor is 1 x 1, so only centres matter),
``anchor_offset 0.5``, one aspect ratio 1.0, plus one interpolated anchor per layer when
``interpolated_scale_aspect_ratio`` is 1.0. Consecutive layers of equal stride share one feature
map, so the anchor count is ``sum(ceil(S / stride)^2 * anchors per cell)``: 16^2*2 + 8^2*6 = 896
for short range (S 128, strides 8,16,16,16) and back camera (S 256, strides 16,32,32,32), and
48^2 * 1 = 2304 for full range (S 192, stride 4). The detector checks this against the model's
output shape, so a wrong spec fails at start, not silently.

Decoding (``TensorsToDetectionsCalculator``, ``reverse_output_order: true``, all scales = S):
centre = anchor + raw[0:2] / S; size = raw[2:4] / S; keypoint k = anchor + raw[4+2k : 6+2k] / S,
in letterbox units [0, 1]. Keypoints: right eye, left eye, nose tip, mouth centre, right ear,
left ear (the subject's right and left).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from pipeline.recognition.track import box_iou

__all__ = [
    "ANCHOR_SPECS",
    "KEYPOINT_COUNT",
    "AnchorSpec",
    "Detections",
    "Letterbox",
    "decode_detections",
    "letterbox",
    "ssd_anchor_centres",
    "weighted_nms",
]

KEYPOINT_COUNT = 6
_SCORE_CLIP = 80.0  # MediaPipe clips logits at 100 before the sigmoid; exp(100) overflows float32


@dataclass(frozen=True, slots=True)
class AnchorSpec:
    """MediaPipe SSD anchor options of one BlazeFace model (fixed-size anchors).

    input_size_px: S, the square network input; strides_px: one per SSD layer;
    interpolated: whether each layer adds an anchor of interpolated scale (ratio 1.0).
    """

    input_size_px: int
    strides_px: tuple[int, ...]
    interpolated: bool

    @property
    def anchor_count(self) -> int:
        """Number of anchors the model outputs, one row each."""
        return int(ssd_anchor_centres(self).shape[0])


ANCHOR_SPECS: dict[str, AnchorSpec] = {
    "blazeface_short": AnchorSpec(128, (8, 16, 16, 16), interpolated=True),
    "blazeface_full": AnchorSpec(192, (4,), interpolated=False),
    "blazeface_back": AnchorSpec(256, (16, 32, 32, 32), interpolated=True),
}


def ssd_anchor_centres(spec: AnchorSpec) -> npt.NDArray[np.float32]:
    """Anchor centres, float32 (A, 2) x, y in [0, 1] of the network input, in output order."""
    per_cell = 2 if spec.interpolated else 1  # aspect ratio 1.0, plus the interpolated one
    centres: list[npt.NDArray[np.float32]] = []
    layer = 0
    while layer < len(spec.strides_px):
        stride = spec.strides_px[layer]
        repeats = 0
        while layer < len(spec.strides_px) and spec.strides_px[layer] == stride:
            repeats += per_cell  # layers of equal stride share one feature map
            layer += 1
        cells = math.ceil(spec.input_size_px / stride)
        grid = (np.arange(cells, dtype=np.float32) + 0.5) / cells
        rows, columns = np.meshgrid(grid, grid, indexing="ij")
        pairs = np.stack([columns.ravel(), rows.ravel()], axis=1)
        centres.append(np.repeat(pairs, repeats, axis=0))
    return np.concatenate(centres).astype(np.float32)


@dataclass(frozen=True, slots=True)
class Letterbox:
    """How a frame was fitted into the S x S network input.

    scale: network pixels per frame pixel; offset_x_px, offset_y_px: border before the image,
    network pixels; size_px: S.
    """

    scale: float
    offset_x_px: float
    offset_y_px: float
    size_px: int

    def to_frame(self, points: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Map x, y pairs (last axis, letterbox units [0, 1]) to frame pixels."""
        offset = np.array([self.offset_x_px, self.offset_y_px], np.float32)
        return ((points * self.size_px - offset) / self.scale).astype(np.float32)


def letterbox(
    image_rgb: npt.NDArray[np.uint8], size_px: int
) -> tuple[npt.NDArray[np.float32], Letterbox]:
    """Fit ``image_rgb`` (RGB uint8 HxWx3) into float32 (1, 3, S, S) in [-1, 1], aspect kept.

    The image is resized (area averaging when shrinking) and centred; borders are black (-1).
    """
    height, width = image_rgb.shape[:2]
    scale = size_px / max(height, width)
    new_width = max(1, round(width * scale))
    new_height = max(1, round(height * scale))
    interpolation = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    resized = cv2.resize(image_rgb, (new_width, new_height), interpolation=interpolation)
    left = (size_px - new_width) // 2
    top = (size_px - new_height) // 2
    tensor = np.full((1, 3, size_px, size_px), -1.0, dtype=np.float32)
    tensor[0, :, top : top + new_height, left : left + new_width] = (
        resized.transpose(2, 0, 1).astype(np.float32) * np.float32(1 / 127.5) - 1.0
    )
    # the scale actually applied on each axis differs from ``scale`` by rounding only
    return tensor, Letterbox(
        scale=new_width / width, offset_x_px=left, offset_y_px=top, size_px=size_px
    )


@dataclass(frozen=True, slots=True)
class Detections:
    """Raw detections of one image in letterbox units: boxes float32 (N, 4) xyxy,
    keypoints float32 (N, 6, 2), scores float32 (N,) probabilities."""

    boxes: npt.NDArray[np.float32]
    keypoints: npt.NDArray[np.float32]
    scores: npt.NDArray[np.float32]


def decode_detections(
    values: npt.NDArray[np.float32],
    logits: npt.NDArray[np.float32],
    anchors: npt.NDArray[np.float32],
    *,
    input_size_px: int,
    score_threshold: float,
) -> Detections:
    """Decode one image's outputs: values (A, 16) in network pixels, logits (A,) and anchor
    centres (A, 2) in [0, 1]. Only anchors whose probability exceeds ``score_threshold`` are
    decoded; the result is in letterbox units [0, 1].
    """
    scores = 1.0 / (1.0 + np.exp(-np.clip(logits, -_SCORE_CLIP, _SCORE_CLIP)))
    keep = scores > score_threshold
    rows = values[keep] / np.float32(input_size_px)
    centres = anchors[keep]
    centre = centres + rows[:, 0:2]
    half = rows[:, 2:4] / 2
    boxes = np.concatenate([centre - half, centre + half], axis=1)
    keypoints = rows[:, 4:].reshape(-1, KEYPOINT_COUNT, 2) + centres[:, None, :]
    return Detections(
        boxes.astype(np.float32), keypoints.astype(np.float32), scores[keep].astype(np.float32)
    )


def weighted_nms(detections: Detections, *, iou_threshold: float) -> Detections:
    """MediaPipe's weighted non-maximum suppression.

    Take the best remaining detection and every remaining one overlapping it by more than
    ``iou_threshold``; the merged box and keypoints are their score-weighted mean, the score
    is the best one's. Repeat until none remain. Returns detections best first.
    """
    order = np.argsort(-detections.scores, kind="stable")
    boxes, keypoints, scores = [], [], []
    while order.size:
        best = order[0]
        overlaps = box_iou(detections.boxes[best][None], detections.boxes[order])[0] > iou_threshold
        overlaps[0] = True
        members = order[overlaps]
        weights = detections.scores[members][:, None]
        total = float(weights.sum())
        boxes.append((detections.boxes[members] * weights).sum(axis=0) / total)
        keypoints.append((detections.keypoints[members] * weights[:, :, None]).sum(axis=0) / total)
        scores.append(detections.scores[best])
        order = order[~overlaps]
    if not scores:
        return Detections(
            np.zeros((0, 4), np.float32),
            np.zeros((0, KEYPOINT_COUNT, 2), np.float32),
            np.zeros((0,), np.float32),
        )
    return Detections(
        np.asarray(boxes, np.float32),
        np.asarray(keypoints, np.float32),
        np.asarray(scores, np.float32),
    )
