"""Unknown faces grouped by person, measured: purity and clusters per true person.

Labelled unknown tracks come from real faces through the service's own path: each labelled
photo (``faces/labels.csv``, one face) becomes a short video, a slow pan and zoom with sensor
noise (``photo_video``), and each video goes through detection, tracking, alignment, quality
and encoding with an empty gallery (``RecordingProcessor``), so every track it leaves is
unknown, with the best encodings the live service would keep. The tracks of the shared videos
(``video/faces``, unlabelled) are added too, as cameras of their own. All of them go through
``UnknownsStore.add`` (real Redis, the production clustering) in a fixed order; then, over the
labelled tracks:

* purity: the share of labelled tracks whose cluster's majority person is their own;
* clusters per person: how many clusters one person's tracks are split over (1 is ideal);
* merged persons: clusters holding the labelled tracks of more than one person.
"""

from __future__ import annotations

import csv
import logging
import tempfile
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import redis
from redis.cluster import RedisCluster

from calibration.errors import CalibrationDataError
from pipeline.config.service import FaceStreamConfig
from pipeline.gallery.store import Gallery
from pipeline.gallery.unknowns import UnknownsStore, usable_faces
from pipeline.images import decode_image
from pipeline.recognition.analyzer import FaceAnalyzer
from pipeline.recognition.offline import RecognitionConfig, RecordingProcessor
from pipeline.service.app import open_services
from pipeline.types import TrackFaces

__all__ = [
    "ClusteringFigures",
    "LabelledTrack",
    "UnknownsEvaluation",
    "cluster_figures",
    "evaluate_unknowns",
    "labelled_photos",
    "photo_tracks",
    "photo_video",
    "video_unknown_tracks",
]

_log = logging.getLogger(__name__)
_SIZE_PX = (640, 360)
_FPS = 25.0


@dataclass(frozen=True, slots=True)
class LabelledTrack:
    """An unknown track and where it came from: ``person`` (None: an unlabelled video) and the
    camera id it is added under."""

    faces: TrackFaces
    camera_id: str
    person: str | None


