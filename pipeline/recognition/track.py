"""Follow faces across frames so each person is encoded a few times, not on every frame.

A greedy IoU tracker: each new box joins the live track it overlaps most (IoU >= ``min_iou``);
unmatched boxes start tracks; a track that is not seen for ``max_missed_frames`` frames ends.
A track asks to be encoded when it appears, then every ``encode_every_frames`` frames, or sooner
when its face is clearly better (larger and sharper) than the one last encoded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from pydantic import Field

from pipeline.config.base import StrictModel
from pipeline.config.unknowns import MAX_ENCODINGS_PER_TRACK
from pipeline.types import Faces

if TYPE_CHECKING:
    from pipeline.types import Match, Quality

__all__ = [
    "FaceTracker",
    "KeptEncoding",
    "Track",
    "TrackConfig",
    "TrackUpdate",
    "box_iou",
    "face_qualities",
]


class TrackConfig(StrictModel):
    """How faces are linked across frames and how often a track is re-encoded."""

    min_iou: float = Field(default=0.3, gt=0.0, le=1.0, description="overlap to continue a track")
    max_missed_frames: int = Field(
        default=15, ge=0, le=10_000, description="frames a track survives unseen (occlusion)"
    )
    encode_every_frames: int = Field(
        default=10, ge=1, le=10_000, description="re-encode a track at most this often"
    )
    min_hits: int = Field(
        default=3, ge=1, le=10_000, description="detections a track needs to be reported"
    )
    quality_gain: float = Field(
        default=1.5,
        ge=1.0,
        le=100.0,
        description="re-encode early when quality grows by this factor",
    )


def box_iou(
    first: npt.NDArray[np.float32], second: npt.NDArray[np.float32]
) -> npt.NDArray[np.float32]:
    """Pairwise IoU of xyxy boxes: (N, 4) x (M, 4) -> float32 (N, M); 0 where the union is
    empty. The project's one IoU (the tracker's matching, BlazeFace's NMS and still search)."""
    top_left = np.maximum(first[:, None, :2], second[None, :, :2])
    bottom_right = np.minimum(first[:, None, 2:], second[None, :, 2:])
    intersection = np.prod(np.clip(bottom_right - top_left, 0, None), axis=2)
    area_first = np.prod(first[:, 2:] - first[:, :2], axis=1)
    area_second = np.prod(second[:, 2:] - second[:, :2], axis=1)
    union = area_first[:, None] + area_second[None, :] - intersection
    # exact where the union is positive (BlazeFace's boxes are in 0..1 units, where a floor
    # such as 1e-6 would bias tiny boxes), 0 for degenerate boxes
    ratio = intersection / np.where(union > 0, union, 1)
    iou: npt.NDArray[np.float32] = np.where(union > 0, ratio, 0).astype(np.float32)
    return iou


def face_qualities(faces: Faces) -> npt.NDArray[np.float32]:
    """How good each face is for encoding: box width (px) times frontalness (0..1), float32 (N,).

    Frontalness falls as the nose moves off the line between the eyes (a turned head); it needs
    the ``dlib5`` landmarks (points 0-1 and 2-3 are the corners of each eye, 4 the nose base).
    """
    if faces.landmark_scheme != "dlib5" or not len(faces):
        return faces.widths_px
    points = faces.landmarks
    first_eye = points[:, 0:2].mean(axis=1)
    second_eye = points[:, 2:4].mean(axis=1)
    eye_distance = np.maximum(np.linalg.norm(first_eye - second_eye, axis=1), 1.0)
    offset = np.abs(points[:, 4, 0] - (first_eye[:, 0] + second_eye[:, 0]) / 2)
    frontalness = np.clip(1.0 - offset / eye_distance, 0.0, 1.0)
    quality: npt.NDArray[np.float32] = (faces.widths_px * frontalness).astype(np.float32)
    return quality


@dataclass(frozen=True, slots=True)
class KeptEncoding:
    """One of a track's best encodings: its descriptor float32 (128,), its quality and rank
    (``pipeline.recognition.quality.encoding_rank``)."""

    rank: float
    vector: npt.NDArray[np.float32]
    quality: Quality


