"""Offline processing of a recording with the live pipeline's stages.

Every frame is decoded; faces are detected every ``detect_every_frames`` frames, linked into
tracks, encoded when a track is new or due (see ``pipeline.recognition.track``), and identified
against the
gallery. A track's identity is the gallery identity matched most often among its encodings
(ties: the smaller best distance); when no encoding matched within the threshold, the identity
the whole track names (``track_consensus``: its mean descriptor within tau of that identity,
which is also the nearest identity of most of its encodings, and no encoding within tau of
anyone else), or None.

Why the track's mean: an encoder's error on one frame (x264 blocks, blur, a half-turned head)
is partly independent from frame to frame, so the mean of a track's descriptors sits nearer
the person's own templates than most single frames do; measured on the shared videos streamed
over RTSP (docs/calibration.md, "A track speaks as one"). A stranger's mean is as far from a
template as the stranger is, so it needs the same tau, and the conditions on the frames keep
it from overruling what single frames say.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import time
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import numpy.typing as npt
from pydantic import Field

from pipeline.config.base import StrictModel
from pipeline.errors import RecordingError
from pipeline.recognition.analyzer import FaceAnalyzer
from pipeline.recognition.quality import encoding_rank, face_quality
from pipeline.recognition.track import (
    FaceTracker,
    KeptEncoding,
    Track,
    TrackConfig,
    face_qualities,
)
from pipeline.types import (
    Embeddings,
    FaceChips,
    Faces,
    Match,
    Matches,
    PendingFaces,
    TrackFaces,
    TrackResult,
)

if TYPE_CHECKING:
    from pipeline.gallery.store import Gallery

__all__ = [
    "MatchConfig",
    "ObservedFrame",
    "ProcessSummary",
    "RecognitionConfig",
    "RecordingProcessor",
    "StreamRecognizer",
    "identify_batch",
    "track_consensus",
    "track_result",
]

_log = logging.getLogger(__name__)
# a track's mean is made of its last encodings only: memory and query cost stay bounded on a
# face that stands in view for hours, and an old pose or light weighs nothing
_TRACK_MEAN_ENCODINGS = 32


class MatchConfig(StrictModel):
    """When an embedding counts as a gallery identity."""

    max_distance: float = Field(
        default=0.6,
        gt=0.0,
        le=2.0,
        description="Euclidean distance at or below which a face matches an identity; 0.6 is "
        "dlib's published operating point for this encoder (LFW); replace it with the value "
        "`facestream calibrate threshold` measures on your own data",
    )
    target_far: float = Field(
        default=1e-3,
        gt=0.0,
        lt=1.0,
        description="false accept rate `facestream calibrate threshold` picks tau for (0.001 = "
        "0.1 %); measuring it needs well over 1/target_far impostor pairs",
    )
    gallery_size: int | None = Field(
        default=None,
        ge=1,
        description="identities tau was chosen for (1:N: a stranger's chance of falling within "
        "tau of someone grows with the gallery); set by `calibrate threshold --gallery-size`. "
        "The service warns (log, /healthz, facestream_match_gallery_size) when the gallery "
        "outgrows it",
    )
    track_vote_min_encodings: int = Field(
        default=3,
        ge=0,
        le=1000,
        description="a track whose single encodings match nobody may still name an identity "
        "once it has this many encodings: its mean descriptor within max_distance of that "
        "identity, which is also the nearest identity of most of its encodings, and no "
        "encoding within max_distance of anyone else; 0 turns the track vote off",
    )


class RecognitionConfig(StrictModel):
    """Recognition of every camera and recording (``[recognition]``; ``[process]`` before):
    how often to detect, how tracks are followed and when a face matches."""

    detect_every_frames: int = Field(
        default=1, ge=1, le=1000, description="run the detector on every n-th decoded frame"
    )
    track: TrackConfig = TrackConfig()
    match: MatchConfig = MatchConfig()


@dataclass(frozen=True, slots=True)
class ProcessSummary:
    """The whole run: frames decoded, wall time (seconds) and its rate, and every track."""

    frames: int
    seconds: float
    tracks: tuple[TrackResult, ...]
    frame_seconds: tuple[float, ...] = ()  # per processed frame: decode done -> tracks updated

    @property
    def fps(self) -> float:
        """Frames processed per second of wall time, decoding included."""
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "frames": self.frames,
            "fps": round(self.fps, 2),
            "tracks": [track.as_dict() for track in self.tracks],
        }


def track_consensus(
    track: Track,
    gallery: Gallery,
    match: MatchConfig,
    galleries: Collection[str] | None = None,
) -> Match | None:
    """What the whole track says: the identity its mean descriptor names, or None, among the
    identities of the named ``galleries`` (None: every identity; the frames' own search).

    The mean of the track's last encodings (scaled to their mean length, as the encoder's
    descriptors are not unit vectors) names identity X when X is its nearest identity within
    tau (``match.max_distance``), X is also the nearest identity of a strict majority of the
    encodings, and no encoding matched anyone but X within tau. Needs at least
    ``match.track_vote_min_encodings`` encodings (0: never). The Match's distance is the mean's.
    """
    needed = match.track_vote_min_encodings
    if needed == 0 or len(track.embeddings) < needed:
        return None
    vectors = np.stack(track.embeddings).astype(np.float32)
    mean = vectors.mean(axis=0)
    length = float(np.linalg.norm(mean))
    if length == 0.0:
        return None
    mean *= float(np.linalg.norm(vectors, axis=1).mean()) / length
    probes = Embeddings(
        np.concatenate([mean[np.newaxis], vectors]).astype(np.float32), gallery.model_id
    )
    nearest = gallery.identify(probes, top_k=1, max_distance=None, galleries=galleries).best()
    named = nearest[0]
    if named is None or named.distance > gallery.threshold_for(
        named.identity_id, match.max_distance
    ):
        return None
    agreeing = sum(
        1 for frame in nearest[1:] if frame is not None and frame.identity_id == named.identity_id
    )
    if 2 * agreeing <= len(vectors):
        return None
    if any(vote is not None and vote.identity_id != named.identity_id for vote in track.matches):
        return None  # a single frame named someone else: the track does not overrule it
    return named


def track_result(track: Track) -> TrackResult:
    """The track's identity: the identity id with most encodings within tau (ties go to the
    nearest), so two enrolled people who share a name never pool their votes; with no
    encoding within tau, the identity the whole track names (``track.consensus``), if any."""
    voted = [
        (distance, match)
        for distance, match in zip(track.distances, track.matches, strict=True)
        if match is not None
    ]
    if not voted and track.consensus is not None:
        voted = [(track.consensus.distance, track.consensus)]
    if not voted:
        return TrackResult(
            track_id=track.track_id,
            identity=None,
            distance=min(track.distances) if track.distances else None,
            first_frame=track.first_frame,
            last_frame=track.last_frame,
            encodings=len(track.distances),
            faces=_kept_faces(track),
        )
    votes = Counter(match.identity_id for _, match in voted)
    top = max(votes.values())
    distance, winner = min(
        ((d, match) for d, match in voted if votes[match.identity_id] == top),
        key=lambda pair: pair[0],
    )
    return TrackResult(
        track_id=track.track_id,
        identity=winner.name,
        distance=distance,
        first_frame=track.first_frame,
        last_frame=track.last_frame,
        encodings=len(track.distances),
        identity_id=winner.identity_id,
    )


def _kept_faces(track: Track) -> TrackFaces | None:
    """An unknown track's best encodings (None when it was never encoded)."""
    if not track.kept or track.best_chip is None or track.model_id is None:
        return None
    return TrackFaces(
        embeddings=Embeddings(
            np.stack([kept.vector for kept in track.kept]).astype(np.float32), track.model_id
        ),
        qualities=tuple(kept.quality for kept in track.kept),
        chip=track.best_chip,
    )