@dataclass(frozen=True, slots=True)
class ClusteringFigures:
    """What ``cluster_figures`` measured over the labelled tracks (see the module docstring)."""

    tracks: int
    persons: int
    clusters: int
    purity: float
    clusters_per_person: float
    split_persons: int
    merged_clusters: int
    unlabelled_tracks: int = 0
    unlabelled_clusters: int = 0
    unlabelled_with_labelled: int = 0  # unlabelled tracks whose cluster holds a labelled one
    # clusters holding unlabelled tracks of more than one camera (video): impure whenever the
    # videos share no person, as the shared ones do not
    unlabelled_across_videos: int = 0
    merged_persons: tuple[tuple[str, ...], ...] = ()  # the persons of each impure cluster

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form, rounded."""
        return {
            "tracks": self.tracks,
            "persons": self.persons,
            "clusters": self.clusters,
            "purity": round(self.purity, 4),
            "clusters_per_person": round(self.clusters_per_person, 3),
            "split_persons": self.split_persons,
            "merged_clusters": self.merged_clusters,
            "unlabelled_tracks": self.unlabelled_tracks,
            "unlabelled_clusters": self.unlabelled_clusters,
            "unlabelled_with_labelled": self.unlabelled_with_labelled,
            "unlabelled_across_videos": self.unlabelled_across_videos,
            "merged_persons": [list(persons) for persons in self.merged_persons],
        }


def photo_video(photo_rgb: npt.NDArray[np.uint8], path: Path, *, seconds: float, seed: int) -> None:
    """Write a 640x360, 25 fps MP4 at ``path``: a slow pan and zoom over ``photo_rgb`` (RGB
    uint8 HxWx3) with sensor noise, so its face moves, changes size and is re-detected frame
    after frame (as ``pipeline.service.sample`` does with the astronaut)."""
    photo_bgr = np.ascontiguousarray(photo_rgb[:, :, ::-1])
    scale = _SIZE_PX[1] / photo_bgr.shape[0]  # the photo's height fills the frame at zoom 1
    photo_bgr = np.asarray(
        cv2.resize(photo_bgr, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA), np.uint8
    )
    side = max(0, (round(photo_bgr.shape[0] * _SIZE_PX[0] / _SIZE_PX[1]) - photo_bgr.shape[1]))
    canvas = cv2.copyMakeBorder(photo_bgr, 0, 0, side // 2 + 32, side - side // 2 + 32, 0)
    partial = path.with_name(f".{path.stem}.tmp.mp4")
    writer = cv2.VideoWriter(str(partial), cv2.VideoWriter.fourcc(*"mp4v"), _FPS, _SIZE_PX)
    rng = np.random.default_rng(seed)
    frames = max(2, round(seconds * _FPS))
    try:
        for index in range(frames):
            phase = index / (frames - 1)
            zoom = 1.0 + 0.3 * np.sin(np.pi * phase)  # in, then out
            height = canvas.shape[0] / zoom
            width = min(canvas.shape[1], height * _SIZE_PX[0] / _SIZE_PX[1])
            left = (canvas.shape[1] - width) * (0.3 + 0.4 * phase)
            top = (canvas.shape[0] - height) * 0.5
            crop = canvas[int(top) : int(top + height), int(left) : int(left + width)]
            frame = cv2.resize(crop, _SIZE_PX, interpolation=cv2.INTER_AREA).astype(np.int16)
            frame += np.asarray(rng.normal(0.0, 3.0, size=frame.shape), dtype=np.int16)
            writer.write(np.clip(frame, 0, 255).astype(np.uint8))
    finally:
        writer.release()
    partial.replace(path)


def video_unknown_tracks(
    analyzer: FaceAnalyzer, gallery: Gallery, video: Path, config: RecognitionConfig
) -> list[TrackFaces]:
    """The best encodings of every track of ``video`` that ``gallery`` did not recognise, in
    the order the tracks started (the service's own detect, track, align and encode)."""
    summary = RecordingProcessor(analyzer, gallery, config).run(video)
    return [
        track.faces
        for track in summary.tracks
        if track.identity is None and track.faces is not None
    ]


def labelled_photos(faces_dir: Path) -> list[tuple[str, Path]]:
    """(person, photo) of every one-face, non-duplicate row of ``faces_dir/labels.csv``, by
    person (a person with one photo cannot be split, but can be wrongly merged)."""
    labels = faces_dir / "labels.csv"
    with labels.open(encoding="utf-8", newline="") as handle:
        rows = [
            (row["identity"], faces_dir / row["path"])
            for row in csv.DictReader(handle)
            if row["n_faces"] == "1" and not row["duplicate_of"]
        ]
    return sorted(rows)


def photo_tracks(
    analyzer: FaceAnalyzer,
    gallery: Gallery,
    photos: Sequence[tuple[str, Path]],
    work_dir: Path,
    config: RecognitionConfig,
) -> list[LabelledTrack]:
    """The unknown tracks of a pan-and-zoom video of each labelled photo (camera id: the
    photo's person and number); photos whose video yields no track are skipped (logged)."""
    tracks: list[LabelledTrack] = []
    for number, (person, path) in enumerate(photos):
        video = work_dir / f"photo-{number}.mp4"
        photo_video(
            decode_image(path.read_bytes(), name=str(path)), video, seconds=2.0, seed=number
        )
        found = video_unknown_tracks(analyzer, gallery, video, config)
        if not found:
            _log.info("%s: no face tracked in its video", path)
        # one face per photo (labels.csv): its first track is that person
        tracks.extend(LabelledTrack(faces, f"photo-{number}", person) for faces in found[:1])
    return tracks


def cluster_figures(store: UnknownsStore, tracks: Sequence[LabelledTrack]) -> ClusteringFigures:
    """Add every track to ``store`` in order, as the service does (only the encodings that pass
    the quality minimums; a track with none is left out), then measure the labelled ones'
    clusters."""
    cluster_of: list[str] = []
    tracks = [
        replace(track, faces=faces)
        for track in tracks
        if (faces := usable_faces(track.faces, store.config)) is not None
    ]
    for track in tracks:
        added = store.add(track.camera_id, track.faces)
        for gone in added.merged:  # a merge renames earlier tracks' cluster
            cluster_of = [added.cluster.cluster_id if c == gone else c for c in cluster_of]
        cluster_of.append(added.cluster.cluster_id)
    members: dict[str, Counter[str]] = defaultdict(Counter)
    clusters_of_person: dict[str, set[str]] = defaultdict(set)
    labelled = 0
    for track, cluster_id in zip(tracks, cluster_of, strict=True):
        if track.person is None:
            continue
        labelled += 1
        members[cluster_id][track.person] += 1
        clusters_of_person[track.person].add(cluster_id)
    majority = sum(counts.most_common(1)[0][1] for counts in members.values())
    persons = len(clusters_of_person)
    unlabelled = [
        cluster_id
        for track, cluster_id in zip(tracks, cluster_of, strict=True)
        if track.person is None
    ]
    videos_of: dict[str, set[str]] = defaultdict(set)
    for track, cluster_id in zip(tracks, cluster_of, strict=True):
        if track.person is None:
            videos_of[cluster_id].add(track.camera_id)
    return ClusteringFigures(
        tracks=labelled,
        persons=persons,
        clusters=len(members),
        purity=majority / labelled if labelled else 0.0,
        clusters_per_person=(
            sum(len(ids) for ids in clusters_of_person.values()) / persons if persons else 0.0
        ),
        split_persons=sum(1 for ids in clusters_of_person.values() if len(ids) > 1),
        merged_clusters=sum(1 for counts in members.values() if len(counts) > 1),
        unlabelled_tracks=len(unlabelled),
        unlabelled_clusters=len(set(unlabelled)),
        unlabelled_with_labelled=sum(1 for cluster_id in unlabelled if cluster_id in members),
        unlabelled_across_videos=sum(1 for videos in videos_of.values() if len(videos) > 1),
        merged_persons=tuple(
            sorted(tuple(sorted(counts)) for counts in members.values() if len(counts) > 1)
        ),
    )


@dataclass(frozen=True, slots=True)
class UnknownsEvaluation:
    """``evaluate_unknowns``'s answer: per cluster distance, the figures over the labelled
    photo tracks alone and with the shared videos' unknown tracks added first."""

    tau: float
    encodings_per_track: int
    photos: int
    video_tracks: int
    runs: tuple[tuple[float, ClusteringFigures, ClusteringFigures], ...]

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "name": "unknowns_clustering",
            "tau": round(self.tau, 4),
            "encodings_per_track": self.encodings_per_track,
            "photos": self.photos,
            "video_tracks": self.video_tracks,
            "runs": [
                {
                    "cluster_distance": round(distance, 4),
                    "photos_only": alone.as_dict(),
                    "with_videos": together.as_dict(),
                }
                for distance, alone, together in self.runs
            ],
        }