@dataclass(slots=True)
class Track:
    """One followed face. Mutable: the tracker owns it and updates it each frame."""

    track_id: int
    box: npt.NDArray[np.float32]
    first_frame: int
    last_frame: int
    last_encoded_frame: int = -1
    encoded_quality: float = 0.0
    hits: int = 1
    distances: list[float] = field(default_factory=list)
    # per encoding: the nearest identity when within tau, else None; a vote is by identity id
    matches: list[Match | None] = field(default_factory=list)
    # the last encodings' descriptors, float32 (128,) each: the track's mean is made of them
    embeddings: list[npt.NDArray[np.float32]] = field(default_factory=list)
    # what the whole track says (``offline.track_consensus``): the identity its mean descriptor
    # names, with the mean's distance; None until it names one
    consensus: Match | None = None
    # its best encodings, best first (at most MAX_ENCODINGS_PER_TRACK), the best one's aligned
    # chip (RGB 150x150) and the encoder's model id: what an unknown track leaves behind
    kept: list[KeptEncoding] = field(default_factory=list)
    best_chip: npt.NDArray[np.uint8] | None = None
    model_id: str | None = None

    def keep(self, encoding: KeptEncoding, chip: npt.NDArray[np.uint8], model_id: str) -> None:
        """Keep ``encoding`` if it is among the track's best (ties: the earlier stays ahead);
        ``chip`` is copied only when it becomes the best."""
        position = next(
            (index for index, kept in enumerate(self.kept) if encoding.rank > kept.rank),
            len(self.kept),
        )
        if position >= MAX_ENCODINGS_PER_TRACK:
            return
        self.kept.insert(position, encoding)
        del self.kept[MAX_ENCODINGS_PER_TRACK:]
        self.model_id = model_id
        if position == 0:
            self.best_chip = np.array(chip, dtype=np.uint8, copy=True)


@dataclass(frozen=True, slots=True)
class TrackUpdate:
    """What one frame did to the tracks.

    track_ids: int (N,) the track of each face in the frame's ``Faces``, in order;
    encode: indices into those faces that should be encoded now; ended: tracks that finished.
    """

    track_ids: npt.NDArray[np.int64]
    encode: tuple[int, ...]
    ended: tuple[Track, ...]


class FaceTracker:
    """IoU tracker for one camera; call ``update`` once per processed frame, in order."""

    def __init__(self, config: TrackConfig) -> None:
        self.config = config
        self._tracks: dict[int, Track] = {}
        self._next_id = 1

    @property
    def live_tracks(self) -> tuple[Track, ...]:
        """Tracks not yet ended."""
        return tuple(self._tracks.values())

    def update(
        self, frame_index: int, faces: Faces, qualities: npt.NDArray[np.float32]
    ) -> TrackUpdate:
        """Link ``faces`` (this frame's detections) to tracks; ``qualities`` is float32 (N,)."""
        live = list(self._tracks.values())
        assigned = np.full(len(faces), -1, dtype=np.int64)
        if live and len(faces):
            overlaps = box_iou(faces.boxes, np.stack([track.box for track in live]))
            for face_index, track_index in _greedy_pairs(overlaps, self.config.min_iou):
                track = live[track_index]
                track.box = faces.boxes[face_index].copy()
                track.last_frame = frame_index
                track.hits += 1
                assigned[face_index] = track.track_id
        for new_index in np.flatnonzero(assigned < 0).tolist():
            track = Track(self._next_id, faces.boxes[new_index].copy(), frame_index, frame_index)
            self._tracks[track.track_id] = track
            assigned[new_index] = track.track_id
            self._next_id += 1
        encode = []
        for face_index, track_id in enumerate(assigned):
            track = self._tracks[int(track_id)]
            quality = float(qualities[face_index])
            due = frame_index - track.last_encoded_frame >= self.config.encode_every_frames
            # strictly greater: with ``>=`` a face of quality 0 (a turned head) would count as
            # "better" than its own 0 and be encoded on every frame
            better = quality > track.encoded_quality * self.config.quality_gain
            if track.last_encoded_frame < 0 or due or better:
                track.last_encoded_frame = frame_index
                track.encoded_quality = quality
                encode.append(face_index)
        ended = tuple(
            track
            for track in self._tracks.values()
            if frame_index - track.last_frame > self.config.max_missed_frames
        )
        for track in ended:
            del self._tracks[track.track_id]
        return TrackUpdate(assigned, tuple(encode), ended)

    def finish(self) -> tuple[Track, ...]:
        """End every live track (end of stream)."""
        ended = tuple(self._tracks.values())
        self._tracks.clear()
        return ended


def _greedy_pairs(overlaps: npt.NDArray[np.float32], min_iou: float) -> list[tuple[int, int]]:
    """(row, column) pairs, highest IoU first, each row and column used once."""
    pairs = []
    used_rows: set[int] = set()
    used_columns: set[int] = set()
    for flat in np.argsort(-overlaps, axis=None, kind="stable"):
        row, column = divmod(int(flat), overlaps.shape[1])
        if overlaps[row, column] < min_iou:
            break
        if row not in used_rows and column not in used_columns:
            pairs.append((row, column))
            used_rows.add(row)
            used_columns.add(column)
    return pairs