@dataclass(frozen=True, slots=True)
class ObservedFrame:
    """What ``StreamRecognizer.observe`` learnt from one frame: the faces found and the track
    of each (``track_ids`` int (N,), row i of ``faces`` is track ``track_ids[i]``), the faces
    due for encoding, and the results of tracks that ended."""

    pending: PendingFaces
    ended: list[TrackResult]
    faces: Faces
    track_ids: tuple[int, ...]


class StreamRecognizer:
    """Recognition state of one stream: its tracker, fed one frame at a time, in order.

    ``step`` detects, tracks, encodes the tracks that are due and identifies them; it returns
    the tracks that ended (those with at least ``min_hits`` detections) as results. For
    batching across streams, ``observe`` does the per-stream half (detect, track, align) and
    ``record`` takes the identified matches back; ``identify_batch`` encodes once for many.
    galleries: the named galleries this stream searches (None: every identity).
    """

    def __init__(
        self,
        analyzer: FaceAnalyzer,
        gallery: Gallery,
        config: RecognitionConfig,
        galleries: frozenset[str] | None = None,
    ) -> None:
        self.analyzer = analyzer
        self.gallery = gallery
        self.config = config
        self.galleries = galleries
        self.tracker = FaceTracker(config.track)

    def step(self, frame_index: int, image_rgb: npt.NDArray[np.uint8]) -> list[TrackResult]:
        """Process one RGB uint8 frame; ``frame_index`` grows with each call."""
        observed = self.observe(frame_index, image_rgb)
        if observed.pending.track_ids:
            (matches,) = identify_batch(
                self.analyzer,
                self.gallery,
                [observed.pending],
                self.config.match,
                galleries=[self.galleries],
            )
            self.record(observed.pending, matches)
        return observed.ended

    def observe(self, frame_index: int, image_rgb: npt.NDArray[np.uint8]) -> ObservedFrame:
        """Detect and track faces in one frame; return the chips due for encoding and the
        results of tracks that ended."""
        faces = self.analyzer.detector.detect(image_rgb)
        update = self.tracker.update(frame_index, faces, face_qualities(faces))
        chosen = faces.select(list(update.encode))
        chips = self.analyzer.aligner.align(image_rgb, chosen)
        pending = PendingFaces(
            chips=chips,
            track_ids=tuple(int(update.track_ids[index]) for index in update.encode),
            qualities=face_quality(chosen, chips),  # measured once, where the chips are cut
        )
        return ObservedFrame(
            pending,
            self._results(update.ended),
            faces,
            tuple(int(track_id) for track_id in update.track_ids),
        )

    def record(self, pending: PendingFaces, matches: Matches) -> None:
        """Attach each pending face's gallery answer to its track: the match within tau (the
        track's vote; None for an unknown face), the distance to the nearest identity and,
        when ``matches`` carries the probes, the descriptor; then what the whole track says
        (``track_consensus``)."""
        live = {track.track_id: track for track in self.tracker.live_tracks}
        probes = matches.probes
        for row, (track_id, within, nearest) in enumerate(
            zip(pending.track_ids, matches.best(), matches.nearest_distances, strict=True)
        ):
            track = live.get(track_id)
            if track is None:
                continue
            if probes is not None and pending.qualities:  # kept even when the gallery is empty
                quality = pending.qualities[row]
                track.keep(
                    KeptEncoding(encoding_rank(quality), probes.vectors[row], quality),
                    pending.chips.chips[row],
                    probes.model_id,
                )
            if nearest is None:  # an empty gallery has nothing to say
                continue
            track.distances.append(nearest)
            track.matches.append(within)
            if probes is not None:
                track.embeddings.append(probes.vectors[row])
                del track.embeddings[:-_TRACK_MEAN_ENCODINGS]
                track.consensus = track_consensus(
                    track, self.gallery, self.config.match, self.galleries
                )

    def finish(self) -> list[TrackResult]:
        """End every live track (end of stream) and return their results."""
        return self._results(self.tracker.finish())

    def _results(self, tracks: tuple[Track, ...]) -> list[TrackResult]:
        # a track seen fewer than min_hits times is a detector flicker, not a person
        return [track_result(track) for track in tracks if track.hits >= self.config.track.min_hits]