def evaluate_unknowns(
    config: FaceStreamConfig,
    faces_dir: Path,
    videos: Sequence[Path],
    distances: Sequence[float],
) -> UnknownsEvaluation:
    """Cluster the labelled photos' tracks (alone, then after the ``videos``' unknown tracks)
    at each cluster distance (none given: the service's tau), with the service's analyzer and
    clustering in an embedded Redis of its own (a temporary folder, deleted after)."""
    photos = labelled_photos(faces_dir)
    if not photos:
        raise CalibrationDataError(f"{faces_dir / 'labels.csv'}: no one-face photo listed")
    with tempfile.TemporaryDirectory(prefix="facestream-unknowns-") as work:
        work_dir = Path(work)
        with open_services(config, redis_dir=work_dir / "redis") as services:
            tau = services.config.recognition.match.max_distance
            recognition = services.config.recognition
            video_tracks = [
                LabelledTrack(faces, video.stem[:64], None)
                for video in videos
                for faces in video_unknown_tracks(
                    services.analyzer, services.gallery, video, recognition
                )
            ]
            labelled = photo_tracks(
                services.analyzer, services.gallery, photos, work_dir, recognition
            )
            unknowns = config.unknowns.model_copy(update={"enabled": True})
            runs = []
            for distance in distances or [tau]:
                store = UnknownsStore(
                    services.gallery,
                    services.redis,
                    unknowns,
                    cluster_distance=distance,
                    thumbnails_dir=work_dir / "thumbnails",
                )
                _forget_unknowns(services.redis, services.gallery.key_prefix)
                alone = cluster_figures(store, labelled)
                _forget_unknowns(services.redis, services.gallery.key_prefix)
                together = cluster_figures(store, [*video_tracks, *labelled])
                runs.append((distance, alone, together))
                _log.info("cluster distance %.3f: purity %.3f", distance, alone.purity)
    return UnknownsEvaluation(
        tau=tau,
        encodings_per_track=unknowns.encodings_per_track,
        photos=len(labelled),
        video_tracks=len(video_tracks),
        runs=tuple(runs),
    )


def _forget_unknowns(client: redis.Redis | RedisCluster, key_prefix: str) -> None:
    """Delete every unknowns key (a fresh clustering run)."""
    for key in list(client.scan_iter(match=f"{key_prefix}unknowns:*")):
        client.delete(key)