def identify_batch(
    analyzer: FaceAnalyzer,
    gallery: Gallery,
    batches: Sequence[PendingFaces],
    match: MatchConfig,
    galleries: Sequence[frozenset[str] | None] | None = None,
) -> list[Matches]:
    """Encode the chips of several frames (streams) in one engine call and query the gallery
    once per distinct gallery set (``galleries[i]``: the named galleries batch i searches;
    None, or galleries None: every identity), with tau (``match.max_distance``): this is where
    tau is applied, once. Returns, per batch, the ``Matches`` of its faces.

    Why one query per set rather than one masked query: the rows of each set are a slice of
    the same embeddings, so the matrix products add up to the one of today, and the index
    already ranks the other galleries' identities out (``TemplateIndex.search``)."""
    sizes = [len(batch.chips) for batch in batches]
    if not sum(sizes):
        return [Matches((), (), gallery.model_id, gallery.version) for _ in batches]
    chips = FaceChips(np.concatenate([batch.chips.chips for batch in batches]))
    embeddings = analyzer.encoder.encode(chips)
    bounds = np.cumsum([0, *sizes])
    searched = list(galleries) if galleries is not None else [None] * len(batches)
    if len(searched) != len(batches):
        raise ValueError(f"{len(searched)} gallery sets for {len(batches)} batches")
    results = [Matches((), (), gallery.model_id, gallery.version) for _ in batches]
    for wanted in dict.fromkeys(searched):  # each distinct set once, in first-seen order
        members = [
            index for index, names in enumerate(searched) if names == wanted and sizes[index]
        ]
        if not members:
            continue
        if len(members) == len(batches):  # one set for every camera: the query of old
            probes = embeddings
        else:
            rows = np.concatenate([np.arange(bounds[i], bounds[i + 1]) for i in members])
            probes = Embeddings(np.ascontiguousarray(embeddings.vectors[rows]), embeddings.model_id)
        matches = dataclasses.replace(
            gallery.identify(probes, top_k=1, max_distance=match.max_distance, galleries=wanted),
            probes=probes,  # kept for each track's mean descriptor
        )
        starts = np.cumsum([0, *(sizes[i] for i in members)])
        for index, (start, stop) in zip(members, itertools.pairwise(starts), strict=True):
            results[index] = matches.rows(int(start), int(stop))
    return results


class RecordingProcessor:
    """Runs a video file through detect -> track -> align -> encode -> identify."""

    def __init__(self, analyzer: FaceAnalyzer, gallery: Gallery, config: RecognitionConfig) -> None:
        self.analyzer = analyzer
        self.gallery = gallery
        self.config = config

    def run(
        self,
        video: Path,
        on_track: Callable[[TrackResult], None] | None = None,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> ProcessSummary:
        """Process every frame of ``video``; ``on_track`` hears each track as it ends and
        ``on_progress`` (frames done, frames in the file or 0 if unknown) each frame."""
        capture = cv2.VideoCapture(str(video))
        if not capture.isOpened():
            raise RecordingError(f"{video}: cannot open the recording (missing, or not a video)")
        recognizer = StreamRecognizer(self.analyzer, self.gallery, self.config)
        total = max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0)
        results: list[TrackResult] = []

        def finish(ended: list[TrackResult]) -> None:
            results.extend(ended)
            if on_track is not None:
                for result in ended:
                    on_track(result)

        started = time.perf_counter()
        frames = 0
        frame_seconds: list[float] = []
        try:
            while True:
                ok, frame_bgr = capture.read()
                if not ok or frame_bgr is None:
                    break
                if frames % self.config.detect_every_frames == 0:
                    decoded = time.perf_counter()
                    image_rgb = np.ascontiguousarray(
                        cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB), dtype=np.uint8
                    )
                    finish(recognizer.step(frames, image_rgb))
                    frame_seconds.append(time.perf_counter() - decoded)
                frames += 1
                if on_progress is not None:
                    on_progress(frames, total)
        finally:
            capture.release()
        finish(recognizer.finish())
        if frames == 0:
            raise RecordingError(f"{video}: no frame could be decoded")
        results.sort(key=lambda result: result.track_id)
        return ProcessSummary(
            frames, time.perf_counter() - started, tuple(results), tuple(frame_seconds)
        )
